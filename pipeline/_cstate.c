/*
 * pipeline/_cstate.c: a process's evidence in the state records (pipeline/tree_state.py), in C.
 *
 * - `evidence_tail(evidence, n)`: the last `n` evidence records (ints `ms << code_bits | code`) as
 *   little-endian int64 bytes, read from the deque's right end: a process encoded again packs only the
 *   records appended since its last encoding (`tree_state._evidence_raw` keeps the rest as bytes), so a
 *   busy process's up to 512 old records, each a separate int object, are not read again at every
 *   checkpoint.
 * - `raw_b64(raw, since_ms, code_bits)`: base64 of those bytes, leaving out the records stamped before
 *   `since_ms` when the oldest is (the rule of `tree_state._evidence_b64`: numpy and binascii in Python).
 *
 * (Until session I it held `evidence_b64`, which packed every record at every encoding, and `touch`, the
 * keys of the processes a record's events may change; the forest now stamps those nodes itself while it
 * applies the events: pipeline/_cforest.c, `stamp`.)
 *
 * Both compute exactly what the Python code computes (tests/unit/test_tree_state_compiled.py holds
 * them equal, on the benchmark's forests and on hostile input); anything unexpected (an evidence record
 * that is not an int in int64's range) raises the error the Python code raises, so the caller's
 * behaviour does not depend on the build.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
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

/* Little-endian int64 bytes of a record, as `tree_state._pack` packs it; -1 (an exception set) when the
   record is not an int in int64's range, as array("q", ...) refuses it. */
static int pack_record(PyObject *item, unsigned char *out) {
    if (!PyLong_Check(item)) {
        PyErr_Format(PyExc_TypeError, "an evidence record must be an int, not %.100s", Py_TYPE(item)->tp_name);
        return -1;
    }
    long long v;
    if (!small_ll(item, &v) && (v = PyLong_AsLongLong(item)) == -1 && PyErr_Occurred())
        return -1;
    uint64_t u = (uint64_t)v;
    for (int b = 0; b < 8; b++)
        out[b] = (unsigned char)(u >> (8 * b));
    return 0;
}

/* evidence_tail(evidence: Sequence[int], n: int) -> bytes: the last `n` records (all of them when `n` is
   not smaller) as little-endian int64s, in order: what `tree_state._pack` makes of them. A deque is read
   from its right end (its reversed iterator), so only the records packed are read, not the ones before. */
static PyObject *evidence_tail(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "evidence_tail(evidence, n)");
        return NULL;
    }
    Py_ssize_t want = PyLong_AsSsize_t(args[1]);
    if (want == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t held = PyObject_Length(args[0]);
    if (held < 0) return NULL;
    Py_ssize_t n = want < 0 ? 0 : want < held ? want : held;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (out == NULL || n == 0) return out;
    unsigned char *raw = (unsigned char *)PyBytes_AS_STRING(out);
    PyObject *it = PyObject_CallOneArg((PyObject *)&PyReversed_Type, args[0]);  /* reversed(evidence) */
    if (it == NULL) goto fail;
    Py_ssize_t i = n;
    while (i > 0) {
        PyObject *item = PyIter_Next(it);
        if (item == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "evidence shrank while it was read");
            break;
        }
        int rc = pack_record(item, raw + 8 * (i - 1));
        Py_DECREF(item);
        if (rc < 0) break;
        i--;
    }
    Py_DECREF(it);
    if (i == 0) return out;
fail:
    Py_XDECREF(out);
    return NULL;
}

/* raw_b64(raw: bytes, since_ms: int, code_bits: int) -> str: base64 of the little-endian int64 records in
   `raw`, leaving out those stamped before `since_ms` when the oldest is (`tree_state._evidence_b64`). */
static PyObject *raw_b64(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "raw_b64(raw: bytes, since_ms, code_bits)");
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
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]), n = size / 8;
    if (size % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "raw evidence must be whole int64 records");
        return NULL;
    }
    #define RECORD(i) ((long long)((uint64_t)in[8 * (i)] | (uint64_t)in[8 * (i) + 1] << 8 | \
        (uint64_t)in[8 * (i) + 2] << 16 | (uint64_t)in[8 * (i) + 3] << 24 | (uint64_t)in[8 * (i) + 4] << 32 | \
        (uint64_t)in[8 * (i) + 5] << 40 | (uint64_t)in[8 * (i) + 6] << 48 | (uint64_t)in[8 * (i) + 7] << 56))
    #define OLD(v) (beyond ? beyond > 0 : ((v) >> bits) < since)
    if (n == 0 || !OLD(RECORD(0)))  /* usually in time order: filter only when the oldest is old */
        return base64(in, size);
    unsigned char *kept = PyMem_Malloc((size_t)size);
    if (kept == NULL) return PyErr_NoMemory();
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!OLD(RECORD(i)))
            memcpy(kept + 8 * k++, in + 8 * i, 8);
    #undef OLD
    #undef RECORD
    PyObject *out = base64(kept, 8 * k);
    PyMem_Free(kept);
    return out;
}

static PyMethodDef methods[] = {
    {"evidence_tail", (PyCFunction)(void (*)(void))evidence_tail, METH_FASTCALL,
     "evidence_tail(evidence, n) -> bytes: the last n records as little-endian int64s, in order."},
    {"raw_b64", (PyCFunction)(void (*)(void))raw_b64, METH_FASTCALL,
     "raw_b64(raw, since_ms, code_bits) -> str: base64 of int64 records, the old ones left out when the oldest is."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pipeline._cstate",
                                    "State record loops in C (pipeline/_cstate.c, see pipeline.tree_state).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__cstate(void) {
    return PyModule_Create(&module);
}
