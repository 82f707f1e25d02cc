/*
 * pipeline/_cstate.c: the per-process loop of the state records (pipeline/tree_state.py), in C.
 *
 * (Until session I it also held `touch`, the keys of the processes a record's events may change; the
 * forest now stamps those nodes itself while it applies the events: pipeline/_cforest.c, `stamp`.)
 * - `evidence_b64(evidence, since_ms, code_bits)`: a node's evidence records (ints `ms << code_bits |
 *   code`) as base64 of little-endian int64s, leaving out those stamped before `since_ms` when the
 *   oldest is (the rule of `tree_state._evidence_b64`). In Python that was an `array` built from a
 *   deque, a numpy filter and `binascii`: a third of the cost of encoding a process.
 *
 * It computes exactly what the Python code computes (tests/unit/test_tree_state_compiled.py holds
 * them equal, on the benchmark's forests and on hostile input); anything unexpected (an evidence record
 * that is not an int in int64's range) raises the error the Python code raises, so the caller's
 * behaviour does not depend on the build.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#define RINGFENCE_SLOTS_SMALL_LL_ONLY  /* only `small_ll` of the shared header: no slot cache here */
#include "_slots.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 (standard alphabet, padded, no newline) of `n` bytes, as a new str. */
static PyObject *base64(const unsigned char *in, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(4 * ((n + 2) / 3), 127);
    if (out == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = B64[v >> 18], *o++ = B64[(v >> 12) & 63], *o++ = B64[(v >> 6) & 63], *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *o++ = B64[v >> 18], *o++ = B64[(v >> 12) & 63], *o++ = '=', *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *o++ = B64[v >> 18], *o++ = B64[(v >> 12) & 63], *o++ = B64[(v >> 6) & 63], *o++ = '=';
    }
    return out;
}

/* evidence_b64(evidence: Iterable[int], since_ms: int, code_bits: int) -> str */
static PyObject *evidence_b64(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "evidence_b64(evidence, since_ms, code_bits)");
        return NULL;
    }
    int beyond = 0;  /* since_ms outside int64: every record is older (+1) or none is (-1) */
    long long since = PyLong_AsLongLongAndOverflow(args[1], &beyond);
    if (since == -1 && PyErr_Occurred()) return NULL;
    long bits = PyLong_AsLong(args[2]);
    if (bits == -1 && PyErr_Occurred()) return NULL;
    if (bits < 0 || bits > 62) {
        PyErr_SetString(PyExc_ValueError, "code_bits must be in [0, 62]");
        return NULL;
    }
    /* A snapshot (no Python code runs while we read it): a list or tuple as it is, anything else copied. */
    PyObject *records = PySequence_Fast(args[0], "evidence must be iterable");
    if (records == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(records);
    PyObject **items = PySequence_Fast_ITEMS(records);
    unsigned char *raw = PyMem_Malloc(n > 0 ? (size_t)n * 8 : 1);
    if (raw == NULL) {
        Py_DECREF(records);
        return PyErr_NoMemory();
    }
    Py_ssize_t kept = 0;
    int filter = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (!PyLong_Check(item)) {  /* as array("q", ...) refuses it */
            PyErr_Format(PyExc_TypeError, "an evidence record must be an int, not %.100s", Py_TYPE(item)->tp_name);
            goto fail;
        }
        long long v;
        if (!small_ll(item, &v) && (v = PyLong_AsLongLong(item)) == -1 && PyErr_Occurred())
            goto fail;  /* OverflowError, as array("q", ...) */
        int old = beyond ? beyond > 0 : (v >> bits) < since;
        if (i == 0) filter = old;  /* usually in time order: filter only when the oldest is old */
        if (filter && old) continue;
        uint64_t u = (uint64_t)v;
        for (int b = 0; b < 8; b++) raw[8 * kept + b] = (unsigned char)(u >> (8 * b));
        kept++;
    }
    Py_DECREF(records);
    PyObject *out = base64(raw, 8 * kept);
    PyMem_Free(raw);
    return out;
fail:
    Py_DECREF(records);
    PyMem_Free(raw);
    return NULL;
}

static PyMethodDef methods[] = {
    {"evidence_b64", (PyCFunction)(void (*)(void))evidence_b64, METH_FASTCALL,
     "evidence_b64(evidence, since_ms, code_bits) -> str: base64 of the records as little-endian int64."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pipeline._cstate",
                                    "State record loops in C (pipeline/_cstate.c, see pipeline.tree_state).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__cstate(void) {
    return PyModule_Create(&module);
}
