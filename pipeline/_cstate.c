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
 * - `row_json(fields, evidence, conns, notable, codes)`: a process's row of the record, the bytes orjson
 *   writes for `(*fields, evidence, tuple(conns), Fragment(notable), tuple(codes.items()))`, without the
 *   tuples built for it (session J: orjson and those tuples were ~5 of the ~11 us a row cost). It writes
 *   only what it writes exactly as orjson does (None, bools, ints in int64's range and str, their
 *   subclasses included, as orjson writes the value they hold; tuples and lists of those in `conns`; a
 *   dict of them in `codes`); for anything else it returns None and the caller asks
 *   orjson (which writes it, or raises its error), so the bytes and the errors do not depend on the build.
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

/* ---------------------------------------------------------------- row_json */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

/* Room for `more` bytes; -1 (MemoryError set) when there is none. */
static int reserve(Buf *b, Py_ssize_t more) {
    if (more <= b->cap - b->len) return 0;
    if (more > PY_SSIZE_T_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap * 2 > b->len + more ? b->cap * 2 : b->len + more + 256;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p, b->cap = cap;
    return 0;
}

static int put(Buf *b, const char *s, Py_ssize_t n) {
    if (reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int put_ll(Buf *b, long long v) {
    char digits[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[sizeof digits - 1 - n++] = '-';
    return put(b, digits + sizeof digits - n, n);
}

/* A JSON string as orjson writes it: UTF-8 as it is, `"` and `\` escaped, the control characters below
   0x20 as \b \t \n \f \r or \u00xx (lowercase hex), DEL and the rest as they are. 1 (nothing set):
   a str UTF-8 cannot hold (a lone surrogate), which orjson refuses with its own error. */
static int put_str(Buf *b, PyObject *s) {
    static const char HEX[] = "0123456789abcdef";
    PyObject *utf8 = NULL;
    const unsigned char *d;
    Py_ssize_t n;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) return -1;
#endif
    if (PyUnicode_IS_ASCII(s)) {
        d = PyUnicode_1BYTE_DATA(s), n = PyUnicode_GET_LENGTH(s);
    } else {
        utf8 = PyUnicode_AsUTF8String(s);  /* a temporary: the str keeps no UTF-8 copy of itself */
        if (utf8 == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
            PyErr_Clear();
            return 1;
        }
        d = (const unsigned char *)PyBytes_AS_STRING(utf8), n = PyBytes_GET_SIZE(utf8);
    }
    if (n > (PY_SSIZE_T_MAX - 2) / 6 || reserve(b, 2 + 6 * n) < 0) {
        Py_XDECREF(utf8);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    char *o = b->p + b->len;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = d[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\b': *o++ = 'b'; break;
            case '\t': *o++ = 't'; break;
            case '\n': *o++ = 'n'; break;
            case '\f': *o++ = 'f'; break;
            case '\r': *o++ = 'r'; break;
            default: *o++ = 'u', *o++ = '0', *o++ = '0', *o++ = HEX[c >> 4], *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    Py_XDECREF(utf8);
    return 0;
}

/* One value: 0 written, -1 error set, 1 not one this writer writes exactly as orjson (nothing set).
   `nested`: a tuple or list of scalars is allowed (a connection), not deeper. */
static int put_value(Buf *b, PyObject *v, int nested) {
    if (v == Py_None) return put(b, "null", 4);
    if (v == Py_True) return put(b, "true", 4);
    if (v == Py_False) return put(b, "false", 5);
    if (PyLong_Check(v)) {  /* a subclass too (the code counts' IntEnum keys): orjson writes its value */
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return 1;  /* orjson writes up to 2**64 - 1 and refuses the rest: it decides */
        if (x == -1 && PyErr_Occurred()) return -1;
        return put_ll(b, x);
    }
    if (PyUnicode_Check(v)) return put_str(b, v);  /* a subclass too: orjson writes the str it holds */
    if (nested && (PyTuple_CheckExact(v) || PyList_CheckExact(v))) {
        if (put(b, "[", 1) < 0) return -1;
        /* nothing below runs Python code, so a list cannot change while it is read */
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v); i++) {
            if (i && put(b, ",", 1) < 0) return -1;
            int rc = put_value(b, PySequence_Fast_GET_ITEM(v, i), 0);
            if (rc) return rc;
        }
        return put(b, "]", 1);
    }
    return 1;
}

static int put_conns(Buf *b, PyObject *conns) {
    PyObject *it = PyObject_GetIter(conns);
    if (it == NULL) return -1;
    int rc = put(b, "[", 1);
    PyObject *item;
    for (Py_ssize_t i = 0; rc == 0 && (item = PyIter_Next(it)) != NULL; i++) {
        rc = i ? put(b, ",", 1) : 0;
        rc = rc ? rc : put_value(b, item, 1);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred()) return -1;
    return rc ? rc : put(b, "]", 1);
}

static int put_codes(Buf *b, PyObject *codes) {
    Py_ssize_t pos = 0;
    PyObject *code, *count;
    int rc = put(b, "[", 1);
    for (int first = 1; rc == 0 && PyDict_Next(codes, &pos, &code, &count); first = 0) {  /* borrowed */
        rc = first ? put(b, "[", 1) : put(b, ",[", 2);
        rc = rc ? rc : put_value(b, code, 0);
        rc = rc ? rc : put(b, ",", 1);
        rc = rc ? rc : put_value(b, count, 0);
        rc = rc ? rc : put(b, "]", 1);
    }
    return rc ? rc : put(b, "]", 1);
}

/* row_json(fields: tuple, evidence: str, conns: Iterable, notable: bytes, codes: dict) -> bytes | None */
static PyObject *row_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyTuple_CheckExact(args[0]) || !PyUnicode_Check(args[1]) || !PyBytes_CheckExact(args[3]) ||
        !PyDict_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "row_json(fields: tuple, evidence: str, conns, notable: bytes, codes: dict)");
        return NULL;
    }
    PyObject *fields = args[0];
    Buf b = {NULL, 0, 0};
    int rc = reserve(&b, 512 + PyBytes_GET_SIZE(args[3]) + PyUnicode_GET_LENGTH(args[1]));
    rc = rc ? rc : put(&b, "[", 1);
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        rc = put_value(&b, PyTuple_GET_ITEM(fields, i), 0);
        rc = rc ? rc : put(&b, ",", 1);
    }
    rc = rc ? rc : put_str(&b, args[1]);
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put_conns(&b, args[2]);
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put(&b, PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]));
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put_codes(&b, args[4]);
    rc = rc ? rc : put(&b, "]", 1);
    PyObject *out = rc < 0 ? NULL : rc > 0 ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(b.p, b.len);
    PyMem_Free(b.p);
    return out;
}

static PyMethodDef methods[] = {
    {"evidence_tail", (PyCFunction)(void (*)(void))evidence_tail, METH_FASTCALL,
     "evidence_tail(evidence, n) -> bytes: the last n records as little-endian int64s, in order."},
    {"raw_b64", (PyCFunction)(void (*)(void))raw_b64, METH_FASTCALL,
     "raw_b64(raw, since_ms, code_bits) -> str: base64 of int64 records, the old ones left out when the oldest is."},
    {"row_json", (PyCFunction)(void (*)(void))row_json, METH_FASTCALL,
     "row_json(fields, evidence, conns, notable, codes) -> bytes | None: a process's row as orjson writes it, "
     "None when orjson must decide."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pipeline._cstate",
                                    "State record loops in C (pipeline/_cstate.c, see pipeline.tree_state).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__cstate(void) {
    return PyModule_Create(&module);
}
