/*
 * schemas/_cfastcodec.c: a proof, in one pass over the bytes, that an events-topic record is an
 * `EventBatch` exactly as msgspec writes it (`schemas.codec.encode_batch`, i.e. every agent's output)
 * and that its values meet every check of `schemas.fastcodec.fast_events`.
 *
 * Why: `fast_events` decodes with msgspec, then proves the record safe by re-encoding it and comparing
 * the bytes (no duplicate keys, canonical timestamps) and by a Python pass over the events (id charset,
 * one device, the seq range, the time range). Those two proofs cost about as much as the decode. This
 * file makes both in C before msgspec decodes: the record must follow the canonical layout key for key
 * (every field present, in the Structs' order, no whitespace), every value must be written as msgspec
 * writes it, and every constraint of the Structs and of `_consistent` must hold. Then the re-encoding
 * would be byte-identical, so `fast_events` only has to decode.
 *
 * It can only answer yes or no, and "no" costs nothing but time: the caller then runs the Python proof
 * and, failing that, the full codec. So it is written to say no whenever in doubt: any `\u` escape, an
 * escape inside an identifier, a non-UTC time, a single-event record (no batch wrapper), invalid UTF-8.
 * It never builds an object and never reads outside the buffer (every read is bounded by `end`).
 * `tests/unit/test_cfastcodec.py` checks that every record it proves is accepted by the Python proof with
 * equal values, and that its field table (`FIELDS`) is the Structs' (so a contract change cannot leave
 * it behind unnoticed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    Py_ssize_t max_chars; /* FAST_TEXT_CHARS: the Structs' cap on text fields */
} Cur;

enum { T_ID, T_TEXT, T_SHA, T_SEQ, T_U32, T_PORT, T_I64, T_BOOL, T_OP, T_PROTO, T_ANSWERS };
#define TEXT_MAX (-1) /* the caller's max_chars */

typedef struct {
    const char *key;
    int type;
    Py_ssize_t min; /* characters (text), unused otherwise */
    Py_ssize_t max; /* characters (text); TEXT_MAX: max_chars */
    int nullable;
} Field;

typedef struct {
    const char *kind;
    const Field *fields;
    int n;
} Kind;

#define TXT(k, mn, mx, nl) {k, T_TEXT, mn, mx, nl}
#define F(k, t, nl) {k, t, 0, 0, nl}
static const Field PROCESS_START[] = {
    TXT("image", 1, TEXT_MAX, 0), TXT("command_line", 0, TEXT_MAX, 0), F("sha256", T_SHA, 1),
    TXT("user", 0, TEXT_MAX, 1), TXT("integrity_level", 0, TEXT_MAX, 1), F("uid", T_U32, 1),
    F("pid", T_U32, 1), F("ppid", T_U32, 1), TXT("parent_image", 0, TEXT_MAX, 1),
    TXT("parent_command_line", 0, TEXT_MAX, 1), TXT("cwd", 0, TEXT_MAX, 1)};
static const Field PROCESS_END[] = {F("pid", T_U32, 1), F("exit_code", T_I64, 1)};
static const Field FILE_CREATE[] = {TXT("path", 1, TEXT_MAX, 0), F("sha256", T_SHA, 1)};
static const Field FILE_WRITE[] = {TXT("path", 1, TEXT_MAX, 0), F("sha256", T_SHA, 1),
                                   F("bytes_written", T_SEQ, 1)};
static const Field FILE_DELETE[] = {TXT("path", 1, TEXT_MAX, 0), F("sha256", T_SHA, 1)};
static const Field FILE_RENAME[] = {TXT("path", 1, TEXT_MAX, 0), TXT("old_path", 1, TEXT_MAX, 0)};
static const Field REGISTRY_SET[] = {TXT("key", 1, TEXT_MAX, 0), TXT("value_name", 0, TEXT_MAX, 1),
                                     TXT("data", 0, TEXT_MAX, 1), F("operation", T_OP, 0)};
static const Field NETWORK_CONNECT[] = {
    TXT("dst_ip", 1, 64, 0), F("dst_port", T_PORT, 0), TXT("src_ip", 0, 64, 1), F("src_port", T_PORT, 1),
    F("protocol", T_PROTO, 0), F("outbound", T_BOOL, 0), TXT("dst_hostname", 0, TEXT_MAX, 1)};
static const Field DNS_QUERY[] = {TXT("query", 1, TEXT_MAX, 0), F("answers", T_ANSWERS, 0)};
static const Field IMAGE_LOAD[] = {TXT("path", 1, TEXT_MAX, 0), F("sha256", T_SHA, 1), F("signed", T_BOOL, 1),
                                   TXT("signer", 0, TEXT_MAX, 1)};
static const Field PROCESS_ACCESS[] = {F("target_process_key", T_ID, 1), TXT("target_image", 1, TEXT_MAX, 0),
                                       F("granted_access", T_U32, 0), TXT("call_trace", 0, TEXT_MAX, 1)};
static const Field REMOTE_THREAD[] = {F("target_process_key", T_ID, 1), TXT("target_image", 1, TEXT_MAX, 0),
                                      TXT("start_address", 0, 64, 1)};
static const Field SCRIPT[] = {TXT("content", 0, TEXT_MAX, 0), TXT("interpreter", 0, TEXT_MAX, 1),
                               TXT("path", 0, TEXT_MAX, 1)};
#define KIND(name, table) {name, table, (int)(sizeof(table) / sizeof(table[0]))}
static const Kind KINDS[] = {
    KIND("process_start", PROCESS_START), KIND("process_end", PROCESS_END), KIND("file_create", FILE_CREATE),
    KIND("file_write", FILE_WRITE),       KIND("file_delete", FILE_DELETE), KIND("file_rename", FILE_RENAME),
    KIND("registry_set", REGISTRY_SET),   KIND("network_connect", NETWORK_CONNECT),
    KIND("dns_query", DNS_QUERY),         KIND("image_load", IMAGE_LOAD),
    KIND("process_access", PROCESS_ACCESS), KIND("remote_thread", REMOTE_THREAD), KIND("script", SCRIPT)};
#define N_KINDS ((int)(sizeof(KINDS) / sizeof(KINDS[0])))
static const char *const OPERATIONS[] = {"set_value", "create_key", "delete_key", "delete_value", "rename_key"};
static const char *const PROTOCOLS[] = {"tcp", "udp"};
static const char *const PLATFORMS[] = {"windows", "linux"};
#define ID_MAX 128
#define ANSWERS_MAX 1024

/* Byte classes: PLAIN_BYTE is one character of text as written (printable ASCII but quote and
   backslash); ID_BYTE is a byte of an identifier (the same without space). Filled at import. */
#define PLAIN_BYTE 1
#define ID_BYTE 2
static unsigned char byte_class[256];

static void fill_byte_classes(void) {
    for (int b = 0x20; b < 0x80; b++) {
        if (b == '"' || b == '\\') continue;
        byte_class[b] = PLAIN_BYTE | (b != 0x20 && b != 0x7f ? ID_BYTE : 0);
    }
}

/* The exact bytes `lit` (a C string) next; consumed on success. */
static inline int lit(Cur *c, const char *lit) {
    const unsigned char *q = c->p, *end = c->end;
    for (; *lit; lit++, q++)
        if (q >= end || *q != (unsigned char)*lit) return 0;
    c->p = q;
    return 1;
}

/* `,"key":` next (every key this file matches follows another field of its object). */
static inline int key(Cur *c, const char *name) {
    const unsigned char *q = c->p;
    size_t n = strlen(name);
    if ((size_t)(c->end - q) < n + 4 || q[0] != ',' || q[1] != '"' || memcmp(q + 2, name, n) != 0
        || q[n + 2] != '"' || q[n + 3] != ':')
        return 0;
    c->p = q + n + 4;
    return 1;
}

/* An identifier: "..." of 1..128 printable ASCII bytes without space, quote or backslash (an escape
   inside an id is left to the Python proof). Its bytes are returned for comparisons. */
static int ident(Cur *c, const unsigned char **start, Py_ssize_t *len) {
    if (!lit(c, "\"")) return 0;
    const unsigned char *s = c->p, *q = s, *end = c->end;
    while (q < end && (byte_class[*q] & ID_BYTE)) q++;
    c->p = q;
    if (q >= end || *q != '"') return 0;
    Py_ssize_t n = c->p - s;
    c->p++;
    if (n < 1 || n > ID_MAX) return 0;
    if (start) *start = s;
    if (len) *len = n;
    return 1;
}

/* The batch's device id: an identifier matching [A-Za-z0-9][A-Za-z0-9._:@-]*. */
static int device(Cur *c, const unsigned char **start, Py_ssize_t *len) {
    if (!ident(c, start, len)) return 0;
    for (Py_ssize_t i = 0; i < *len; i++) {
        unsigned char b = (*start)[i];
        int alnum = (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z');
        if (!alnum && (i == 0 || (b != '.' && b != '_' && b != ':' && b != '@' && b != '-'))) return 0;
    }
    return 1;
}

static inline int cont(const unsigned char *q, const unsigned char *end, int k) {
    for (int i = 1; i <= k; i++)
        if (q + i >= end || (q[i] & 0xC0) != 0x80) return 0;
    return 1;
}

/* The end of a run of plain text bytes (printable ASCII but quote and backslash) from q: eight bytes
   at a time while none of them is a quote, a backslash, a control byte or a non-ASCII byte (the
   bit tricks may flag a plain byte after a real hit, never miss one: the byte loop then decides). */
static inline const unsigned char *plain_run(const unsigned char *q, const unsigned char *end) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - q >= 8) {
        uint64_t x, quote, slash;
        memcpy(&x, q, 8);
        quote = x ^ (ones * '"'), slash = x ^ (ones * '\\');
        uint64_t hit = (x & highs) | ((x - ones * 0x20) & ~x & highs) | ((quote - ones) & ~quote & highs)
                       | ((slash - ones) & ~slash & highs);
        if (hit) break;
        q += 8;
    }
    while (q < end && (byte_class[*q] & PLAIN_BYTE)) q++;
    return q;
}

/* Text as msgspec writes it: valid UTF-8 (no surrogates, nothing above U+10FFFF), no raw control
   character, the short escapes msgspec uses (\" \\ \b \f \n \r \t) and no other; min..max code points. */
static int text(Cur *c, Py_ssize_t min, Py_ssize_t max) {
    if (max == TEXT_MAX) max = c->max_chars;
    if (!lit(c, "\"")) return 0;
    Py_ssize_t chars = 0;
    const unsigned char *q = c->p, *end = c->end;
    for (;;) {
        const unsigned char *run = q;
        q = plain_run(q, end);
        chars += q - run;
        if (chars > max || q >= end) return 0;
        unsigned char b = *q;
        if (b == '"') break;
        if (b < 0x20) return 0;
        if (b < 0x80) {
            if (b == '\\') {
                if (q + 1 >= end) return 0;
                unsigned char e = q[1];
                if (e != '"' && e != '\\' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') return 0;
                q += 2;
            } else {
                q += 1;
            }
        } else if (b >= 0xC2 && b <= 0xDF) {
            if (!cont(q, end, 1)) return 0;
            q += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (!cont(q, end, 2)) return 0;
            if (b == 0xE0 && q[1] < 0xA0) return 0; /* overlong */
            if (b == 0xED && q[1] > 0x9F) return 0; /* a surrogate */
            q += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (!cont(q, end, 3)) return 0;
            if (b == 0xF0 && q[1] < 0x90) return 0; /* overlong */
            if (b == 0xF4 && q[1] > 0x8F) return 0; /* above U+10FFFF */
            q += 4;
        } else {
            return 0;
        }
        if (++chars > max) return 0;
    }
    c->p = q + 1;
    return chars >= min;
}

/* An integer as msgspec writes it (no sign on zero, no leading zero, no fraction or exponent) in [lo, hi]. */
static int integer(Cur *c, int64_t lo, int64_t hi, int64_t *out) {
    int negative = lit(c, "-");
    const unsigned char *s = c->p;
    uint64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (c->p - s >= 19) return 0; /* 19 digits hold any int64; more is out of every range here */
        v = v * 10 + (uint64_t)(*c->p - '0');
        c->p++;
    }
    Py_ssize_t digits = c->p - s;
    if (digits == 0 || (digits > 1 && *s == '0') || (negative && v == 0)) return 0;
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')) return 0;
    if (v > (uint64_t)INT64_MAX) return 0; /* -2**63 itself is left to the Python proof */
    int64_t value = negative ? -(int64_t)v : (int64_t)v;
    if (value < lo || value > hi) return 0;
    if (out) *out = value;
    return 1;
}

static int digits(const unsigned char *q, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (q[i] < '0' || q[i] > '9') return 0;
        v = v * 10 + (q[i] - '0');
    }
    *out = v;
    return 1;
}

/* A UTC time as msgspec writes it: "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" (six digits, never all zero, or none),
   a real calendar date in [1990, 2100), the range `_consistent` requires. */
static int timestamp(Cur *c) {
    const unsigned char *q = c->p;
    if (c->end - q < 22) return 0; /* "YYYY-MM-DDTHH:MM:SSZ" with its quotes */
    int y, mo, d, h, mi, s;
    if (q[0] != '"' || q[5] != '-' || q[8] != '-' || q[11] != 'T' || q[14] != ':' || q[17] != ':') return 0;
    if (!digits(q + 1, 4, &y) || !digits(q + 6, 2, &mo) || !digits(q + 9, 2, &d) || !digits(q + 12, 2, &h)
        || !digits(q + 15, 2, &mi) || !digits(q + 18, 2, &s))
        return 0;
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1990 || y > 2099 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > days[mo - 1] + (mo == 2 && leap)) return 0;
    q += 20;
    if (*q == '.') {
        int micro;
        if (c->end - q < 9 || !digits(q + 1, 6, &micro) || micro == 0) return 0;
        q += 7;
    }
    if (c->end - q < 2 || q[0] != 'Z' || q[1] != '"') return 0;
    c->p = q + 2;
    return 1;
}

/* One of the quoted literals in `names`. */
static int choice(Cur *c, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if ((size_t)(c->end - c->p) >= len + 2 && c->p[0] == '"' && memcmp(c->p + 1, names[i], len) == 0
            && c->p[len + 1] == '"') {
            c->p += len + 2;
            return 1;
        }
    }
    return 0;
}

static int sha256(Cur *c) {
    if (c->end - c->p < 66 || c->p[0] != '"' || c->p[65] != '"') return 0;
    for (int i = 1; i <= 64; i++) {
        unsigned char b = c->p[i];
        if (!((b >= '0' && b <= '9') || (b >= 'a' && b <= 'f'))) return 0;
    }
    c->p += 66;
    return 1;
}

static int answers(Cur *c, Py_ssize_t max_chars) {
    if (!lit(c, "[")) return 0;
    if (lit(c, "]")) return 1;
    for (int n = 1;; n++) {
        if (n > ANSWERS_MAX || !text(c, 0, max_chars)) return 0;
        if (lit(c, "]")) return 1;
        if (!lit(c, ",")) return 0;
    }
}

static int value(Cur *c, const Field *f) {
    if (f->nullable && lit(c, "null")) return 1;
    switch (f->type) {
    case T_ID: return ident(c, NULL, NULL);
    case T_TEXT: return text(c, f->min, f->max);
    case T_SHA: return sha256(c);
    case T_SEQ: return integer(c, 0, INT64_MAX, NULL);
    case T_U32: return integer(c, 0, 4294967295LL, NULL);
    case T_PORT: return integer(c, 0, 65535, NULL);
    case T_I64: return integer(c, INT64_MIN + 1, INT64_MAX, NULL);
    case T_BOOL: return lit(c, "true") || lit(c, "false");
    case T_OP: return choice(c, OPERATIONS, 5);
    case T_PROTO: return choice(c, PROTOCOLS, 2);
    case T_ANSWERS: return answers(c, TEXT_MAX);
    default: return 0;
    }
}

static int payload(Cur *c) {
    if (!lit(c, "{\"kind\":")) return 0;
    for (int k = 0; k < N_KINDS; k++) {
        const char *const name[] = {KINDS[k].kind};
        if (!choice(c, name, 1)) continue;
        for (int i = 0; i < KINDS[k].n; i++)
            if (!key(c, KINDS[k].fields[i].key) || !value(c, &KINDS[k].fields[i])) return 0;
        return lit(c, "}");
    }
    return 0;
}

typedef struct {
    const unsigned char *device;
    Py_ssize_t device_len;
    int64_t min_seq, max_seq;
} Batch;

static int event(Cur *c, Batch *b) {
    const unsigned char *dev;
    Py_ssize_t dev_len;
    int64_t seq;
    if (!lit(c, "{\"schema_version\":\"1.0\"") || !key(c, "event_id") || !ident(c, NULL, NULL)) return 0;
    if (!key(c, "device_id") || !ident(c, &dev, &dev_len)) return 0;
    if (dev_len != b->device_len || memcmp(dev, b->device, (size_t)dev_len) != 0) return 0;
    if (!key(c, "seq") || !integer(c, 0, INT64_MAX, &seq)) return 0;
    if (seq < b->min_seq) b->min_seq = seq;
    if (seq > b->max_seq) b->max_seq = seq;
    if (!key(c, "ts") || !timestamp(c)) return 0;
    if (!key(c, "platform") || !choice(c, PLATFORMS, 2)) return 0;
    if (!key(c, "process_key") || !ident(c, NULL, NULL)) return 0;
    if (!key(c, "parent_process_key") || !(lit(c, "null") || ident(c, NULL, NULL))) return 0;
    if (!key(c, "image") || !(lit(c, "null") || text(c, 0, TEXT_MAX))) return 0;
    return key(c, "payload") && payload(c) && lit(c, "}");
}

static int batch(Cur *c, Py_ssize_t max_events) {
    Batch b = {NULL, 0, INT64_MAX, -1};
    int64_t first, last;
    if (!lit(c, "{\"schema_version\":\"1.0\"") || !key(c, "device_id") || !device(c, &b.device, &b.device_len))
        return 0;
    if (!key(c, "first_seq") || !integer(c, 0, INT64_MAX, &first)) return 0;
    if (!key(c, "last_seq") || !integer(c, 0, INT64_MAX, &last)) return 0;
    if (!key(c, "events") || !lit(c, "[")) return 0;
    for (Py_ssize_t n = 1;; n++) {
        if (n > max_events || !event(c, &b)) return 0;
        if (lit(c, "]")) break;
        if (!lit(c, ",")) return 0;
    }
    return lit(c, "}") && c->p == c->end && b.min_seq == first && b.max_seq == last;
}

static PyObject *proven(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "proven(record: bytes, max_events: int, max_chars: int)");
        return NULL;
    }
    Py_ssize_t max_events = PyLong_AsSsize_t(args[1]);
    if (max_events == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t max_chars = PyLong_AsSsize_t(args[2]);
    if (max_chars == -1 && PyErr_Occurred()) return NULL;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Cur c = {data, data + PyBytes_GET_SIZE(args[0]), max_chars};
    return PyBool_FromLong(max_chars >= 0 && batch(&c, max_events));
}

/* {kind: (field, ...)}: the field table, for the test that holds it to the Structs. */
static PyObject *field_table(void) {
    PyObject *table = PyDict_New();
    if (table == NULL) return NULL;
    for (int k = 0; k < N_KINDS; k++) {
        PyObject *names = PyTuple_New(KINDS[k].n);
        if (names == NULL) goto fail;
        for (int i = 0; i < KINDS[k].n; i++) {
            PyObject *name = PyUnicode_FromString(KINDS[k].fields[i].key);
            if (name == NULL) {
                Py_DECREF(names);
                goto fail;
            }
            PyTuple_SET_ITEM(names, i, name);
        }
        int failed = PyDict_SetItemString(table, KINDS[k].kind, names);
        Py_DECREF(names);
        if (failed) goto fail;
    }
    return table;
fail:
    Py_DECREF(table);
    return NULL;
}

static PyMethodDef methods[] = {
    {"proven", (PyCFunction)(void (*)(void))proven, METH_FASTCALL,
     "proven(record, max_events, max_chars) -> bool: the record is a batch exactly as msgspec writes it, "
     "valid under schemas.fastcodec's Structs and checks."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "schemas._cfastcodec",
                                    "Proof that an events record is canonical and valid (schemas/_cfastcodec.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cfastcodec(void) {
    fill_byte_classes();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *table = field_table();
    if (table == NULL || PyModule_AddObject(m, "FIELDS", table) < 0) {
        Py_XDECREF(table);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
