/*
 * schemas/_cfastcodec.c: the events of an events-topic record in one pass over its bytes, when they can
 * be proven to be an `EventBatch` exactly as msgspec writes it (`schemas.codec.encode_batch`, i.e. every
 * agent's output), or a single event as msgspec writes a `FastEvent` (`schemas.codec.encode_event`),
 * whose values meet every check of `schemas.fastcodec.fast_events`.
 *
 * Why: `fast_events` decodes with msgspec, then proves the record safe by re-encoding it and comparing
 * the bytes (no duplicate keys, canonical timestamps) and by a Python pass over the events (id charset,
 * one device, the seq range, the time range): three passes, the proofs costing about as much as the
 * decode. Here one walk does all three: the record must follow the canonical layout key for key (every
 * field present, in the Structs' order, no whitespace), every value must be written as msgspec writes
 * it, every constraint of the Structs and of `_consistent` must hold (then re-encoding would give the
 * same bytes), and, in `decode`, each value is built as msgspec builds it and each Struct through its
 * own constructor (types handed over by `configure`).
 *
 * "No" costs nothing but time: the caller then runs msgspec and the Python proof and, failing that, the
 * full codec. So it says no whenever in doubt: any `\u` escape, an escape inside an identifier, a non-UTC
 * time, invalid UTF-8. A single-event record (one `FastEvent` object, no batch wrapper) is proven and
 * built the same way, with the checks `_consistent` makes of one (its device id as a batch's; session R). It never reads outside the buffer
 * (every read is bounded by `end`) and releases what it built when it says no halfway.
 * `tests/unit/test_cfastcodec.py` checks that whatever it returns is what msgspec and the Python proof
 * return (types included), and that its field table (`FIELDS`) is the Structs' (so a contract change
 * cannot leave it behind unnoticed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <datetime.h>

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    Py_ssize_t max_chars; /* FAST_TEXT_CHARS: the Structs' cap on text fields */
    int build;            /* build the objects too (`decode`), or only prove (`proven`) */
    int failed;           /* building failed (out of memory): an exception is set */
    struct Shared *shared; /* `shared_table` when building (strings reused for equal bytes), or NULL */
} Cur;
#define SHARED_SLOTS 2048 /* a power of two */
#define SHARED_MAX 256    /* bytes: longer strings are rarely repeated */
typedef struct Shared {
    PyObject *str;
    uint64_t hash;
    Py_ssize_t n;
} Shared;
/* Strings built by `decode`, kept from record to record (see `shared_str`); only touched with the GIL held
   (`decode` never releases it). At most SHARED_SLOTS strings of up to SHARED_MAX bytes stay referenced.
   The bytes each was built from (as written in its record) apart: read only when the hash matches. */
static Shared shared_table[SHARED_SLOTS];
static unsigned char shared_raw[SHARED_SLOTS][SHARED_MAX];

enum { T_ID, T_TEXT, T_SHA, T_SEQ, T_U32, T_PORT, T_I64, T_BOOL, T_OP, T_PROTO, T_ANSWERS };
#define TEXT_MAX (-1) /* the caller's max_chars */

typedef struct {
    const char *key;
    size_t key_len;  /* strlen(key), so `key_n` compares it in one memcmp */
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

#define TXT(k, mn, mx, nl) {k, sizeof(k) - 1, T_TEXT, mn, mx, nl}
#define F(k, t, nl) {k, sizeof(k) - 1, t, 0, 0, nl}
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
static const char *const KIND_NAMES[] = {"process_start", "process_end", "file_create", "file_write", "file_delete",
                                         "file_rename", "registry_set", "network_connect", "dns_query",
                                         "image_load", "process_access", "remote_thread", "script"};
static const char *const OPERATIONS[] = {"set_value", "create_key", "delete_key", "delete_value", "rename_key"};
static const char *const PROTOCOLS[] = {"tcp", "udp"};
static const char *const PLATFORMS[] = {"windows", "linux"};
#define ID_MAX 128
#define ANSWERS_MAX 1024
#define CHOICE_MAX 32 /* bytes: longer than every name `choice` looks for */

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

/* The exact n bytes at `s` next; consumed on success. `lit` and `key` take string literals, so the
   length is a constant and the compiler turns the memcmp into a few word compares (a byte loop here
   was the largest share of the parse). */
static inline int lit_n(Cur *c, const char *s, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return 0;
    c->p += n;
    return 1;
}
#define lit(c, s) lit_n((c), "" s, sizeof(s) - 1)

/* `,"key":` next (every key this file matches follows another field of its object). */
static inline int key_n(Cur *c, const char *name, size_t n) {
    const unsigned char *q = c->p;
    if ((size_t)(c->end - q) < n + 4 || q[0] != ',' || q[1] != '"' || memcmp(q + 2, name, n) != 0
        || q[n + 2] != '"' || q[n + 3] != ':')
        return 0;
    c->p = q + n + 4;
    return 1;
}
#define key(c, name) key_n((c), "" name, sizeof(name) - 1)

/* The end of a run of identifier bytes (ID_BYTE) from q: eight bytes at a time while none is a
   control byte, space, quote, backslash, DEL or non-ASCII (as `plain_run` below: the bit tricks may
   flag an id byte after a real hit, never miss one; the byte loop then decides). */
static inline const unsigned char *id_run(const unsigned char *q, const unsigned char *end) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - q >= 8) {
        uint64_t x, quote, slash, del;
        memcpy(&x, q, 8);
        quote = x ^ (ones * '"'), slash = x ^ (ones * '\\'), del = x ^ (ones * 0x7f);
        uint64_t hit = (x & highs) | ((x - ones * 0x21) & ~x & highs) | ((quote - ones) & ~quote & highs)
                       | ((slash - ones) & ~slash & highs) | ((del - ones) & ~del & highs);
        if (hit) break;
        q += 8;
    }
    while (q < end && (byte_class[*q] & ID_BYTE)) q++;
    return q;
}

/* An identifier: "..." of 1..128 printable ASCII bytes without space, quote or backslash (an escape
   inside an id is left to the Python proof). Its bytes are returned for comparisons. */
static int ident(Cur *c, const unsigned char **start, Py_ssize_t *len) {
    if (!lit(c, "\"")) return 0;
    const unsigned char *s = c->p, *q = id_run(s, c->end), *end = c->end;
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

/* The objects `decode` builds: the Structs are called with keyword arguments (their own constructor:
   no constraint is checked there, all were proven) with the values msgspec's decode gives: strings,
   ints, None, bools, the UTC datetime, the Platform member, tuples. Set by `configure` (at import). */
static PyObject *event_type, *event_names, *kind_types[N_KINDS], *kind_names[N_KINDS], *platforms[2];
static PyObject *version_str;
static PyObject *operation_strs[5], *protocol_strs[2]; /* OPERATIONS and PROTOCOLS, built once (`configure`) */

/* Keep a built object: 0 (and `failed`) when it is NULL. */
static inline int keep(Cur *c, PyObject **out, PyObject *value) {
    *out = value;
    if (value == NULL) c->failed = 1;
    return value != NULL;
}

/* A str of the n bytes at s, as written in the record (escapes of `text` undone). */
static PyObject *str_of(const unsigned char *s, Py_ssize_t n, int escaped, int ascii) {
    if (!escaped) {
        if (!ascii) return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
        PyObject *out = PyUnicode_New(n, 127);
        if (out != NULL) memcpy(PyUnicode_1BYTE_DATA(out), s, (size_t)n);
        return out;
    }
    char small[256] = {0}, *buf = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
    if (buf == NULL) return PyErr_NoMemory();
    Py_ssize_t len = 0;
    for (const unsigned char *r = s, *end = s + n; r < end; r++) {
        unsigned char b = *r;
        if (b == '\\' && r + 1 < end) {
            b = *++r;
            b = b == 'b' ? '\b' : b == 'f' ? '\f' : b == 'n' ? '\n' : b == 'r' ? '\r' : b == 't' ? '\t' : b;
        }
        buf[len++] = (char)b;
    }
    PyObject *out = PyUnicode_DecodeUTF8(buf, len, "strict");
    if (buf != small) PyMem_Free(buf);
    return out;
}

/* A hash of n bytes, eight at a time (the table's slot; any collision only costs a str built anew). */
static inline uint64_t bytes_hash(const unsigned char *s, Py_ssize_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n, w;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    w = 0;
    memcpy(&w, s + i, (size_t)(n - i));
    h = (h ^ w) * 0x94D049BB133111EBull;
    return h ^ (h >> 29);
}

/* A str of the n bytes at s (as `str_of`), the one already built from the same bytes if the table still
   holds it: the fleet's records repeat their device, process and parent keys, images, paths, registry
   keys and DNS names, within a record and from one record of a device to the next. One object for
   equal bytes saves building and freeing a str per value, and the tree's dict and set lookups of it
   find its hash cached and compare pointers (str is immutable: sharing is invisible but to `is`). A
   direct-mapped table kept across records; a collision just replaces the slot's str. The same bytes
   always give the same str: whether they hold escapes or non-ASCII is read from the bytes. */
static PyObject *shared_str(Cur *c, const unsigned char *s, Py_ssize_t n, int escaped, int ascii) {
    if (c->shared == NULL || n > SHARED_MAX || n == 0) return str_of(s, n, escaped, ascii);
    const uint64_t h = bytes_hash(s, n);
    const size_t i = (size_t)(h & (SHARED_SLOTS - 1));
    Shared *slot = &c->shared[i];
    if (slot->str != NULL && slot->hash == h && slot->n == n && memcmp(shared_raw[i], s, (size_t)n) == 0)
        return Py_NewRef(slot->str);
    PyObject *out = str_of(s, n, escaped, ascii);
    if (out != NULL) {
        Py_XSETREF(slot->str, Py_NewRef(out));
        slot->hash = h, slot->n = n;
        memcpy(shared_raw[i], s, (size_t)n);
    }
    return out;
}

/* Text as msgspec writes it: valid UTF-8 (no surrogates, nothing above U+10FFFF), no raw control
   character, the short escapes msgspec uses (\" \\ \b \f \n \r \t) and no other; min..max code points. */
static int text(Cur *c, Py_ssize_t min, Py_ssize_t max, PyObject **out) {
    if (max == TEXT_MAX) max = c->max_chars;
    if (!lit(c, "\"")) return 0;
    Py_ssize_t chars = 0;
    int escaped = 0, ascii = 1;
    const unsigned char *s = c->p, *q = s, *end = c->end;
    for (;;) {
        const unsigned char *run = q;
        q = plain_run(q, end);
        chars += q - run;
        if (chars > max || q >= end) return 0;
        unsigned char b = *q;
        if (b == '"') break;
        if (b < 0x20) return 0;
        if (b < 0x80) {  /* a backslash (other plain bytes ended no run) */
            if (q + 1 >= end) return 0;
            unsigned char e = q[1];
            if (e != '"' && e != '\\' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') return 0;
            escaped = 1;
            q += 2;
        } else if (b >= 0xC2 && b <= 0xDF) {
            if (!cont(q, end, 1)) return 0;
            ascii = 0, q += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (!cont(q, end, 2)) return 0;
            if (b == 0xE0 && q[1] < 0xA0) return 0; /* overlong */
            if (b == 0xED && q[1] > 0x9F) return 0; /* a surrogate */
            ascii = 0, q += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (!cont(q, end, 3)) return 0;
            if (b == 0xF0 && q[1] < 0x90) return 0; /* overlong */
            if (b == 0xF4 && q[1] > 0x8F) return 0; /* above U+10FFFF */
            ascii = 0, q += 4;
        } else {
            return 0;
        }
        if (++chars > max) return 0;
    }
    c->p = q + 1;
    if (chars < min) return 0;
    return out == NULL || keep(c, out, shared_str(c, s, q - s, escaped, ascii));
}

/* An integer as msgspec writes it (no sign on zero, no leading zero, no fraction or exponent) in [lo, hi]. */
static int integer(Cur *c, int64_t lo, int64_t hi, int64_t *value_out, PyObject **out) {
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
    if (value_out) *value_out = value;
    return out == NULL || keep(c, out, PyLong_FromLongLong(value));
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
   a real calendar date in [1990, 2100), the range `_consistent` requires. Built as msgspec builds it:
   a datetime in `datetime.timezone.utc`. */
static int timestamp(Cur *c, PyObject **out) {
    const unsigned char *q = c->p;
    if (c->end - q < 22) return 0; /* "YYYY-MM-DDTHH:MM:SSZ" with its quotes */
    int y, mo, d, h, mi, s, micro = 0;
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
        if (c->end - q < 9 || !digits(q + 1, 6, &micro) || micro == 0) return 0;
        q += 7;
    }
    if (c->end - q < 2 || q[0] != 'Z' || q[1] != '"') return 0;
    c->p = q + 2;
    return out == NULL || keep(c, out, PyDateTimeAPI->DateTime_FromDateAndTime(
                                          y, mo, d, h, mi, s, micro, PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType));
}

/* One of the quoted literals in `names`: its index, or -1. */
static int choice(Cur *c, const char *const *names, int n) {
    const unsigned char *q = c->p, *end = c->end;
    if (q >= end || *q != '"') return -1;
    const unsigned char *s = ++q;
    while (q < end && *q != '"' && q - s < CHOICE_MAX) q++;  /* the quoted bytes, then one compare each */
    if (q >= end || *q != '"') return -1;
    size_t len = (size_t)(q - s);
    for (int i = 0; i < n; i++)
        if (names[i][0] == (char)s[0] && strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            c->p = q + 1;
            return i;
        }
    return -1;
}

/* One of `names`, as its str in `strs` (built once: the same value msgspec builds, shared). */
static int literal(Cur *c, const char *const *names, PyObject *const *strs, int n, PyObject **out) {
    int i = choice(c, names, n);
    if (i < 0) return 0;
    return out == NULL || keep(c, out, Py_NewRef(strs[i]));
}

static int sha256(Cur *c, PyObject **out) {
    if (c->end - c->p < 66 || c->p[0] != '"' || c->p[65] != '"') return 0;
    for (int i = 1; i <= 64; i++) {
        unsigned char b = c->p[i];
        if (!((b >= '0' && b <= '9') || (b >= 'a' && b <= 'f'))) return 0;
    }
    c->p += 66;
    return out == NULL || keep(c, out, str_of(c->p - 65, 64, 0, 1));
}

static int id_value(Cur *c, PyObject **out, int share) {
    const unsigned char *s;
    Py_ssize_t n;
    if (!ident(c, &s, &n)) return 0;
    return out == NULL || keep(c, out, share ? shared_str(c, s, n, 0, 1) : str_of(s, n, 0, 1));
}

static int answers(Cur *c, PyObject **out) {
    if (!lit(c, "[")) return 0;
    PyObject *list = NULL;
    if (out != NULL && (list = PyList_New(0)) == NULL) return keep(c, out, NULL);
    int ok = 1;
    if (!lit(c, "]")) {
        for (int n = 1;; n++) {
            PyObject *item = NULL;
            if (n > ANSWERS_MAX || !text(c, 0, TEXT_MAX, list ? &item : NULL)) {
                ok = 0;
                break;
            }
            if (list != NULL) {
                int failed = PyList_Append(list, item);
                Py_DECREF(item);
                if (failed) {
                    c->failed = 1, ok = 0;
                    break;
                }
            }
            if (lit(c, "]")) break;
            if (!lit(c, ",")) {
                ok = 0;
                break;
            }
        }
    }
    if (list == NULL) return ok;
    if (!ok) {
        Py_DECREF(list);
        return 0;
    }
    PyObject *tuple = PyList_AsTuple(list);
    Py_DECREF(list);
    return keep(c, out, tuple);
}

static int value(Cur *c, const Field *f, PyObject **out) {
    if (f->nullable && lit(c, "null")) return out == NULL || keep(c, out, Py_NewRef(Py_None));
    switch (f->type) {
    case T_ID: return id_value(c, out, 1);
    case T_TEXT: return text(c, f->min, f->max, out);
    case T_SHA: return sha256(c, out);
    case T_SEQ: return integer(c, 0, INT64_MAX, NULL, out);
    case T_U32: return integer(c, 0, 4294967295LL, NULL, out);
    case T_PORT: return integer(c, 0, 65535, NULL, out);
    case T_I64: return integer(c, INT64_MIN + 1, INT64_MAX, NULL, out);
    case T_BOOL: {
        int yes = lit(c, "true");
        if (!yes && !lit(c, "false")) return 0;
        return out == NULL || keep(c, out, PyBool_FromLong(yes));
    }
    case T_OP: return literal(c, OPERATIONS, operation_strs, 5, out);
    case T_PROTO: return literal(c, PROTOCOLS, protocol_strs, 2, out);
    case T_ANSWERS: return answers(c, out);
    default: return 0;
    }
}

/* type(**dict(zip(names, values))) through vectorcall when `ok`; the values are released either way. */
static int make(Cur *c, int ok, PyObject *type, PyObject *names, PyObject **values, Py_ssize_t n, PyObject **out) {
    PyObject *made = NULL;
    if (ok && out != NULL) {
        made = PyObject_Vectorcall(type, values, 0, names);
        if (made == NULL) c->failed = 1, ok = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(values[i]);
    if (out != NULL) *out = made;
    return ok;
}

static int payload(Cur *c, PyObject **out) {
    if (!lit(c, "{\"kind\":")) return 0;
    int k = choice(c, KIND_NAMES, N_KINDS);
    if (k < 0) return 0;
    PyObject *values[16] = {NULL};
    int ok = 1;
    for (int i = 0; i < KINDS[k].n && ok; i++)
        ok = key_n(c, KINDS[k].fields[i].key, KINDS[k].fields[i].key_len) && value(c, &KINDS[k].fields[i], out ? &values[i] : NULL);
    ok = ok && lit(c, "}");
    return make(c, ok, kind_types[k], kind_names[k], values, KINDS[k].n, out);
}

typedef struct {
    const unsigned char *device;  /* a batch's device id (every event's must equal it) */
    Py_ssize_t device_len;
    int64_t min_seq, max_seq;
    int single;                   /* a single-event record: the event's device id is checked by itself */
} Batch;

static int event(Cur *c, Batch *b, PyObject **out) {
    const unsigned char *dev;
    Py_ssize_t dev_len;
    int64_t seq;
    PyObject *v[10] = {NULL}, **at = out ? v : NULL;
    int ok = lit(c, "{\"schema_version\":\"1.0\"") && (at == NULL || keep(c, &v[0], Py_NewRef(version_str)))
             && key(c, "event_id") && id_value(c, at ? &v[1] : NULL, 0) && key(c, "device_id");
    if (b->single) {  /* a single-event record: its own device id, checked as a batch's is */
        ok = ok && device(c, &dev, &dev_len);
    } else {
        ok = ok && ident(c, &dev, &dev_len) && dev_len == b->device_len && memcmp(dev, b->device, (size_t)dev_len) == 0;
    }
    ok = ok && (at == NULL || keep(c, &v[2], shared_str(c, dev, dev_len, 0, 1)));
    ok = ok && key(c, "seq") && integer(c, 0, INT64_MAX, &seq, at ? &v[3] : NULL);
    if (ok) {
        if (seq < b->min_seq) b->min_seq = seq;
        if (seq > b->max_seq) b->max_seq = seq;
    }
    ok = ok && key(c, "ts") && timestamp(c, at ? &v[4] : NULL) && key(c, "platform");
    int platform = ok ? choice(c, PLATFORMS, 2) : -1;
    ok = platform >= 0 && (at == NULL || keep(c, &v[5], Py_NewRef(platforms[platform])));
    ok = ok && key(c, "process_key") && id_value(c, at ? &v[6] : NULL, 1) && key(c, "parent_process_key");
    ok = ok && (lit(c, "null") ? (at == NULL || keep(c, &v[7], Py_NewRef(Py_None))) : id_value(c, at ? &v[7] : NULL, 1));
    ok = ok && key(c, "image");
    ok = ok && (lit(c, "null") ? (at == NULL || keep(c, &v[8], Py_NewRef(Py_None)))
                               : text(c, 0, TEXT_MAX, at ? &v[8] : NULL));
    ok = ok && key(c, "payload") && payload(c, at ? &v[9] : NULL) && lit(c, "}");
    return make(c, ok, event_type, event_names, v, 10, out);
}

/* `built` (an event just made) appended to `events` (reference taken over); 0 with `c->failed` set when
   the append fails. */
static int take(Cur *c, PyObject *events, PyObject *built) {
    int failed = PyList_Append(events, built);
    Py_DECREF(built);
    if (failed) c->failed = 1;
    return !failed;
}

/* The whole record; with `events` (a list), every event built is appended to it. */
static int batch(Cur *c, Py_ssize_t max_events, PyObject *events) {
    Batch b = {NULL, 0, INT64_MAX, -1, 0};
    int64_t first, last;
    if (!lit(c, "{\"schema_version\":\"1.0\"") || !key(c, "device_id") || !device(c, &b.device, &b.device_len))
        return 0;
    if (!key(c, "first_seq") || !integer(c, 0, INT64_MAX, &first, NULL)) return 0;
    if (!key(c, "last_seq") || !integer(c, 0, INT64_MAX, &last, NULL)) return 0;
    if (!key(c, "events") || !lit(c, "[")) return 0;
    for (Py_ssize_t n = 1;; n++) {
        PyObject *built = NULL;
        if (n > max_events || !event(c, &b, events ? &built : NULL)) return 0;
        if (events != NULL && !take(c, events, built)) return 0;
        if (lit(c, "]")) break;
        if (!lit(c, ",")) return 0;
    }
    return lit(c, "}") && c->p == c->end && b.min_seq == first && b.max_seq == last;
}

/* A single-event record: one event object as msgspec writes a `FastEvent` (what `codec.encode_event`
   gives, the shape the baseline producers send), with the checks `_consistent` makes of one. */
static int single(Cur *c, Py_ssize_t max_events, PyObject *events) {
    Batch b = {NULL, 0, INT64_MAX, -1, 1};
    PyObject *built = NULL;
    if (max_events < 1 || !event(c, &b, events ? &built : NULL)) return 0;
    if (events != NULL && !take(c, events, built)) return 0;
    return c->p == c->end;
}

/* A record of either shape: an event's first key after the version is "event_id", a batch's "device_id". */
static int record(Cur *c, Py_ssize_t max_events, PyObject *events) {
    static const char head[] = "{\"schema_version\":\"1.0\",\"event_id\"";
    const size_t n = sizeof(head) - 1;
    if ((size_t)(c->end - c->p) > n && memcmp(c->p, head, n) == 0)
        return single(c, max_events, events);
    return batch(c, max_events, events);
}

static int parse_args(PyObject *const *args, Py_ssize_t nargs, const char *usage, Cur *c, Py_ssize_t *max_events) {
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    *max_events = PyLong_AsSsize_t(args[1]);
    if (*max_events == -1 && PyErr_Occurred()) return 0;
    Py_ssize_t max_chars = PyLong_AsSsize_t(args[2]);
    if (max_chars == -1 && PyErr_Occurred()) return 0;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    *c = (Cur){data, data + PyBytes_GET_SIZE(args[0]), max_chars, 0, 0};
    return 1;
}

static PyObject *proven(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Cur c;
    Py_ssize_t max_events;
    if (!parse_args(args, nargs, "proven(record: bytes, max_events: int, max_chars: int)", &c, &max_events))
        return NULL;
    return PyBool_FromLong(c.max_chars >= 0 && record(&c, max_events, NULL));
}

/* decode(record, max_events, max_chars) -> the events (a tuple) when `proven` would say yes, else None. */
static PyObject *decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Cur c;
    Py_ssize_t max_events;
    if (!parse_args(args, nargs, "decode(record: bytes, max_events: int, max_chars: int)", &c, &max_events))
        return NULL;
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "schemas._cfastcodec.configure() was not called");
        return NULL;
    }
    if (c.max_chars < 0) Py_RETURN_NONE;
    PyObject *events = PyList_New(0);
    if (events == NULL) return NULL;
    c.shared = shared_table;
    int ok = record(&c, max_events, events);
    if (!ok) {
        Py_DECREF(events);
        if (c.failed || PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *tuple = PyList_AsTuple(events);
    Py_DECREF(events);
    return tuple;
}

/* configure(event_type, {kind: payload type}, (Platform.WINDOWS, Platform.LINUX)): what `decode` builds. */
static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyType_Check(args[0]) || !PyDict_Check(args[1]) || !PyTuple_Check(args[2])
        || PyTuple_GET_SIZE(args[2]) != 2) {
        PyErr_SetString(PyExc_TypeError, "configure(event_type, {kind: type}, (windows, linux))");
        return NULL;
    }
    PyObject *types[N_KINDS];
    for (int k = 0; k < N_KINDS; k++) {
        if (strcmp(KIND_NAMES[k], KINDS[k].kind) != 0) {  /* two tables of this file that must agree */
            PyErr_SetString(PyExc_SystemError, "KIND_NAMES and KINDS disagree");
            return NULL;
        }
        types[k] = PyDict_GetItemString(args[1], KINDS[k].kind);  /* borrowed */
        if (types[k] == NULL || !PyType_Check(types[k])) {
            PyErr_Format(PyExc_ValueError, "no payload type for kind %s", KINDS[k].kind);
            return NULL;
        }
    }
    static const char *const EVENT_FIELDS[] = {"schema_version", "event_id", "device_id", "seq", "ts",
                                               "platform", "process_key", "parent_process_key", "image", "payload"};
    PyObject *names = PyTuple_New(10);
    if (names == NULL) return NULL;
    for (int i = 0; i < 10; i++) {
        PyObject *name = PyUnicode_InternFromString(EVENT_FIELDS[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    PyObject *kinds[N_KINDS] = {NULL};
    for (int k = 0; k < N_KINDS; k++) {
        if ((kinds[k] = PyTuple_New(KINDS[k].n)) == NULL) goto fail;
        for (int i = 0; i < KINDS[k].n; i++) {
            PyObject *name = PyUnicode_InternFromString(KINDS[k].fields[i].key);
            if (name == NULL) goto fail;
            PyTuple_SET_ITEM(kinds[k], i, name);
        }
    }
    if (version_str == NULL && (version_str = PyUnicode_InternFromString("1.0")) == NULL) goto fail;
    for (int i = 0; i < 5; i++)
        if (operation_strs[i] == NULL && (operation_strs[i] = PyUnicode_InternFromString(OPERATIONS[i])) == NULL) goto fail;
    for (int i = 0; i < 2; i++)
        if (protocol_strs[i] == NULL && (protocol_strs[i] = PyUnicode_InternFromString(PROTOCOLS[i])) == NULL) goto fail;
    Py_XSETREF(event_type, Py_NewRef(args[0]));
    Py_XSETREF(event_names, names);
    for (int k = 0; k < N_KINDS; k++) {
        Py_XSETREF(kind_types[k], Py_NewRef(types[k]));
        Py_XSETREF(kind_names[k], kinds[k]);
    }
    for (int i = 0; i < 2; i++) Py_XSETREF(platforms[i], Py_NewRef(PyTuple_GET_ITEM(args[2], i)));
    Py_RETURN_NONE;
fail:
    Py_DECREF(names);
    for (int k = 0; k < N_KINDS; k++) Py_XDECREF(kinds[k]);
    return NULL;
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
     "proven(record, max_events, max_chars) -> bool: the record is a batch (or a single event) exactly as "
     "msgspec writes it, "
     "valid under schemas.fastcodec's Structs and checks."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(record, max_events, max_chars) -> tuple | None: the events of a proven record, as msgspec builds them."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(event_type, {kind: payload_type}, (windows, linux)): the types decode builds."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "schemas._cfastcodec",
                                    "Proof that an events record is canonical and valid (schemas/_cfastcodec.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cfastcodec(void) {
    fill_byte_classes();
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
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
