/*
 * pipeline/_cstate.c: a process's evidence in the state records (pipeline/tree_state.py), in C.
 *
 * - `evidence_tail(evidence, n)`: the last `n` evidence records (ints `ms << code_bits | code`) as
 *   little-endian int64 bytes. An evidence `Ring` (pipeline/_ring.h) is copied from its buffer. A deque is
 *   read from its right end: a process encoded again packs only the records appended since its last
 *   encoding (`tree_state._evidence_raw` keeps the rest as bytes), so a busy process's up to 512 old
 *   records, each a separate int object, are not read again at every checkpoint.
 * - `raw_b64(raw, since_ms, code_bits)`: base64 of those bytes, leaving out the records stamped before
 *   `since_ms` when the oldest is (the rule of `tree_state._evidence_b64`: numpy and binascii in Python).
 * - `row_json(fields, raw, since_ms, code_bits, conns, notable, codes)`: a process's row of the record, the
 *   bytes orjson writes for `(*fields, evidence, tuple(conns), Fragment(notable), tuple(codes.items()))`
 *   where `evidence` is `raw_b64(raw, since_ms, code_bits)`, written straight into the row, without the
 *   str and tuples built for it and in a buffer kept between calls (session J: orjson, those objects and
 *   the evidence str were ~6 of the ~12 us a row cost). It writes
 *   only what it writes exactly as orjson does (None, bools, ints in int64's range and str, their
 *   subclasses included, as orjson writes the value they hold; tuples and lists of those in `conns`; a
 *   dict of them in `codes`); for anything else it returns None and the caller asks
 *   orjson (which writes it, or raises its error), so the bytes and the errors do not depend on the build.
 *
 * - `encode_rows(nodes, previous, since_ms, code_bits, event_type, encode, row_type, epoch)`: the rows of a
 *   device's processes to encode (each from its previous row, or None), as the `tree_state._Row`s
 *   `_encode_row` makes: the node's slots read directly (`_slots.h`), its evidence packed (only the records
 *   new since its previous row), its connections filtered and its code counts summed here, its notable
 *   events' JSON reused when equal or encoded by `encode` in one call when all are exact `event_type`s, the
 *   row written as `row_json` writes it; the next nodes (and the objects their slots point to) are
 *   prefetched while one is written, since a cold forest's rows cost as much in cache misses as in work
 *   (session K). A node it would not write exactly as Python does comes back None and Python writes it.
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

#include "_slots.h"  /* `small_ll`, and the slot reads of `encode_rows` */
#include "_ring.h"   /* a `Ring` of evidence records, packed straight from its buffer */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 (standard alphabet, padded, no newline) of `n` bytes into `o` (B64_SIZE(n) bytes); the end. */
#define B64_SIZE(n) (4 * (((n) + 2) / 3))
static char *b64_into(char *o, const unsigned char *in, Py_ssize_t n) {
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
    return o;
}

/* Base64 of `n` bytes, as a new str. */
static PyObject *base64(const unsigned char *in, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(B64_SIZE(n), 127);
    if (out != NULL) b64_into((char *)PyUnicode_1BYTE_DATA(out), in, n);
    return out;
}

/* The rule of `tree_state._evidence_b64`, parsed from its arguments: records stamped before `since` are
   left out when the oldest is; `beyond`: since_ms is outside int64 (every record is older: +1, none: -1). */
typedef struct {
    long long since;
    int beyond;
    long bits;
} Since;

static int parse_since(PyObject *since_ms, PyObject *code_bits, Since *rule) {
    rule->beyond = 0;
    rule->since = PyLong_AsLongLongAndOverflow(since_ms, &rule->beyond);
    if (rule->since == -1 && PyErr_Occurred()) return -1;
    rule->bits = PyLong_AsLong(code_bits);
    if (rule->bits == -1 && PyErr_Occurred()) return -1;
    if (rule->bits < 0 || rule->bits > 62) {
        PyErr_SetString(PyExc_ValueError, "code_bits must be in [0, 62]");
        return -1;
    }
    return 0;
}

/* The records of `raw` the rule keeps, in order: `*kept` is `in` itself when none is left out (usually:
   records are in time order, so only when the oldest is old are they filtered), else a PyMem buffer the
   caller frees. -1 with an error set when `raw` is not whole int64 records or there is no memory. */
static int select_records(const unsigned char *in, Py_ssize_t size, const Since *rule,
                          const unsigned char **kept, Py_ssize_t *kept_size) {
    Py_ssize_t n = size / 8;
    if (size % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "raw evidence must be whole int64 records");
        return -1;
    }
    #define RECORD(i) ((long long)((uint64_t)in[8 * (i)] | (uint64_t)in[8 * (i) + 1] << 8 | \
        (uint64_t)in[8 * (i) + 2] << 16 | (uint64_t)in[8 * (i) + 3] << 24 | (uint64_t)in[8 * (i) + 4] << 32 | \
        (uint64_t)in[8 * (i) + 5] << 40 | (uint64_t)in[8 * (i) + 6] << 48 | (uint64_t)in[8 * (i) + 7] << 56))
    #define OLD(v) (rule->beyond ? rule->beyond > 0 : ((v) >> rule->bits) < rule->since)
    *kept = in, *kept_size = size;
    if (n == 0 || !OLD(RECORD(0)))
        return 0;
    unsigned char *out = PyMem_Malloc(size ? (size_t)size : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!OLD(RECORD(i)))
            memcpy(out + 8 * k++, in + 8 * i, 8);
    #undef OLD
    #undef RECORD
    *kept = out, *kept_size = 8 * k;
    return 0;
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
    put_le64(out, v);
    return 0;
}

/* The last `n` records of `evidence` (0 <= n <= its length `held`) packed into `raw + 8 * (n - 1)` back to
   `raw`, read from its right end (its reversed iterator), so only the records packed are read. -1 with an
   error set on a record that is not an int in int64's range, or when fewer than `n` come. */
static int pack_tail_into(PyObject *evidence, Py_ssize_t n, unsigned char *raw) {
    if (n == 0) return 0;
    if (is_ring(evidence)) {  /* its records are int64s already: copied, none read as an object */
        const RingObject *r = (const RingObject *)evidence;
        if (n > r->len) {
            PyErr_SetString(PyExc_RuntimeError, "evidence shrank while it was read");
            return -1;
        }
        ring_pack(r, r->len - n, raw);
        return 0;
    }
    PyObject *it = PyObject_CallOneArg((PyObject *)&PyReversed_Type, evidence);  /* reversed(evidence) */
    if (it == NULL) return -1;
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
    return i == 0 ? 0 : -1;
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
    if (out != NULL && pack_tail_into(args[0], n, (unsigned char *)PyBytes_AS_STRING(out)) < 0) Py_CLEAR(out);
    return out;
}

/* raw_b64(raw: bytes, since_ms: int, code_bits: int) -> str: base64 of the little-endian int64 records in
   `raw`, leaving out those stamped before `since_ms` when the oldest is (`tree_state._evidence_b64`). */
static PyObject *raw_b64(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "raw_b64(raw: bytes, since_ms, code_bits)");
        return NULL;
    }
    Since rule;
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(args[0]), *kept;
    Py_ssize_t size;
    if (parse_since(args[1], args[2], &rule) < 0 || select_records(in, PyBytes_GET_SIZE(args[0]), &rule, &kept, &size) < 0)
        return NULL;
    PyObject *out = base64(kept, size);
    if (kept != in) PyMem_Free((void *)kept);
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

/* The evidence as `raw_b64` writes it, as a JSON string (base64 needs no escapes). */
static int put_evidence(Buf *b, const unsigned char *in, Py_ssize_t size, const Since *rule) {
    const unsigned char *kept;
    Py_ssize_t n;
    if (select_records(in, size, rule, &kept, &n) < 0) return -1;
    int rc = n > PY_SSIZE_T_MAX / 2 ? (PyErr_NoMemory(), -1) : reserve(b, B64_SIZE(n) + 2);
    if (rc == 0) {
        char *o = b->p + b->len;
        *o++ = '"';
        o = b64_into(o, kept, n);
        *o++ = '"';
        b->len = o - b->p;
    }
    if (kept != in) PyMem_Free((void *)kept);
    return rc;
}

/* The buffer rows are written in, kept between calls (no allocation per row); a call made while it is in
   use (an iterator of connections may run Python code that calls row_json) writes in a buffer of its own. */
static Buf scratch = {NULL, 0, 0};
static int scratch_taken = 0;
#define SCRATCH_KEPT (1 << 20)  /* a larger buffer (a huge row) is freed after its call */

/* The end of a call that wrote into `b`: a buffer of its own is freed; the shared scratch buffer is
   kept for the next call (unless it grew past SCRATCH_KEPT) and released for use. Returns `out`. */
static PyObject *give_back(Buf b, int shared, PyObject *out) {
    if (!shared) {
        PyMem_Free(b.p);
        return out;
    }
    if (b.cap > SCRATCH_KEPT) {
        PyMem_Free(b.p);
        b.p = NULL, b.cap = 0;
    }
    scratch = b;
    scratch_taken = 0;
    return out;
}

/* row_json(fields: tuple, raw: bytes, since_ms: int, code_bits: int, conns: Iterable, notable: bytes,
   codes: dict) -> bytes | None: see the top of this file; the evidence is `raw_b64(raw, since_ms, code_bits)`. */
static PyObject *row_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7 || !PyTuple_CheckExact(args[0]) || !PyBytes_Check(args[1]) || !PyBytes_CheckExact(args[5]) ||
        !PyDict_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "row_json(fields: tuple, raw: bytes, since_ms, code_bits, conns, notable: bytes, codes: dict)");
        return NULL;
    }
    Since rule;
    if (parse_since(args[2], args[3], &rule) < 0) return NULL;
    PyObject *fields = args[0], *notable = args[5];
    const int shared = !scratch_taken;
    Buf b = shared ? scratch : (Buf){NULL, 0, 0};
    scratch_taken = 1;
    b.len = 0;
    int rc = put(&b, "[", 1);
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        rc = put_value(&b, PyTuple_GET_ITEM(fields, i), 0);
        rc = rc ? rc : put(&b, ",", 1);
    }
    rc = rc ? rc : put_evidence(&b, (const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), &rule);
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put_conns(&b, args[4]);
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put(&b, PyBytes_AS_STRING(notable), PyBytes_GET_SIZE(notable));
    rc = rc ? rc : put(&b, ",", 1);
    rc = rc ? rc : put_codes(&b, args[6]);
    rc = rc ? rc : put(&b, "]", 1);
    PyObject *out = rc < 0 ? NULL : rc > 0 ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(b.p, b.len);
    return give_back(b, shared, out);
}


/* ---------------------------------------------------------------- encode_rows */

/* The node's slots `encode_rows` reads, in `tree_state._FIELDS` order, then its containers. */
static const char *const FIELD_NAMES[] = {
    "key", "image", "command_line", "sha256", "user", "integrity_level", "uid", "pid", "parent_key", "start_ms",
    "end_ms", "last_ms", "started", "cmd_mask", "script_mask", "signer", "signed", "alert_mark"};
#define N_FIELDS ((Py_ssize_t)(sizeof FIELD_NAMES / sizeof FIELD_NAMES[0]))
enum { EVIDENCE, CONNS, NOTABLE, CODES, N_TAILS };
static const char *const TAIL_NAMES[N_TAILS] = {"evidence", "conns", "notable", "code_counts"};
static PyObject *field_names[N_FIELDS], *tail_names[N_TAILS];  /* interned at import */
/* The slots of `tree_state._Row`, in its order: what `encode_rows` fills in the rows it makes. */
static const char *const ROW_NAMES[] = {
    "node", "mark", "epoch", "data", "notable", "notable_json", "evidence", "appended", "source"};
#define N_ROW ((int)(sizeof ROW_NAMES / sizeof ROW_NAMES[0]))
static PyObject *row_names[N_ROW];
static PyTypeObject *deque_type;  /* collections.deque, looked up at import */

/* Prefetching, three nodes deep: a cold forest's row costs as much in cache misses as in work, and each
   stage reads only what the stage before fetched. A hint: a prefetch never faults, and nothing here is
   dereferenced beyond the fields of objects the nodes hold (their slots at their member descriptors'
   offsets, a str's and a dict's public headers). */

/* Stage 1: the node's own cache lines (its slots). */
static void prefetch_object(PyObject *obj) {
    Py_ssize_t size = Py_TYPE(obj)->tp_basicsize;
    for (Py_ssize_t at = 0; at < size; at += 64)
        __builtin_prefetch((char *)obj + at);
}

/* The value in the node's slot `name` (borrowed, NULL when it has no such plain slot or it is unset). */
static PyObject *slot_value(PyObject *node, PyObject *name) {
    SlotCache c = slot_of(Py_TYPE(node), name);
    return c.offset < 0 ? NULL : *(PyObject **)((char *)node + c.offset);
}

/* Stage 2: the heads of the objects its slots point to (strings, containers). */
static void prefetch_slots(PyObject *node) {
    for (Py_ssize_t i = 0; i < N_FIELDS + N_TAILS; i++) {
        PyObject *value = slot_value(node, i < N_FIELDS ? field_names[i] : tail_names[i - N_FIELDS]);
        if (value != NULL) __builtin_prefetch(value);
    }
}

/* Stage 3: the text of its strings (up to 1 KB each) and its code counts' table. (Its deques' items
   would need the deque's private layout: tried in session K, no gain measurable on this host.) */
static void prefetch_contents(PyObject *node) {
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) {
        PyObject *value = slot_value(node, field_names[i]);
        if (value == NULL || !PyUnicode_CheckExact(value) || !PyUnicode_IS_COMPACT_ASCII(value)) continue;
        Py_ssize_t size = PyUnicode_GET_LENGTH(value);
        const char *text = (const char *)PyUnicode_1BYTE_DATA(value);
        for (Py_ssize_t at = 64; at < size && at < 1024; at += 64)  /* its first line came with its head */
            __builtin_prefetch(text + at);
    }
    PyObject *codes = slot_value(node, tail_names[CODES]);
    if (codes != NULL && PyDict_CheckExact(codes)) {
        const char *keys = (const char *)((PyDictObject *)codes)->ma_keys;
        for (int at = 0; at < 256; at += 64)
            __builtin_prefetch(keys + at);
    }
}

/* The records of an evidence ring (its buffer copied) or of an exact deque of ints, all of them, as
   little-endian int64 bytes (`tree_state._pack`); NULL with nothing set when a record is not an int in
   int64's range (Python then raises its error). */
static PyObject *pack_all(PyObject *evidence) {
    Py_ssize_t n = PyObject_Length(evidence);
    if (n < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (out == NULL) return NULL;
    if (is_ring(evidence)) {
        ring_pack((const RingObject *)evidence, 0, (unsigned char *)PyBytes_AS_STRING(out));
        return out;
    }
    PyObject *it = PyObject_GetIter(evidence), *item;
    if (it == NULL) goto fail;
    Py_ssize_t i = 0;
    for (; i < n && (item = PyIter_Next(it)) != NULL; i++) {
        int rc = pack_record(item, (unsigned char *)PyBytes_AS_STRING(out) + 8 * i);
        Py_DECREF(item);
        if (rc < 0) break;
    }
    Py_DECREF(it);
    if (i == n && !PyErr_Occurred()) return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* The connections `tree_state._encode_row` keeps (all, or those stamped at `since` or later when the oldest
   is older), written as orjson writes them. 1: not exact tuples starting with an int in int64's range. */
static int put_kept_conns(Buf *b, PyObject *conns, const Since *rule) {
    PyObject *items = PySequence_List(conns);  /* an exact deque: no Python code runs */
    if (items == NULL) return -1;
    int filter = 0, rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        PyObject *c = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(c) || PyTuple_GET_SIZE(c) == 0 || !PyLong_CheckExact(PyTuple_GET_ITEM(c, 0))) {
            rc = 1;
            break;
        }
        int overflow = 0;
        long long t = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(c, 0), &overflow);
        if (overflow) rc = 1;
        else if (i == 0) filter = rule->beyond ? rule->beyond > 0 : t < rule->since;
    }
    rc = rc ? rc : put(b, "[", 1);
    for (Py_ssize_t i = 0, first = 1; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        PyObject *c = PyList_GET_ITEM(items, i);
        if (filter && (rule->beyond ? rule->beyond > 0 : PyLong_AsLongLong(PyTuple_GET_ITEM(c, 0)) < rule->since))
            continue;
        rc = first ? 0 : put(b, ",", 1);
        rc = rc ? rc : put_value(b, c, 1);
        first = 0;
    }
    Py_DECREF(items);
    return rc ? rc : put(b, "]", 1);
}

/* The sum of a dict's values (each an exact int), into `*total`; 1 when one is not or it overflows. */
static int sum_counts(PyObject *codes, long long *total) {
    Py_ssize_t pos = 0;
    PyObject *code, *count;
    *total = 0;
    while (PyDict_Next(codes, &pos, &code, &count)) {
        long long v;
        int overflow = 0;
        if (!PyLong_CheckExact(count)) return 1;
        if (!small_ll(count, &v) && ((v = PyLong_AsLongLongAndOverflow(count, &overflow)), overflow)) return 1;
        if (__builtin_add_overflow(*total, v, total)) return 1;
    }
    return 0;
}

/* 0 when `tp` is a plain class (object's direct subclass, no items) with a writable slot for each of
   ROW_NAMES: the only kind whose instances `make_row` fills slot by slot without its __init__. */
static int check_row_type(PyTypeObject *tp) {
    int ok = tp->tp_base == &PyBaseObject_Type && tp->tp_itemsize == 0 && tp->tp_alloc != NULL;
    for (int i = 0; ok && i < N_ROW; i++) {
        SlotCache c = slot_of(tp, row_names[i]);
        ok = c.offset >= 0 && c.writable;
    }
    if (ok) return 0;
    PyErr_SetString(PyExc_TypeError, "row_type must be a class with a writable slot for each of _Row's fields");
    return -1;
}

/* A new `row_type` (checked by `check_row_type`) with its slots set to `values`, in ROW_NAMES order, which
   the collector does not track: a row made here refers to a node, its evidence ring or deque (of ints),
   bytes, ints and a tuple of gc=False events, none of which can refer back to a row, so it can be in no cycle; tracked,
   a checkpoint's ~10,000 new rows were visited by every young collection while it ran (session K: -8 % of
   the encoding with the worker's collector settings). */
static PyObject *make_row(PyTypeObject *row_type, PyObject *const *values) {
    PyObject *row = row_type->tp_alloc(row_type, 0);
    for (int i = 0; row != NULL && i < N_ROW; i++)
        if (set_attr(row, row_names[i], values[i]) < 0) Py_CLEAR(row);
    if (row != NULL && PyObject_GC_IsTracked(row)) PyObject_GC_UnTrack(row);
    return row;
}

/* The notable events' tuple holds only objects the collector does not track (msgspec structs made with
   gc=False): it can be in no cycle, so it need not be tracked either (the collector would untrack it at
   its next pass, after visiting it). */
static void untrack_if_atomic(PyObject *tuple) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++)
        if (PyObject_IS_GC(PyTuple_GET_ITEM(tuple, i))) return;
    if (PyObject_GC_IsTracked(tuple)) PyObject_GC_UnTrack(tuple);
}

/* What `new_row` reuses of a node's previous row (`tree_state._Row`): NULL members when there is none. */
typedef struct {
    PyObject *notable, *notable_json, *evidence, *source;  /* held: code run meanwhile may replace the row's */
    long long appended;
} Previous;

/* The previous row's parts, or 1 (nothing set) when a part is not of the type `_encode_row` gave it (the
   node is then left to Python). */
static int read_previous(PyObject *row, PyTypeObject *row_type, Previous *prev) {
    *prev = (Previous){NULL, NULL, NULL, NULL, 0};
    if (row == Py_None) return 0;
    if (!Py_IS_TYPE(row, row_type)) return 1;
    PyObject *parts[4];
    static const int at[4] = {4, 5, 6, 8};  /* notable, notable_json, evidence, source in ROW_NAMES */
    for (int i = 0; i < 4; i++) {
        SlotCache c = slot_of(row_type, row_names[at[i]]);
        parts[i] = c.offset < 0 ? NULL : *(PyObject **)((char *)row + c.offset);
        if (parts[i] == NULL) return 1;
    }
    SlotCache c = slot_of(row_type, row_names[7]);  /* appended */
    PyObject *appended = c.offset < 0 ? NULL : *(PyObject **)((char *)row + c.offset);
    int overflow = 0;
    if (appended == NULL || !PyLong_CheckExact(appended) || !PyTuple_CheckExact(parts[0]) ||
        !PyBytes_CheckExact(parts[1]) || !PyBytes_CheckExact(parts[2]))
        return 1;
    prev->appended = PyLong_AsLongLongAndOverflow(appended, &overflow);
    if (overflow) return 1;
    prev->notable = Py_NewRef(parts[0]), prev->notable_json = Py_NewRef(parts[1]);
    prev->evidence = Py_NewRef(parts[2]), prev->source = Py_NewRef(parts[3]);
    return 0;
}

/* 1 when the previous row's notable events equal these (`previous.notable == notable` in
   `_encode_row`), compared only when both are exact `event_type`s (their == runs no Python code); a
   previous tuple of anything else is taken as different, as Python's == takes it. -1 on an error. */
static int same_notable(const Previous *prev, PyObject *notable, PyTypeObject *event_type) {
    if (prev->notable == NULL || PyTuple_GET_SIZE(prev->notable) != PyTuple_GET_SIZE(notable)) return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(notable); i++)
        if (!Py_IS_TYPE(PyTuple_GET_ITEM(prev->notable, i), event_type)) return 0;
    return PyObject_RichCompareBool(prev->notable, notable, Py_EQ);
}

/* The node's evidence as int64 bytes, as `tree_state._evidence_raw` makes it: the previous row's records
   still held plus the ones appended since, packed from the deque's right end, when the previous row read
   this same deque and the counts agree; else every record (always, for a `Ring`: its buffer is copied).
   NULL with nothing set when a record is not an int in int64's range (Python raises its error). */
static PyObject *evidence_raw(PyObject *evidence, long long appended, const Previous *prev) {
    if (is_ring(evidence)) return pack_all(evidence);  /* a copy of its buffer: nothing to save by reusing */
    Py_ssize_t held = PyObject_Length(evidence);
    if (held < 0) return NULL;
    long long fresh;
    if (prev->evidence == NULL || prev->source != evidence || __builtin_sub_overflow(appended, prev->appended, &fresh) ||
        fresh < 0 || fresh >= held || PyBytes_GET_SIZE(prev->evidence) < 8 * (held - fresh))
        return pack_all(evidence);
    Py_ssize_t keep = 8 * (held - (Py_ssize_t)fresh), had = PyBytes_GET_SIZE(prev->evidence);
    PyObject *out = PyBytes_FromStringAndSize(NULL, keep + 8 * (Py_ssize_t)fresh);
    if (out == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(prev->evidence) + had - keep, (size_t)keep);
    if (pack_tail_into(evidence, (Py_ssize_t)fresh, (unsigned char *)PyBytes_AS_STRING(out) + keep) < 0) Py_CLEAR(out);
    return out;
}

/* One node's row: a `row_type` holding what `tree_state._encode_row(node, since_ms, previous, epoch)` puts in
   a `_Row` (`previous`: its last row or None), or None (nothing set) for a node it leaves to Python. */
static PyObject *new_row(PyObject *node, PyObject *previous, const Since *rule, PyTypeObject *event_type,
                         PyObject *encode, PyTypeObject *row_type, PyObject *epoch, Buf *b) {
    PyObject *vals[N_FIELDS] = {NULL}, *tails[N_TAILS] = {NULL};
    PyObject *notable = NULL, *notable_json = NULL, *raw = NULL, *out = NULL;
    Previous prev;
    int rc = 0;
    Py_INCREF(previous);  /* held until the end (its parts too: `read_previous`) */
    if (read_previous(previous, row_type, &prev)) goto done;
    for (Py_ssize_t i = 0; rc == 0 && i < N_FIELDS; i++)
        if ((vals[i] = get_attr(node, field_names[i])) == NULL) rc = -1;
    for (int i = 0; rc == 0 && i < N_TAILS; i++)
        if ((tails[i] = get_attr(node, tail_names[i])) == NULL) rc = -1;
    if (rc < 0) {  /* Python reads the same attributes and raises what they raise */
        PyErr_Clear();
        goto done;
    }
    if (!(Py_IS_TYPE(tails[EVIDENCE], deque_type) || is_ring(tails[EVIDENCE])) ||
        !Py_IS_TYPE(tails[CONNS], deque_type) || !Py_IS_TYPE(tails[NOTABLE], deque_type) ||
        !PyDict_CheckExact(tails[CODES]))
        goto done;
    long long appended;
    if (sum_counts(tails[CODES], &appended)) goto done;
    if ((notable = PySequence_Tuple(tails[NOTABLE])) == NULL) goto clear;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(notable); i++)
        if (!Py_IS_TYPE(PyTuple_GET_ITEM(notable, i), event_type)) goto done;
    if ((raw = evidence_raw(tails[EVIDENCE], appended, &prev)) == NULL) goto clear;
    int same = same_notable(&prev, notable, event_type);
    if (same < 0) goto clear;
    if (same) notable_json = Py_NewRef(prev.notable_json);
    else if ((notable_json = PyObject_CallOneArg(encode, notable)) == NULL) goto clear;  /* may run code: values held */
    if (!PyBytes_CheckExact(notable_json)) goto done;
    b->len = 0;
    rc = put(b, "[", 1);
    for (Py_ssize_t i = 0; rc == 0 && i < N_FIELDS; i++) {
        rc = put_value(b, vals[i], 0);
        rc = rc ? rc : put(b, ",", 1);
    }
    rc = rc ? rc : put_evidence(b, (const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), rule);
    rc = rc ? rc : put(b, ",", 1);
    rc = rc ? rc : put_kept_conns(b, tails[CONNS], rule);
    rc = rc ? rc : put(b, ",", 1);
    rc = rc ? rc : put(b, PyBytes_AS_STRING(notable_json), PyBytes_GET_SIZE(notable_json));
    rc = rc ? rc : put(b, ",", 1);
    rc = rc ? rc : put_codes(b, tails[CODES]);
    rc = rc ? rc : put(b, "]", 1);
    if (rc > 0) goto done;
    if (rc < 0) goto clear;
    PyObject *data = PyBytes_FromStringAndSize(b->p, b->len), *count = PyLong_FromLongLong(appended);
    if (data != NULL && count != NULL) {
        untrack_if_atomic(notable);
        PyObject *values[N_ROW] = {node, vals[N_FIELDS - 1], epoch, data, notable, notable_json, raw, count,
                                   tails[EVIDENCE]};  /* vals[N_FIELDS - 1]: alert_mark */
        out = make_row(row_type, values);
    }
    Py_XDECREF(data);
    Py_XDECREF(count);
    if (out == NULL) goto clear;
    goto done;
clear:
    PyErr_Clear();  /* Python does the node again and raises its own error, if any */
done:
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) Py_XDECREF(vals[i]);
    for (int i = 0; i < N_TAILS; i++) Py_XDECREF(tails[i]);
    Py_XDECREF(notable);
    Py_XDECREF(notable_json);
    Py_XDECREF(raw);
    Py_XDECREF(prev.notable);
    Py_XDECREF(prev.notable_json);
    Py_XDECREF(prev.evidence);
    Py_XDECREF(prev.source);
    Py_DECREF(previous);
    return out != NULL ? out : Py_NewRef(Py_None);
}

/* encode_rows(nodes: list, previous: list, since_ms: int, code_bits: int, event_type: type, encode: Callable,
   row_type: type, epoch: int) -> list: for each node (a `ProcessNode`) and its previous row (a `row_type`,
   i.e. `tree_state._Row`, or None) a new `row_type` holding what `_encode_row(node, since_ms, previous,
   epoch)` puts in one — its row's bytes, its notable events and their JSON (the previous row's when they
   are equal, else `encode(notable)`, called only when every one is an exact `event_type`), its evidence as
   int64 bytes (the previous row's still held plus the new ones), the sum of its code counts — or None for
   a node it leaves to Python (anything it does not write exactly as the Python code does, or any error:
   Python then raises its own). The next nodes' objects are prefetched while one is written. */
static PyObject *encode_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 8 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) || !PyType_Check(args[4]) ||
        !PyType_Check(args[6]) || PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode_rows(nodes: list, previous: list of the same length, since_ms, "
                                         "code_bits, event_type: type, encode, row_type: type, epoch)");
        return NULL;
    }
    PyObject *since_ms = args[2], *code_bits = args[3], *encode = args[5], *epoch = args[7];
    PyTypeObject *event_type = (PyTypeObject *)args[4], *row_type = (PyTypeObject *)args[6];
    Since rule;
    if (parse_since(since_ms, code_bits, &rule) < 0 || check_row_type(row_type) < 0) return NULL;
    PyObject *nodes = PySequence_List(args[0]), *previous = NULL;  /* our own lists: `encode` cannot change */
    if (nodes == NULL || (previous = PySequence_List(args[1])) == NULL) {  /* them under us */
        Py_XDECREF(nodes);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(nodes);
    PyObject *out = PyList_New(n);
    const int shared = !scratch_taken;
    Buf b = shared ? scratch : (Buf){NULL, 0, 0};
    scratch_taken = 1;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        if (i + 3 < n) prefetch_object(PyList_GET_ITEM(nodes, i + 3));
        if (i + 2 < n) prefetch_slots(PyList_GET_ITEM(nodes, i + 2));
        if (i + 1 < n) prefetch_contents(PyList_GET_ITEM(nodes, i + 1));
        PyObject *row = new_row(PyList_GET_ITEM(nodes, i), PyList_GET_ITEM(previous, i), &rule, event_type, encode,
                                row_type, epoch, &b);
        if (row == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, row);
    }
    Py_DECREF(nodes);
    Py_DECREF(previous);
    return give_back(b, shared, out);
}

static PyMethodDef methods[] = {
    READS_RINGS_METHOD,
    {"evidence_tail", (PyCFunction)(void (*)(void))evidence_tail, METH_FASTCALL,
     "evidence_tail(evidence, n) -> bytes: the last n records as little-endian int64s, in order."},
    {"raw_b64", (PyCFunction)(void (*)(void))raw_b64, METH_FASTCALL,
     "raw_b64(raw, since_ms, code_bits) -> str: base64 of int64 records, the old ones left out when the oldest is."},
    {"row_json", (PyCFunction)(void (*)(void))row_json, METH_FASTCALL,
     "row_json(fields, raw, since_ms, code_bits, conns, notable, codes) -> bytes | None: a process's row as "
     "orjson writes it (the evidence as raw_b64 writes it), "
     "None when orjson must decide."},
    {"encode_rows", (PyCFunction)(void (*)(void))encode_rows, METH_FASTCALL,
     "encode_rows(nodes, previous, since_ms, code_bits, event_type, encode, row_type, epoch) -> list: each "
     "node's row as a row_type (tree_state._Row), or None where Python must write it."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pipeline._cstate",
                                    "State record loops in C (pipeline/_cstate.c, see pipeline.tree_state).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__cstate(void) {
    for (Py_ssize_t i = 0; i < N_FIELDS; i++)
        if ((field_names[i] = PyUnicode_InternFromString(FIELD_NAMES[i])) == NULL) return NULL;
    for (int i = 0; i < N_TAILS; i++)
        if ((tail_names[i] = PyUnicode_InternFromString(TAIL_NAMES[i])) == NULL) return NULL;
    for (int i = 0; i < N_ROW; i++)
        if ((row_names[i] = PyUnicode_InternFromString(ROW_NAMES[i])) == NULL) return NULL;
    if ((deque_type = import_deque_type()) == NULL || ring_import() < 0) return NULL;  /* kept for the module's life */
    return PyModule_Create(&module);
}
