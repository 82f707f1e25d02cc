/*
 * pipeline._cforest: the hot path of `DeviceForest.apply` (pipeline/tree.py) in C.
 *
 * Why: the tree update was ~5-6 us of CPU per event in Python, half of the whole budget that issue
 * 5's throughput goal leaves per event (BENCHMARKS.md, "Session E — compute core"). Almost every
 * event is the same case: behaviour (a file write, a registry set, a connection...) of a process
 * the forest already knows; the next are the start of a new process under a parent it knows and
 * the end of a known process (a few % of a fleet's events each, the most Python per event before). `fold` applies a run of such events
 * exactly as `DeviceForest.apply` would, and stops at the first event it does not handle itself --
 * another device's, any other process start, a script, a placeholder process, an unknown process's
 * first event other than plain behaviour with an image (`classify_fresh`: a process whose start was
 * never seen, the bulk of a recording's first minutes, is made here), a parent link to make, an image
 * to set, a duplicate seq that cannot be decided here, a full forest, anything that raised -- *before* changing anything for that event, so the caller applies it with
 * the Python `apply` (the one implementation of every rarer case) and calls `fold` again after it.
 *
 * What it does per event, in `apply`'s order: the redelivery check (seq high-water mark and
 * watermark), the event counter, the watermark, the node's recency (appended to `forest._touched`: the
 * order `_lru` is applied when something reads it, `pipeline.recency`), its last activity, its
 * connection record, then `_add_evidence` (packed `(ts_ms << 8) | code` records, lifetime counts,
 * the 1, 2, 4, 8... re-score back-off, strong and generic codes) and the notable event; a change
 * to re-score is appended to `changed` (or set as a key in it: the batcher's pending dict) as
 * `(device_id, process_key, notable)`, which is what
 * `Detector.ingest` queues, once per call for equal changes (the batcher keeps the first of equal
 * ones anyway). A start creates the node as a clone of the forest's `_blank` (what `_new_node` makes,
 * without its Python frames and off the cycle collector's lists; `blank_ready` and `clone_node` say when
 * and why) or with the forest's own `_new_node`, sets its
 * image with `set_image`, and calls the `child_codes`, `indicator_mask` and `lone_mask` `tree` names, so
 * those stay single implementations. Behaviour codes come from the same Python functions
 * (`CODES_BY_KIND`), so there is one catalogue; their answers are remembered per kind by the payload
 * fields that decide them (`tree.CODE_CACHES`, `behaviour.CODE_FIELDS`: plain values only, bounded
 * in entries and in characters), so the common event is a dict lookup, not a Python call. Within one
 * call it also remembers each kind's function and cache, while `CODES_BY_KIND` and `CODE_CACHES` keep
 * their dict version tags, and reads the strong and generic codes as bits of their frozensets
 * (`codes_of_kind`, `has_code`; docs/DESIGN-NOTES.md).
 * `tests/unit/test_tree_compiled.py`, `test_tree_compiled_starts.py` and `test_tree_code_cache.py`
 * check forests built both ways are equal field for field on generated streams (every event kind,
 * duplicates, floods, placeholders, starts).
 *
 * `rows` is the other end of the queue: at a flush, the (device_id, process_key, notable) changes
 * become the rows to score as `Detector._rows` (pipeline/detect.py) picks them -- each scorable
 * process once, plus the scorable ancestors of a notable change -- without a Python frame per queued
 * change (0.26 -> 0.11 us per event in `bench.core_replay`; tests/unit/test_detect_rows_compiled.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <structmember.h>

static PyObject *s_device_id, *s_ts, *s_timestamp, *s_seq, *s_process_key, *s_image, *s_payload, *s_kind;
static PyObject *s_parent_process_key, *s_nodes, *s_lru, *s_stats, *s_limits, *s_dedupe_by_seq;
static PyObject *s_watermark_ms, *s_seq_hwm, *s_events, *s_duplicates_dropped, *s_evidence_dropped;
static PyObject *s_started, *s_last_ms, *s_parent_key, *s_path, *s_conns, *s_evidence, *s_code_counts;
static PyObject *s_notable, *s_maxlen, *s_append, *s_move_to_end, *s_dst_ip, *s_dst_port, *s_key;
static PyObject *s_old_path, *s_value_name, *s_operation, *s_outbound, *s_signed, *s_target_image, *s_granted_access;
static PyObject *s_command_line, *s_cmd_mask, *s_sha256, *s_user, *s_pid, *s_integrity_level, *s_uid, *s_start_ms;
static PyObject *s_children, *s_set_image, *s_new_node, *s_max_nodes, *s_end_ms, *s_exited;
static PyObject *s_image_cls, *s_max_depth, *s_epoch, *s_stamp, *s_blank, *s_copy, *s_nodes_created;
static PyObject *s_max_evidence, *s_max_conns, *s_max_notable, *s_touched;
static PyObject *k_start, *k_end, *k_script, *k_network, *k_load;
static PyTypeObject *deque_type;  /* collections.deque */
static PyObject *deque_append;    /* its unbound append: no method lookup per call */

/* `target.append(value)`, straight to deque's append when it is a plain deque. */
static int push(PyObject *target, PyObject *value) {
    PyObject *r;
    if (Py_IS_TYPE(target, deque_type)) {
        PyObject *args[2] = {target, value};
        r = PyObject_Vectorcall(deque_append, args, 2, NULL);
    } else {
        r = PyObject_CallMethodOneArg(target, s_append, value);
    }
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Take a new tuple of plain values (exact str, int, bool or None) off the cycle collector's lists, as the
   collector itself does on the first collection it survives: such a tuple can be part of no cycle, and a
   young collection then has one object fewer to visit. Anything else it holds keeps it tracked. */
static void untrack_plain(PyObject *tuple) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *v = PyTuple_GET_ITEM(tuple, i);
        if (!(PyUnicode_CheckExact(v) || PyLong_CheckExact(v) || PyBool_Check(v) || v == Py_None))
            return;
    }
    if (PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
}

#include "_slots.h"  /* slot_of, get_attr, set_attr: attribute access of slotted objects */
#include "_ring.h"   /* a `Ring` of evidence records, appended to without an int object per record */

#define CODES_CACHE_ENTRIES 16384  /* per kind: emptied when full */
#define CODES_CACHE_CHARS 512      /* longer deciding strings are not cached (as behaviour._CACHED_CHARS) */
#define STAMP_LIMIT ((long long)1 << 54) /* |ts_ms| below this: ts_ms * 256 | code fits in 64 bits */

#define QUEUED_MAX 64
#define KIND_MEMO 16  /* behaviour kinds a run remembers (`codes_of_kind`): there are a dozen */
#if PY_VERSION_HEX < 0x030C0000  /* `ma_version_tag`: deprecated from 3.12, so remembered on 3.11 only */
#define DICT_VERSION(d) (((PyDictObject *)(d))->ma_version_tag)
#endif
static int deferring = 1;  /* `defer_touches` */
static int apply_touched(PyObject *lru, PyObject *touched);  /* changes remembered per call (a record holds 50 events of one device) */

/* Forest-level values held in C during a run and written back when it ends, however it ends. */
typedef struct {
    PyObject *forest, *stats;
    long long watermark, seq_hwm, events, duplicates, evidence_dropped;
    long long watermark0, seq_hwm0;
    PyObject *child_codes, *indicator_mask;  /* borrowed; NULL: every process start is Python's */
    PyObject *lone_mask;  /* borrowed (starts[3]), set whenever child_codes is */
    long long max_nodes;
    int lifecycle;  /* 0: every process start and end is Python's (a 7- or 8-argument call) */
    PyObject *epoch;         /* the forest's `epoch`, stamped on every node an event names */
    PyObject *stamped_key;   /* the last parent key whose node was stamped (a record names few parents) */
    /* The changes this call queued, by identity of node and key (held), to queue each once: `changed` only
       feeds `Detector.ingest`'s batcher, which keeps the first of equal changes, so a later equal one is
       work for nothing (a tuple made, hashed and dropped). Past QUEUED_MAX, changes are queued as they come. */
    struct { PyObject *node, *key; int notable; } queued[QUEUED_MAX];
    int n_queued;
    /* New nodes as clones of `forest._blank` (see `blank_ready`) instead of a `_new_node` call. */
    PyObject *plain_new_node;  /* borrowed: DeviceForest._new_node (starts[2]), or NULL */
    PyObject *nodes;           /* borrowed: forest.nodes */
    int clone;                 /* -1 not yet decided this call, 0 call `_new_node`, 1 clone */
    PyObject *blank;           /* held when clone == 1 */
    PyObject *lru_dict;        /* borrowed: forest._lru, which `fold` holds for the call */
    /* `forest._touched` (held) when it is an exact list: a node an event makes the most recently active is
       appended to it (`pipeline.recency` applies the order later); NULL: moved in `_lru` at once. */
    PyObject *touched;
    long long created;         /* nodes cloned: stats.nodes_created */
    /* `codes_of_kind`'s answers this call, while neither dict changed (their version tags, PEP 509; the
       entries hold their objects): two dict lookups per event become a scan of a few pointers. */
    struct { PyObject *kind, *codes_of, *cached; } kinds[KIND_MEMO];
    int n_kinds;
    uint64_t codes_version, caches_version;
    /* The int of the last event time this call made (held): a record's events often share a millisecond,
       and an event's last activity and connection record share its time. */
    PyObject *when_obj;
    long long when_val;
} Run;

/* `value` as an int (new reference), the one made for the previous call with the same value if any. */
static PyObject *when_int(Run *run, long long value) {
    if (run->when_obj == NULL || run->when_val != value) {
        PyObject *made = PyLong_FromLongLong(value);
        if (made == NULL)
            return NULL;
        Py_XSETREF(run->when_obj, made);
        run->when_val = value;
    }
    return Py_NewRef(run->when_obj);
}

/* obj.name = the event time `value` (its int through `when_int`); -1 on error. */
static inline int set_when(Run *run, PyObject *obj, PyObject *name, long long value) {
    PyObject *when = when_int(run, value);
    int rc = when == NULL ? -1 : set_attr(obj, name, when);
    Py_XDECREF(when);
    return rc;
}

static int get_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    if (small_ll(value, out)) {
        Py_DECREF(value);
        return 0;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    Py_DECREF(value);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 1;  /* not a small int: leave this to Python */
    }
    return 0;
}

static int set_ll(PyObject *obj, PyObject *name, long long value) {
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int rc = set_attr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

/* obj.name += delta, as Python adds (the counter may be any number: a restored or patched value). */
static int add_ll(PyObject *obj, PyObject *name, long long delta) {
    if (delta == 0)
        return 0;
    PyObject *value = get_attr(obj, name), *step = value == NULL ? NULL : PyLong_FromLongLong(delta);
    PyObject *sum = step == NULL ? NULL : PyNumber_Add(value, step);
    Py_XDECREF(value);
    Py_XDECREF(step);
    if (sum == NULL)
        return -1;
    int rc = set_attr(obj, name, sum);
    Py_DECREF(sum);
    return rc;
}

/* Write the run's counters back (keeps an exception raised before, if any). */
static int finish(Run *run) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc = 0;  /* each write only while none failed: no API call with an exception set */
    if (run->watermark != run->watermark0)
        rc = set_ll(run->forest, s_watermark_ms, run->watermark);
    if (rc == 0 && run->seq_hwm != run->seq_hwm0)
        rc = set_ll(run->forest, s_seq_hwm, run->seq_hwm);
    if (rc == 0)
        rc = add_ll(run->stats, s_events, run->events);
    if (rc == 0)
        rc = add_ll(run->stats, s_duplicates_dropped, run->duplicates);
    if (rc == 0)
        rc = add_ll(run->stats, s_evidence_dropped, run->evidence_dropped);
    if (rc == 0)
        rc = add_ll(run->stats, s_nodes_created, run->created);
    if (type != NULL) {
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return rc ? -1 : 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* Seconds since the epoch as `datetime.timestamp()` returns them, for a UTC datetime: CPython divides
   the exact microsecond count (an int) by 10**6, and below 2**53 that true division is one correctly
   rounded double division. Anything else (another zone, a naive time, a subclass): 1, ask Python. */
static int utc_seconds(PyObject *ts, double *out) {
    if (!PyDateTime_CheckExact(ts) || !_PyDateTime_HAS_TZINFO(ts) ||
        PyDateTime_DATE_GET_TZINFO(ts) != PyDateTime_TimeZone_UTC)
        return 1;
    long long days = days_from_civil(PyDateTime_GET_YEAR(ts), PyDateTime_GET_MONTH(ts), PyDateTime_GET_DAY(ts));
    long long us = ((days * 86400 + PyDateTime_DATE_GET_HOUR(ts) * 3600 + PyDateTime_DATE_GET_MINUTE(ts) * 60 +
                     PyDateTime_DATE_GET_SECOND(ts)) * 1000000LL) + PyDateTime_DATE_GET_MICROSECOND(ts);
    if (us <= -(1LL << 53) || us >= (1LL << 53))
        return 1;
    *out = (double)us / 1e6;
    return 0;
}

/* The event's time in ms as `int(event.ts.timestamp() * 1000)`; 1 when Python must decide. */
static int event_ms(PyObject *event, long long *out) {
    PyObject *ts = get_attr(event, s_ts);
    if (ts == NULL)
        return -1;
    double seconds;
    if (utc_seconds(ts, &seconds) != 0) {
        PyObject *value = PyObject_CallMethodNoArgs(ts, s_timestamp);
        seconds = value == NULL ? -1.0 : PyFloat_AsDouble(value);
        Py_XDECREF(value);
    }
    Py_DECREF(ts);
    if (PyErr_Occurred())
        return -1;
    double ms = seconds * 1000.0;
    if (!(ms > -(double)STAMP_LIMIT && ms < (double)STAMP_LIMIT))
        return 1;
    *out = (long long)ms;  /* truncation toward zero, as int() does */
    return 0;
}

/* `value == name` for one of the module's interned names: by identity when `value` is an interned str
   too (two interned strs are equal only when they are the same object; the event kinds are class
   attributes written as literals, so interned), else as Python compares. */
static int same_str(PyObject *value, PyObject *name) {
    if (value == name)
        return 1;
    if (PyUnicode_CheckExact(value) && PyUnicode_CHECK_INTERNED(value))
        return 0;
    return PyObject_RichCompareBool(value, name, Py_EQ);
}

static int truthy_attr(PyObject *obj, PyObject *name) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    /* the common values read without a call: an exact str (an image), a bool, None */
    int rc = PyUnicode_CheckExact(value) ? PyUnicode_GET_LENGTH(value) != 0
             : value == Py_True ? 1 : value == Py_False || value == Py_None ? 0 : PyObject_IsTrue(value);
    Py_DECREF(value);
    return rc;
}

static int is_none_attr(PyObject *obj, PyObject *name) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    int rc = value == Py_None;
    Py_DECREF(value);
    return rc;
}

/* What one handled event needs once it is known to be ours. */
typedef struct {
    PyObject *event, *key, *node, *payload, *codes, *ip, *port, *named;  /* named: its parent key, or None */
    long long when, seq, last;  /* event time, its seq, the node's last activity */
    PyObject *parent, *mask;    /* a process start: the known parent, the command line's indicator bits */
    int lone;                   /* a process start whose line shows only lone-command indicators (kept as evidence) */
    int end;                    /* a process end of a known process */
    int fresh;                  /* the first event of a process the forest does not know: its node is made */
} Item;

static void drop_item(Item *it) {
    Py_CLEAR(it->key);
    Py_CLEAR(it->named);
    Py_CLEAR(it->node);
    Py_CLEAR(it->payload);
    Py_CLEAR(it->codes);
    Py_CLEAR(it->ip);
    Py_CLEAR(it->port);
    Py_CLEAR(it->parent);
    Py_CLEAR(it->mask);
}

/* `node.stamp = forest.epoch` (what `DeviceForest.apply` does for every node an event names), skipped
   when the slot already holds that very object. */
static int stamp(Run *run, PyObject *node) {
    const SlotCache c = slot_of(Py_TYPE(node), s_stamp);
    if (c.offset >= 0 && c.writable && *(PyObject **)((char *)node + c.offset) == run->epoch)
        return 0;
    return set_attr(node, s_stamp, run->epoch);
}

/* Stamp the node under `key` (an event's process or parent key) if the forest holds one. The last parent
   key stamped is remembered by identity: the fold never removes a node or moves the epoch, so its node is
   still the one stamped. */
static int stamp_key(Run *run, PyObject *nodes, PyObject *key, int parent) {
    if (key == Py_None || (parent && key == run->stamped_key))
        return 0;
    PyObject *node = PyDict_GetItemWithError(nodes, key);  /* borrowed */
    if (node == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(node);
    int rc = stamp(run, node);
    Py_DECREF(node);
    if (rc == 0 && parent)
        Py_XSETREF(run->stamped_key, Py_NewRef(key));
    return rc;
}

static int same_str(PyObject *value, PyObject *name);

/* A redelivered duplicate: dropped, but the nodes it names are stamped as `apply` stamps them (a
   process_start's node, its parent key's node and the parent its node has). */
static int stamp_duplicate(Run *run, PyObject *nodes, PyObject *event) {
    PyObject *named = get_attr(event, s_parent_process_key);
    int rc = named == NULL ? -1 : stamp_key(run, nodes, named, 1);
    Py_XDECREF(named);
    PyObject *key = rc < 0 ? NULL : get_attr(event, s_process_key);
    PyObject *node = key == NULL ? NULL : PyDict_GetItemWithError(nodes, key);  /* borrowed */
    Py_XDECREF(key);
    if (node == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(node);
    PyObject *payload = NULL, *kind = NULL, *parent = NULL;
    rc = stamp(run, node);
    if (rc == 0)
        rc = (payload = get_attr(event, s_payload)) == NULL || (kind = get_attr(payload, s_kind)) == NULL ? -1 : 0;
    int start = rc < 0 ? -1 : same_str(kind, k_start);
    if (start > 0)
        rc = (parent = get_attr(node, s_parent_key)) == NULL ? -1 : stamp_key(run, nodes, parent, 0);
    Py_DECREF(node);
    Py_XDECREF(payload);
    Py_XDECREF(kind);
    Py_XDECREF(parent);
    return start < 0 ? -1 : rc;
}

static int classify_start(Run *run, PyObject *nodes, Item *it);
static int classify_fresh(Run *run, PyObject *nodes, PyObject *codes_by_kind, PyObject *caches, Item *it);
static int valid_codes(PyObject *codes);
static int blank_ready(Run *run);
static PyObject *clone_node(Run *run, PyObject *key);

static int classify_payload(Item *it, PyObject *codes_of, PyObject *cached, int load, int network);

/* Which of the kinds the fold tells apart a payload's `kind` is (an interned str compares by pointer). */
typedef struct { int start, end, script, network, load; } KindFlags;

static inline int kind_flags(PyObject *kind, KindFlags *f) {
    f->start = same_str(kind, k_start), f->end = same_str(kind, k_end), f->script = same_str(kind, k_script);
    f->network = same_str(kind, k_network), f->load = same_str(kind, k_load);
    return f->start < 0 || f->end < 0 || f->script < 0 || f->network < 0 || f->load < 0 ? -1 : 0;
}

/* Release what `codes_of_kind` remembered this call. */
static void forget_kinds(Run *run) {
    while (run->n_kinds > 0) {
        run->n_kinds--;
        Py_CLEAR(run->kinds[run->n_kinds].kind);
        Py_CLEAR(run->kinds[run->n_kinds].codes_of);
        Py_CLEAR(run->kinds[run->n_kinds].cached);
    }
}

/* The codes function of a behaviour `kind` (`CODES_BY_KIND`) and its answers' cache (`CODE_CACHES`, or
   NULL), as new references: held, since the attribute reads after this can run code that changes the
   dicts. 0 found, 1 a kind the fold does not code (Python's), -1 error. */
static int codes_of_kind(Run *run, PyObject *codes_by_kind, PyObject *caches, PyObject *kind, PyObject **codes_of,
                         PyObject **cached) {
#ifdef DICT_VERSION
    /* Remembered answers hold while both dicts are unchanged (exact dicts: a subclass may answer otherwise). */
    const int memo = PyDict_CheckExact(codes_by_kind) && (caches == NULL || PyDict_CheckExact(caches));
    if (memo) {
        const uint64_t codes_version = DICT_VERSION(codes_by_kind), caches_version = caches ? DICT_VERSION(caches) : 0;
        if (run->n_kinds && (codes_version != run->codes_version || caches_version != run->caches_version))
            forget_kinds(run);  /* may free the old objects: their dicts let go of them */
        run->codes_version = codes_version, run->caches_version = caches_version;
        for (int k = 0; k < run->n_kinds; k++)
            if (run->kinds[k].kind == kind) {
                *codes_of = Py_NewRef(run->kinds[k].codes_of);
                *cached = Py_XNewRef(run->kinds[k].cached);
                return 0;
            }
    }
#endif
    *codes_of = PyDict_GetItemWithError(codes_by_kind, kind);
    int rc = *codes_of == NULL ? (PyErr_Occurred() ? -1 : 1) : 0;
    if (rc == 0 && caches != NULL && (*cached = PyDict_GetItemWithError(caches, kind)) == NULL && PyErr_Occurred())
        rc = -1;
    Py_XINCREF(*codes_of);
    Py_XINCREF(*cached);
#ifdef DICT_VERSION
    /* Remembered only when looking up ran no code (str keys, whose hash and == run none): the tags read
       above still describe the dicts these answers came from. */
    if (rc == 0 && memo && run->n_kinds < KIND_MEMO && PyUnicode_CheckExact(kind) &&
        DICT_VERSION(codes_by_kind) == run->codes_version && (caches == NULL || DICT_VERSION(caches) == run->caches_version)) {
        run->kinds[run->n_kinds].kind = Py_NewRef(kind);
        run->kinds[run->n_kinds].codes_of = Py_NewRef(*codes_of);
        run->kinds[run->n_kinds].cached = Py_XNewRef(*cached);
        run->n_kinds++;
    }
#endif
    return rc;
}

/* 0: ours (it filled), 1: Python's (nothing changed), 2: a redelivered duplicate, -1: error. */
static int classify(Run *run, PyObject *nodes, PyObject *device_id, PyObject *codes_by_kind, PyObject *caches,
                    int dedupe, PyObject *event, Item *it) {
    memset(it, 0, sizeof(*it));
    it->event = event;
    PyObject *device = get_attr(event, s_device_id);
    if (device == NULL)
        return -1;
    int same = PyObject_RichCompareBool(device, device_id, Py_EQ);
    Py_DECREF(device);
    if (same <= 0)
        return same < 0 ? -1 : 1;
    int rc = event_ms(event, &it->when);
    if (rc != 0)
        return rc;
    if (dedupe) {
        if ((rc = get_ll(event, s_seq, &it->seq)) != 0)
            return rc;
        if (it->seq <= run->seq_hwm && it->when <= run->watermark)
            return stamp_duplicate(run, nodes, event) < 0 ? -1 : 2;
    }
    it->key = get_attr(event, s_process_key);
    if (it->key == NULL)
        return -1;
    it->node = PyDict_GetItemWithError(nodes, it->key);
    if (it->node == NULL) {
        if (PyErr_Occurred())
            return -1;
        if (run->child_codes == NULL)
            return 1;
        rc = classify_start(run, nodes, it);
        return rc != 1 || it->payload == NULL ? rc : classify_fresh(run, nodes, codes_by_kind, caches, it);
    }
    Py_INCREF(it->node);
    if ((rc = get_ll(it->node, s_last_ms, &it->last)) != 0)
        return rc;
    /* `started` only when there is no image, as `apply` reads them: it lies in the node's last cache line
       (slots are laid out by name), which the common event then does not touch. */
    int has_image = truthy_attr(it->node, s_image);
    if (has_image < 0)
        return -1;
    if (!has_image) {  /* a placeholder to fill, or an image to set: Python's */
        int started = truthy_attr(it->node, s_started);
        if (started < 0)
            return -1;
        int event_image = truthy_attr(event, s_image);
        if (event_image != 0 || !started)
            return event_image < 0 ? -1 : 1;
    }
    if ((it->named = get_attr(event, s_parent_process_key)) == NULL)
        return -1;
    if (it->named != Py_None) {
        int unlinked = is_none_attr(it->node, s_parent_key);
        if (unlinked != 0)
            return unlinked < 0 ? -1 : 1;
    }
    it->payload = get_attr(event, s_payload);
    if (it->payload == NULL)
        return -1;
    PyObject *kind = get_attr(it->payload, s_kind);
    if (kind == NULL)
        return -1;
    rc = 1;
    PyObject *codes_of = NULL, *cached = NULL;
    KindFlags f;
    if (kind_flags(kind, &f) < 0) {
        rc = -1;
    } else if (f.end && run->lifecycle) {
        rc = 0, it->end = 1;
    } else if (!(f.start || f.end || f.script)) {
        rc = codes_of_kind(run, codes_by_kind, caches, kind, &codes_of, &cached);
    }
    Py_DECREF(kind);
    if (rc == 0 && !it->end)
        rc = classify_payload(it, codes_of, cached, f.load, f.network);
    Py_XDECREF(codes_of);
    Py_XDECREF(cached);
    return rc;
}

/* A process start the fold applies itself: a new process (its key unknown) under a parent the forest
   holds, with room for one more node, whose child codes and command-line bits are plain. What
   `apply` and `_start` do for it then needs no flood eviction, no placeholder and no cycle check.
   0 ours (it->parent, it->codes, it->mask and it->lone filled), 1 Python's, -1 error; nothing changed either
   way. */
static int classify_start(Run *run, PyObject *nodes, Item *it) {
    if (PyDict_GET_SIZE(nodes) >= run->max_nodes)
        return 1;
    it->payload = get_attr(it->event, s_payload);
    PyObject *kind = it->payload == NULL ? NULL : get_attr(it->payload, s_kind);
    if (kind == NULL)
        return -1;
    int start = PyObject_RichCompareBool(kind, k_start, Py_EQ);
    Py_DECREF(kind);
    if (start <= 0)
        return start < 0 ? -1 : 1;
    PyObject *parent_key = get_attr(it->event, s_parent_process_key);
    if (parent_key == NULL)
        return -1;
    it->parent = parent_key == Py_None ? NULL : PyDict_GetItemWithError(nodes, parent_key);
    Py_DECREF(parent_key);
    if (it->parent == NULL)
        return PyErr_Occurred() ? -1 : 1;
    Py_INCREF(it->parent);
    int rc = get_ll(it->parent, s_last_ms, &it->last);
    if (rc != 0)
        return rc;
    PyObject *image = get_attr(it->payload, s_image), *command_line = get_attr(it->payload, s_command_line);
    if (image != NULL && command_line != NULL) {  /* pure functions: called before anything changes */
        it->codes = PyObject_CallOneArg(run->child_codes, image);
        it->mask = it->codes == NULL ? NULL : PyObject_CallOneArg(run->indicator_mask, command_line);
    }
    Py_XDECREF(image);
    int plain = it->mask != NULL && PyLong_CheckExact(it->mask) && valid_codes(it->codes);
    if (plain && !PyObject_IsTrue(it->mask)) {  /* `_start`'s evidence rule: a lone-command line is kept */
        PyObject *lone = PyObject_CallOneArg(run->lone_mask, command_line);
        plain = lone != NULL && PyLong_CheckExact(lone);
        it->lone = plain && PyObject_IsTrue(lone);  /* an exact int: cannot fail */
        Py_XDECREF(lone);
    }
    Py_XDECREF(command_line);
    if (!plain) {
        PyErr_Clear();  /* Python's apply meets the same error or value, and decides */
        return 1;
    }
    return 0;
}

/* payload.name: by slot when `name` is one of the module's own interned names (the slot cache keys
   on the name's address, so only names that live as long as the module may enter it), else generic. */
static PyObject *field_of(PyObject *payload, PyObject *name) {
    PyObject *known[] = {s_path, s_old_path, s_key, s_value_name, s_operation, s_outbound, s_dst_ip, s_dst_port,
                         s_signed, s_target_image, s_granted_access};
    for (size_t n = 0; n < sizeof(known) / sizeof(known[0]); n++)
        if (name == known[n])
            return get_attr(payload, name);
    return PyObject_GetAttr(payload, name);
}

/* A deciding value that may key the cache: an exact str (counted in `chars`), None, a bool, or an exact
   int other than 0 and 1 (which equal False and True as keys, and a classifier may tell them apart). */
static int keyable(PyObject *value, Py_ssize_t *chars) {
    if (PyUnicode_CheckExact(value)) {
        *chars += PyUnicode_GET_LENGTH(value);
        return *chars <= CODES_CACHE_CHARS;
    }
    if (value == Py_None || PyBool_Check(value))
        return 1;
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow = 0;
    long small = PyLong_AsLongAndOverflow(value, &overflow);
    return overflow != 0 || (small != 0 && small != 1);  /* cannot fail: an exact int */
}

/* Key tuples of 2..SCRATCH_MAX fields to look the cache up with, reused: a hit (nearly every event)
   then allocates nothing. Only exact str/int/bool/None go in (their hash and == run no Python code, so no
   one else can see or keep the tuple while it is filled); `own_key` turns it into a tuple of its own
   before anything may keep it or run Python. */
#define SCRATCH_MAX 4
static PyObject *scratch[SCRATCH_MAX + 1];

/* Empty a scratch key (its items released). */
static void release_key(PyObject *key) {
    for (Py_ssize_t f = 0; f < PyTuple_GET_SIZE(key); f++)
        Py_CLEAR(PyTuple_GET_ITEM(key, f));
}

/* The key as an object of its own (new reference): a scratch key's items move into a new tuple. */
static PyObject *own_key(PyObject *key) {
    Py_ssize_t n = PyTuple_CheckExact(key) ? PyTuple_GET_SIZE(key) : 0;
    if (n < 2 || n > SCRATCH_MAX || key != scratch[n])
        return key;
    PyObject *owned = PyTuple_New(n);
    if (owned == NULL) {
        release_key(key);
        return NULL;
    }
    for (Py_ssize_t f = 0; f < n; f++) {
        PyTuple_SET_ITEM(owned, f, PyTuple_GET_ITEM(key, f));
        PyTuple_SET_ITEM(key, f, NULL);
    }
    Py_DECREF(key);  /* the reference `cache_key` handed out; the module keeps its own */
    return owned;
}

/* Done with a key `cache_key` returned. */
static void drop_key(PyObject *key) {
    Py_ssize_t n = key != NULL && PyTuple_CheckExact(key) ? PyTuple_GET_SIZE(key) : 0;
    if (n >= 2 && n <= SCRATCH_MAX && key == scratch[n])
        release_key(key);
    Py_XDECREF(key);
}

/* The cache key of a payload: its one deciding field's value, or a tuple of its fields' values (a
   scratch tuple when one is free: see `own_key`). NULL, no error set, when one is not `keyable` (then
   only the classifier decides); NULL with an error set when reading a field raised. */
static PyObject *cache_key(PyObject *payload, PyObject *fields) {
    Py_ssize_t n = PyTuple_GET_SIZE(fields), chars = 0;
    PyObject *key = NULL;
    if (n >= 2 && n <= SCRATCH_MAX && scratch[n] != NULL && Py_REFCNT(scratch[n]) == 1)
        key = Py_NewRef(scratch[n]);  /* free: only the module holds it */
    else if (n != 1 && (key = PyTuple_New(n)) == NULL)
        return NULL;
    for (Py_ssize_t f = 0; f < n; f++) {
        PyObject *value = field_of(payload, PyTuple_GET_ITEM(fields, f));
        if (value == NULL || !keyable(value, &chars)) {
            Py_XDECREF(value);
            drop_key(key);
            return NULL;
        }
        if (n == 1)
            return value;
        PyTuple_SET_ITEM(key, f, value);
    }
    return key;
}

/* 1 when `codes` is a tuple of ints in 0..255 (what the fold packs), else 0 (no error left set). */
static int valid_codes(PyObject *codes) {
    if (!PyTuple_Check(codes))
        return 0;
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(codes); c++) {
        PyObject *item = PyTuple_GET_ITEM(codes, c);  /* an int (no __index__ to call), 0..255 */
        long code = PyLong_Check(item) ? PyLong_AsLong(item) : -1;
        if (code < 0 || code > 255) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* `codes_of(payload)`, through the kind's cache when `cached` is `(codes_of, fields, cache)` for this
   very function: a hit is one dict lookup instead of a Python call. A miss calls the classifier and
   keeps a valid answer; a full cache is emptied first (bounded however many strings a device sends). */
static PyObject *codes_for(PyObject *payload, PyObject *codes_of, PyObject *cached) {
    PyObject *cache = NULL, *key = NULL, *codes;
    if (cached != NULL && PyTuple_CheckExact(cached) && PyTuple_GET_SIZE(cached) == 3 &&
        PyTuple_GET_ITEM(cached, 0) == codes_of && PyTuple_CheckExact(PyTuple_GET_ITEM(cached, 1)) &&
        PyDict_CheckExact(PyTuple_GET_ITEM(cached, 2))) {
        cache = PyTuple_GET_ITEM(cached, 2);
        if ((key = cache_key(payload, PyTuple_GET_ITEM(cached, 1))) != NULL) {
            codes = PyDict_GetItemWithError(cache, key);  /* exact str/int/bool/None keys: no Python runs */
            if (codes != NULL) {
                drop_key(key);
                Py_INCREF(codes);
                return codes;
            }
            key = PyErr_Occurred() ? (drop_key(key), NULL) : own_key(key);  /* kept below, and Python runs */
        }
        PyErr_Clear();  /* a field that raised: the classifier reads it too and decides */
    }
    codes = PyObject_CallOneArg(codes_of, payload);
    if (codes != NULL && key != NULL && valid_codes(codes)) {
        if (PyDict_GET_SIZE(cache) >= CODES_CACHE_ENTRIES)
            PyDict_Clear(cache);
        if (PyDict_SetItem(cache, key, codes) < 0)
            PyErr_Clear();
    }
    Py_XDECREF(key);
    return codes;
}

/* The rest of `classify` once the kind has its codes function: 0 ours, 1 Python's, -1 error. */
static int classify_payload(Item *it, PyObject *codes_of, PyObject *cached, int load, int network) {
    if (load) {  /* the process's own image: its signer is recorded, Python's */
        PyObject *path = get_attr(it->payload, s_path), *image = get_attr(it->node, s_image);
        int own = path == NULL || image == NULL ? -1 : PyObject_RichCompareBool(path, image, Py_EQ);
        Py_XDECREF(path);
        Py_XDECREF(image);
        if (own != 0)
            return own < 0 ? -1 : 1;
    }
    if (network) {
        it->ip = get_attr(it->payload, s_dst_ip);
        it->port = it->ip == NULL ? NULL : get_attr(it->payload, s_dst_port);
        if (it->port == NULL)
            return -1;
    }
    it->codes = codes_for(it->payload, codes_of, cached);
    if (it->codes == NULL || !valid_codes(it->codes)) {
        PyErr_Clear();  /* Python's apply calls it again and raises the same error */
        return 1;
    }
    return 0;
}

/* The first event of a process the forest does not know that is not its start (a process started before
   the agent, the log or the worker's state began: most of a lab recording's first minutes), which
   `apply` makes a node for (`_new_node`), gives the event's image (`set_image`) and then applies as
   behaviour of a known process. Ours when `classify_start` left it (not a start it takes: `it->payload`
   read, nothing else), there is room for one more node, the event names an image (without one the node
   would be a placeholder to fill later) and no parent (a link to make), and its kind is one whose codes
   the fold reads, other than the process's own image load (its signer is recorded) -- a behaviour
   `classify` would take for a known process. 0 ours (it->fresh, it->codes and the rest filled; it->node
   stays NULL until `make_fresh`), 1 Python's, -1 error; nothing changed either way. */
static int classify_fresh(Run *run, PyObject *nodes, PyObject *codes_by_kind, PyObject *caches, Item *it) {
    if (PyDict_GET_SIZE(nodes) >= run->max_nodes)
        return 1;
    PyObject *image = get_attr(it->event, s_image);
    if (image == NULL)
        return -1;
    int named = PyUnicode_CheckExact(image) && PyUnicode_GET_LENGTH(image) > 0;
    if (!named) {  /* no image (a placeholder), or not a plain str: Python's */
        Py_DECREF(image);
        return 1;
    }
    if ((it->named = get_attr(it->event, s_parent_process_key)) == NULL || it->named != Py_None) {
        Py_DECREF(image);
        return it->named == NULL ? -1 : 1;
    }
    PyObject *kind = get_attr(it->payload, s_kind);
    if (kind == NULL) {
        Py_DECREF(image);
        return -1;
    }
    KindFlags f;
    int rc = kind_flags(kind, &f) < 0 ? -1 : f.start || f.end || f.script ? 1 : 0;
    PyObject *codes_of = NULL, *cached = NULL;
    if (rc == 0)
        rc = codes_of_kind(run, codes_by_kind, caches, kind, &codes_of, &cached);
    Py_DECREF(kind);
    if (rc == 0 && f.load) {  /* its own image: Python's (as `classify_payload` decides for a known node) */
        PyObject *path = get_attr(it->payload, s_path);
        int own = path == NULL ? -1 : PyObject_RichCompareBool(path, image, Py_EQ);
        Py_XDECREF(path);
        rc = own != 0 ? (own < 0 ? -1 : 1) : 0;
    }
    Py_DECREF(image);
    if (rc == 0)
        rc = classify_payload(it, codes_of, cached, 0, f.network);
    Py_XDECREF(codes_of);
    Py_XDECREF(cached);
    it->fresh = rc == 0;
    return rc;
}

/* The node of an event `classify_fresh` took: `_new_node(key)` with room to spare (a clone of the blank, or
   the forest's own call), most recently active and counted as created, then `set_image(event.image)`;
   it->node and it->last (the new node's last activity) filled. -1 on error. */
static int make_fresh(Run *run, Item *it) {
    int clone = blank_ready(run);
    if (clone < 0)
        return -1;
    it->node = clone ? clone_node(run, it->key) : PyObject_CallMethodOneArg(run->forest, s_new_node, it->key);
    if (it->node == NULL)
        return -1;
    PyObject *image = get_attr(it->event, s_image);
    PyObject *r = image == NULL ? NULL : PyObject_CallMethodOneArg(it->node, s_set_image, image);
    Py_XDECREF(image);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    int rc = get_ll(it->node, s_last_ms, &it->last);
    if (rc > 0)
        PyErr_SetString(PyExc_TypeError, "a new node's last_ms must be a small int");
    return rc == 0 ? 0 : -1;
}

static int append_to(PyObject *obj, PyObject *name, PyObject *value) {
    PyObject *target = get_attr(obj, name);
    if (target == NULL)
        return -1;
    int rc = push(target, value);
    Py_DECREF(target);
    return rc;
}

/* Membership of a code (0..255) in `behaviour.STRONG_CODES` / `GENERIC_CODES`, asked once or twice per
   event: as bits of the frozenset, read once per set object (a frozenset cannot change; the entry holds
   it, so its address is not reused). A set that is not an exact frozenset of ints 0..255 is asked as
   Python asks it (`code in codes`). */
typedef struct {
    PyObject *set;     /* held; NULL: empty entry */
    int usable;        /* every item an exact int 0..255: `bits` answers for it */
    uint64_t bits[4];
} CodeBits;
static CodeBits code_bits[2];

/* The entry of `set` (filled on first sight), as a copy: 0 when `set` is not an exact frozenset. The
   replaced entry's set is released last, as `_slots.h` releases a type: its items' finalisers may run
   code that looks up (and refills) this cache. */
static int bits_of(PyObject *set, CodeBits *out) {
    for (int e = 0; e < 2; e++)
        if (code_bits[e].set == set) {
            *out = code_bits[e];
            return 1;
        }
    if (!PyFrozenSet_CheckExact(set))
        return 0;
    CodeBits *entry = code_bits[0].set == NULL ? &code_bits[0] : &code_bits[1];  /* else replaces the second */
    PyObject *old = entry->set;
    entry->set = Py_NewRef(set), entry->usable = 1;
    memset(entry->bits, 0, sizeof(entry->bits));
    Py_ssize_t pos = 0;
    PyObject *item;
    Py_hash_t hash;
    while (_PySet_NextEntry(set, &pos, &item, &hash)) {  /* borrowed items of an immutable set */
        long value = PyLong_Check(item) ? PyLong_AsLong(item) : -1;  /* an int subclass (IntEnum) runs no code */
        if (value < 0 || value > 255) {
            PyErr_Clear();
            entry->usable = 0;
            break;
        }
        entry->bits[value >> 6] |= 1ull << (value & 63);
    }
    *out = *entry;
    Py_XDECREF(old);
    return 1;
}

/* `code in codes` for a code 0..255 (`valid_codes`): 1, 0, or -1 with an error set. */
static int has_code(PyObject *codes, PyObject *code, long value) {
    CodeBits b;
    if (bits_of(codes, &b) && b.usable)
        return (int)(b.bits[value >> 6] >> (value & 63) & 1);
    return PySet_Contains(codes, code);
}

/* `_add_evidence`: returns bit 1 re-score, bit 2 notable; -1 on error. */
static int add_evidence(Run *run, PyObject *node, long long when, PyObject *codes, PyObject *strong,
                        PyObject *generic) {
    PyObject *evidence = get_attr(node, s_evidence), *counts = get_attr(node, s_code_counts);
    /* A plain deque: what its appends dropped is counted after them, from its length (a deque never holds
       more than its maxlen, so held + n - held after = max(0, held + n - maxlen), capped at n, as
       `_add_evidence` counts it), without reading `maxlen` through the generic attribute lookup. */
    const int ring = evidence != NULL && is_ring(evidence);  /* each append's drop counted as it is made */
    const int plain = evidence != NULL && Py_IS_TYPE(evidence, deque_type);
    PyObject *maxlen = evidence == NULL ? NULL : plain || ring ? Py_NewRef(Py_None) : get_attr(evidence, s_maxlen);
    int rc = -1, rescore = 0, notable = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(codes), held_before = plain ? PyObject_Length(evidence) : 0;
    if (maxlen == NULL || counts == NULL || held_before < 0)
        goto done;
    if (!PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "ProcessNode.code_counts must be a dict");
        goto done;
    }
    if (maxlen != Py_None) {
        Py_ssize_t cap = PyLong_AsSsize_t(maxlen), held = PyObject_Length(evidence);
        if ((cap == -1 || held == -1) && PyErr_Occurred())
            goto done;
        Py_ssize_t overflow = held + n - cap;
        if (overflow > 0)
            run->evidence_dropped += overflow < n ? overflow : n;
    }
    for (Py_ssize_t c = 0; c < n; c++) {
        PyObject *code = PyTuple_GET_ITEM(codes, c);
        const long value = PyLong_AsLong(code);  /* 0..255: `valid_codes` */
        const long long record = when * 256 | value;
        if (ring) {
            int dropped = ring_push((RingObject *)evidence, record);
            if (dropped < 0)
                goto done;
            run->evidence_dropped += dropped;
        } else {
            PyObject *packed = PyLong_FromLongLong(record);
            if (packed == NULL)
                goto done;
            int pushed = push(evidence, packed);
            Py_DECREF(packed);
            if (pushed < 0)
                goto done;
        }
        /* an exact dict keyed by the code's int: its hash is computed once for the get and the set */
        const Py_hash_t hash = PyDict_CheckExact(counts) ? PyObject_Hash(code) : -1;
        if (hash == -1 && PyErr_Occurred())
            goto done;
        PyObject *held = hash != -1 ? _PyDict_GetItem_KnownHash(counts, code, hash) : PyDict_GetItemWithError(counts, code);
        long long seen = 1;
        if (held != NULL) {
            if (!small_ll(held, &seen))
                seen = PyLong_AsLongLong(held);
            if (seen == -1 && PyErr_Occurred())
                goto done;
            if (seen == LLONG_MAX) {
                PyErr_SetString(PyExc_OverflowError, "ProcessNode.code_counts: a count past 2**63");
                goto done;
            }
            seen++;
        } else if (PyErr_Occurred()) {
            goto done;
        }
        PyObject *count = PyLong_FromLongLong(seen);
        if (count == NULL || (hash != -1 ? _PyDict_SetItem_KnownHash(counts, code, count, hash)
                                         : PyDict_SetItem(counts, code, count)) < 0) {
            Py_XDECREF(count);
            goto done;
        }
        Py_DECREF(count);
        int is_strong = has_code(strong, code, value);
        if (is_strong < 0)
            goto done;
        if (is_strong) {
            rescore = notable = 1;
        } else if ((seen & (seen - 1)) == 0) {
            rescore = 1;
            if (seen == 1) {
                int is_generic = has_code(generic, code, value);
                if (is_generic < 0)
                    goto done;
                notable |= !is_generic;
            }
        }
    }
    if (plain) {
        Py_ssize_t held_after = PyObject_Length(evidence);
        if (held_after < 0)
            goto done;
        run->evidence_dropped += held_before + n - held_after;
    }
    rc = rescore | notable << 1;
done:
    Py_XDECREF(evidence);
    Py_XDECREF(counts);
    Py_XDECREF(maxlen);
    return rc;
}

static int queue(Run *run, PyObject *changed, PyObject *device_id, PyObject *node, PyObject *key, int notable);

/* `node` (under `key`) is now the most recently active: appended to `forest._touched`, as `apply` does,
   or, for a forest without that list, moved to the end of `_lru` (`lru`: its bound move_to_end). */
static int touch(Run *run, PyObject *lru, PyObject *node, PyObject *key) {
    if (run->touched != NULL)
        return PyList_Append(run->touched, node);
    PyObject *r = PyObject_CallOneArg(lru, key);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* `_behaviour` for a process end: its end time, the forest's exit order, re-score it (not notable). */
static int apply_end(Run *run, PyObject *device_id, PyObject *changed, Item *it) {
    PyObject *exited = NULL, *key = NULL;
    int rc = set_when(run, it->node, s_end_ms, it->when);
    if (rc == 0)
        rc = (exited = get_attr(run->forest, s_exited)) == NULL || (key = get_attr(it->node, s_key)) == NULL ? -1 : 0;
    if (rc == 0)
        rc = PyObject_SetItem(exited, key, Py_None);
    if (rc == 0)
        rc = queue(run, changed, device_id, it->node, key, 0);
    Py_XDECREF(exited);
    Py_XDECREF(key);
    return rc;
}

/* Apply one classified event (the part of `apply` after the checks); -1 on error. */
static int apply_item(Run *run, PyObject *lru, PyObject *device_id, PyObject *changed, PyObject *strong,
                      PyObject *generic, int dedupe, Item *it) {
    if (dedupe)
        run->seq_hwm = it->seq;  /* not a duplicate, so seq or time is new: apply sets it */
    run->events++;
    if (it->when > run->watermark)
        run->watermark = it->when;
    if (it->fresh ? make_fresh(run, it) < 0 : touch(run, lru, it->node, it->key) < 0)
        return -1;  /* a new node is made the most recently active by `_new_node` */
    if (it->when > it->last && set_when(run, it->node, s_last_ms, it->when) < 0)
        return -1;
    if (it->end)
        return apply_end(run, device_id, changed, it);
    if (it->ip != NULL) {
        PyObject *when = when_int(run, it->when);  /* (when, ip, port), made directly: no format to parse */
        PyObject *record = when == NULL ? NULL : PyTuple_Pack(3, when, it->ip, it->port);
        Py_XDECREF(when);
        if (record != NULL)
            untrack_plain(record);
        if (record == NULL || append_to(it->node, s_conns, record) < 0) {
            Py_XDECREF(record);
            return -1;
        }
        Py_DECREF(record);
    }
    if (PyTuple_GET_SIZE(it->codes) == 0)
        return 0;
    int flags = add_evidence(run, it->node, it->when, it->codes, strong, generic);
    if (flags < 0)
        return -1;
    if (flags & 2 && append_to(it->node, s_notable, it->event) < 0)
        return -1;
    if (!(flags & 1))
        return 0;
    PyObject *key = get_attr(it->node, s_key);
    if (key == NULL)
        return -1;
    int rc = queue(run, changed, device_id, it->node, key, flags & 2);
    Py_DECREF(key);
    return rc;
}

/* node.name = payload.name; -1 on error. */
static int copy_attr(PyObject *node, PyObject *payload, PyObject *name) {
    PyObject *value = get_attr(payload, name);
    int rc = value == NULL ? -1 : set_attr(node, name, value);
    Py_XDECREF(value);
    return rc;
}

/* (device_id, key, notable) onto `changed`, unless this call already queued it for this node under this
   very key object (then an equal change is in `changed`: the batcher would keep that one). */
static int queue(Run *run, PyObject *changed, PyObject *device_id, PyObject *node, PyObject *key, int notable) {
    notable = notable != 0;
    for (int q = 0; q < run->n_queued; q++)
        if (run->queued[q].node == node && run->queued[q].key == key && run->queued[q].notable == notable)
            return 0;
    PyObject *change = PyTuple_Pack(3, device_id, key, notable ? Py_True : Py_False);
    if (change != NULL)
        untrack_plain(change);
    int rc = change == NULL ? -1 : PyList_Check(changed) ? PyList_Append(changed, change) : PyDict_SetItem(changed, change, Py_None);
    Py_XDECREF(change);
    if (rc == 0 && run->n_queued < QUEUED_MAX) {  /* held: Python runs between events, nothing may reuse them */
        run->queued[run->n_queued].node = Py_NewRef(node), run->queued[run->n_queued].key = Py_NewRef(key);
        run->queued[run->n_queued++].notable = notable;
    }
    return rc;
}

/* A value a clone may share with `forest._blank`: what a dataclass default shares between instances
   anyway (None, a bool, an int or IntEnum member, a float, a str, bytes), or an empty exact dict, list,
   deque or evidence ring, which the clone gets a fresh one of. Anything else (a set, a tuple, an object of
   another kind) and the forest's nodes are made by `_new_node`. */
static int shareable(PyObject *value) {
    if (value == NULL)
        return 0;
    if (PyDict_CheckExact(value) || PyList_CheckExact(value) || Py_IS_TYPE(value, deque_type) || is_any_ring(value))
        return PyObject_Length(value) == 0;  /* cannot fail on these */
    /* immutable values only: a mutable object need not be a GC type (an evidence ring, an array) */
    return value == Py_None || PyBool_Check(value) || PyLong_Check(value) || PyFloat_Check(value) ||
           PyUnicode_Check(value) || PyBytes_Check(value);
}

/* `obj.name.maxlen == limits.limit` for one of a node's deques (0 when not, or on an odd value). */
static int same_maxlen(PyObject *obj, PyObject *name, PyObject *limits, PyObject *limit) {
    PyObject *queue = get_attr(obj, name), *maxlen = queue == NULL ? NULL : PyObject_GetAttr(queue, s_maxlen);
    PyObject *wanted = maxlen == NULL ? NULL : get_attr(limits, limit);
    int same = wanted == NULL ? -1 : PyObject_RichCompareBool(maxlen, wanted, Py_EQ);
    Py_XDECREF(queue);
    Py_XDECREF(maxlen);
    Py_XDECREF(wanted);
    if (same < 0)
        PyErr_Clear();
    return same > 0;
}

/* Decide once per call whether new nodes may be clones of `forest._blank` (a node `_new_node` would make,
   tree.DeviceForest._fresh): only when the forest's `_new_node` is DeviceForest's own, the blank's type a
   plain slotted class (object's allocation, no __dict__, no weakref slot, every slot an object slot),
   every slot set and `shareable`, and its deques' maxlens still the forest's limits. A clone then is what
   `_new_node` makes, without its Python frames (`tests/unit/test_tree_compiled_starts.py`). 1 clone,
   0 call `_new_node`, -1 error. */
static int blank_ready(Run *run) {
    if (run->clone >= 0 || run->plain_new_node == NULL)
        return run->clone = run->clone > 0;
    run->clone = 0;
    PyObject *bound = PyObject_GetAttr(run->forest, s_new_node);
    if (bound == NULL)
        return -1;
    int plain = PyMethod_Check(bound) && PyMethod_GET_FUNCTION(bound) == run->plain_new_node &&
                PyMethod_GET_SELF(bound) == run->forest;
    Py_DECREF(bound);
    PyObject *blank = plain ? PyObject_GetAttr(run->forest, s_blank) : NULL;
    if (blank == NULL) {
        PyErr_Clear();  /* no blank (a forest made without __init__): `_new_node` */
        return 0;
    }
    PyTypeObject *tp = Py_TYPE(blank);
    int ok = tp->tp_base == &PyBaseObject_Type && tp->tp_dictoffset == 0 && tp->tp_weaklistoffset == 0 &&
             tp->tp_alloc == PyType_GenericAlloc && tp->tp_members != NULL && (tp->tp_flags & Py_TPFLAGS_HEAPTYPE);
    for (PyMemberDef *m = ok ? tp->tp_members : NULL; m != NULL && m->name != NULL; m++)
        ok = ok && m->type == T_OBJECT_EX && !(m->flags & READONLY) && shareable(*(PyObject **)((char *)blank + m->offset));
    PyObject *limits = ok ? get_attr(run->forest, s_limits) : NULL;
    ok = limits != NULL && same_maxlen(blank, s_evidence, limits, s_max_evidence) &&
         same_maxlen(blank, s_conns, limits, s_max_conns) && same_maxlen(blank, s_notable, limits, s_max_notable);
    Py_XDECREF(limits);
    PyErr_Clear();
    if (!ok) {
        Py_DECREF(blank);
        return 0;
    }
    run->blank = blank;
    return run->clone = 1;
}

/* `_new_node(key)` with room to spare, as a clone of the blank: its slots shared or fresh empty
   containers, then its key and stamp; put in `nodes` and at the end of `_lru` (through `_touched` when the
   forest defers its order: `touch`), counted as created.
   The clone and its fresh containers are taken off the cycle collector's lists (what `gc.is_tracked`
   reports): a node holds strs, ints, its own containers and what the fold puts in them (keys, packed
   ints, connection tuples, the decoder's events), none of which refers back to a node, so no cycle
   runs through them, and every collection would otherwise visit each of the forest's thousands of
   nodes and their five containers again (young collections the node's first, middle ones while it is
   young; Session I measured the collector at 0.3 us per event in the worker). Untracking changes
   only that: the objects are freed by their reference counts as before (their deallocators untrack
   only what is tracked), and anything they hold stays alive while they do. Were a cycle ever built
   through them (an odd event object referring to its node's deque) it would be kept, not freed. */
static PyObject *clone_node(Run *run, PyObject *key) {
    PyObject *blank = run->blank;
    PyTypeObject *tp = Py_TYPE(blank);
    PyObject *node = tp->tp_alloc(tp, 0);  /* its slots NULL until filled: the GC sees no value yet */
    for (PyMemberDef *m = tp->tp_members; node != NULL && m->name != NULL; m++) {
        PyObject *value = *(PyObject **)((char *)blank + m->offset), *mine;
        if (PyDict_CheckExact(value))
            mine = PyDict_New();
        else if (PyList_CheckExact(value))
            mine = PyList_New(0);
        else if (Py_IS_TYPE(value, deque_type) || is_any_ring(value))
            mine = PyObject_CallMethodNoArgs(value, s_copy);  /* empty, the same maxlen */
        else
            mine = Py_NewRef(value);
        if (mine == NULL)
            Py_CLEAR(node);
        else
            *(PyObject **)((char *)node + m->offset) = mine;
        if (mine != NULL && mine != value && PyObject_GC_IsTracked(mine))
            PyObject_GC_UnTrack(mine);
    }
    if (node != NULL)
        PyObject_GC_UnTrack(node);
    if (node == NULL || set_attr(node, s_key, key) < 0 || set_attr(node, s_stamp, run->epoch) < 0 ||
        PyDict_SetItem(run->nodes, key, node) < 0 ||
        (run->touched != NULL ? PyList_Append(run->touched, node) : PyObject_SetItem(run->lru_dict, key, Py_None)) < 0) {
        Py_XDECREF(node);
        return NULL;
    }
    run->created++;
    return node;
}

/* Apply a process start `classify_start` accepted, in `apply` and `_start`'s order; -1 on error. */
static int apply_start(Run *run, PyObject *lru, PyObject *device_id, PyObject *changed, PyObject *strong,
                       PyObject *generic, int dedupe, Item *it) {
    if (dedupe)
        run->seq_hwm = it->seq;
    run->events++;
    if (it->when > run->watermark)
        run->watermark = it->when;
    int clone = blank_ready(run);
    if (clone < 0)
        return -1;
    PyObject *value = NULL, *node = clone ? clone_node(run, it->key) : PyObject_CallMethodOneArg(run->forest, s_new_node, it->key);
    if (node == NULL)
        return -1;
    int rc = -1, mask = PyObject_IsTrue(it->mask);  /* an exact int: cannot fail */
    PyObject *when = when_int(run, it->when), *last = when == NULL ? NULL : get_attr(node, s_last_ms);
    int later = last == NULL ? -1 : PyObject_RichCompareBool(when, last, Py_GT);  /* whatever _new_node set */
    if (later > 0)
        later = set_attr(node, s_last_ms, when) < 0 ? -1 : 1;
    Py_XDECREF(when);
    Py_XDECREF(last);
    if (later < 0)
        goto done;
    if (set_attr(node, s_started, Py_True) < 0 || set_when(run, node, s_start_ms, it->when) < 0)
        goto done;
    value = get_attr(it->payload, s_image);  /* the start's image is the last set_image of `apply` */
    PyObject *r = value == NULL ? NULL : PyObject_CallMethodOneArg(node, s_set_image, value);
    Py_XDECREF(r);
    Py_CLEAR(value);
    if (r == NULL || copy_attr(node, it->payload, s_command_line) < 0 || set_attr(node, s_cmd_mask, it->mask) < 0)
        goto done;
    if ((value = get_attr(it->payload, s_sha256)) == NULL)  /* `start.sha256 or node.sha256` */
        goto done;
    int truthy = PyObject_IsTrue(value);
    if (truthy < 0 || (truthy && set_attr(node, s_sha256, value) < 0))
        goto done;
    if (copy_attr(node, it->payload, s_user) < 0 || copy_attr(node, it->payload, s_pid) < 0 ||
        copy_attr(node, it->payload, s_integrity_level) < 0 || copy_attr(node, it->payload, s_uid) < 0)
        goto done;
    if ((mask || it->lone) && append_to(node, s_notable, it->event) < 0)
        goto done;
    Py_CLEAR(value);
    if ((value = get_attr(it->event, s_parent_process_key)) == NULL || set_attr(node, s_parent_key, value) < 0)
        goto done;
    if (append_to(it->parent, s_children, it->key) < 0)
        goto done;
    if (it->when > it->last && set_when(run, it->parent, s_last_ms, it->when) < 0)
        goto done;
    Py_CLEAR(value);
    if ((value = get_attr(it->parent, s_key)) == NULL || touch(run, lru, it->parent, value) < 0)
        goto done;
    int flags = add_evidence(run, it->parent, it->when, it->codes, strong, generic);
    if (flags < 0)
        goto done;
    int notable = flags & 2 || mask;
    if (queue(run, changed, device_id, node, it->key, notable) < 0 ||
        ((flags & 1 || notable) && queue(run, changed, device_id, it->parent, value, notable) < 0))
        goto done;
    rc = 0;
done:
    Py_XDECREF(value);
    Py_DECREF(node);
    return rc;
}

static PyObject *fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 7 || nargs > 9) {
        PyErr_SetString(PyExc_TypeError, "fold(forest, events, start, changed, codes_by_kind, strong, generic"
                                         "[, caches[, starts]]) takes 7 to 9 arguments");
        return NULL;
    }
    PyObject *starts = nargs == 9 && args[8] != Py_None ? args[8] : NULL;
    /* All four or none: a fold without `lone_mask` would keep less evidence than `_start` (Python's) does. */
    if (starts != NULL && !(PyTuple_CheckExact(starts) && PyTuple_GET_SIZE(starts) == 4 &&
                            PyTuple_GET_ITEM(starts, 3) != Py_None)) {
        PyErr_SetString(PyExc_TypeError,
                        "starts must be a (child_codes, indicator_mask, DeviceForest._new_node or None, lone_mask) tuple");
        return NULL;
    }
    PyObject *forest = args[0], *changed = args[3], *codes_by_kind = args[4], *strong = args[5];
    PyObject *generic = args[6], *caches = nargs >= 8 && args[7] != Py_None ? args[7] : NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (!(PyList_Check(changed) || PyDict_CheckExact(changed)) || !PyDict_Check(codes_by_kind) ||
        !PyAnySet_Check(strong) || !PyAnySet_Check(generic) || (caches != NULL && !PyDict_Check(caches))) {
        PyErr_SetString(PyExc_TypeError, "changed must be a list or a dict, codes_by_kind and caches dicts, "
                                         "strong and generic sets");
        return NULL;
    }
    PyObject *events = PySequence_Fast(args[1], "events must be a sequence");
    if (events == NULL)
        return NULL;
    Py_ssize_t i = start < 0 ? 0 : start;
    PyObject *device_id = get_attr(forest, s_device_id), *nodes = get_attr(forest, s_nodes);
    PyObject *lru_dict = get_attr(forest, s_lru), *limits = get_attr(forest, s_limits);
    PyObject *lru = NULL;  /* `_lru.move_to_end`, made below only for a forest without `_touched` (`touch`) */
    Run run = {.forest = forest, .stats = get_attr(forest, s_stats), .clone = -1, .lru_dict = lru_dict};  /* the rest zero */
    if (starts != NULL && PyTuple_GET_ITEM(starts, 2) != Py_None)
        run.plain_new_node = PyTuple_GET_ITEM(starts, 2);
    PyObject *result = NULL;
    int dedupe = limits == NULL ? -1 : truthy_attr(limits, s_dedupe_by_seq);
    if (device_id == NULL || nodes == NULL || lru_dict == NULL || run.stats == NULL || dedupe < 0 ||
        (run.epoch = get_attr(forest, s_epoch)) == NULL)
        goto out;
    if (!PyDict_Check(nodes) || get_ll(forest, s_watermark_ms, &run.watermark) != 0 ||
        get_ll(forest, s_seq_hwm, &run.seq_hwm) != 0) {
        result = PyErr_Occurred() ? NULL : PyLong_FromSsize_t(i);  /* unusual state: all of it Python's */
        goto out;
    }
    run.watermark0 = run.watermark, run.seq_hwm0 = run.seq_hwm, run.nodes = nodes;
    if ((run.touched = PyObject_GetAttr(forest, s_touched)) == NULL)
        PyErr_Clear();  /* a forest without the list: `_lru` is kept current here, as before */
    else if (!PyList_CheckExact(run.touched))
        Py_CLEAR(run.touched);
    if (run.touched != NULL && !deferring) {  /* moved per event: what is pending first */
        int synced = PyList_GET_SIZE(run.touched) ? apply_touched(lru_dict, run.touched) : 0;
        Py_CLEAR(run.touched);
        if (synced < 0)
            goto out;
    }
    if (run.touched == NULL && (lru = get_attr(lru_dict, s_move_to_end)) == NULL)
        goto out;
    run.lifecycle = starts != NULL;
    int limit = starts == NULL ? 1 : get_ll(limits, s_max_nodes, &run.max_nodes);
    if (limit < 0)
        goto out;
    if (limit == 0) {  /* a plain max_nodes: new processes under known parents are applied here too */
        run.child_codes = PyTuple_GET_ITEM(starts, 0), run.indicator_mask = PyTuple_GET_ITEM(starts, 1);
        run.lone_mask = PyTuple_GET_ITEM(starts, 3);
    }
    int failed = 0;
    for (; i < PySequence_Fast_GET_SIZE(events); i++) {  /* size and item re-read: Python ran in between */
        Item it;
        PyObject *event = PySequence_Fast_GET_ITEM(events, i);
        Py_INCREF(event);
        int rc = classify(&run, nodes, device_id, codes_by_kind, caches, dedupe, event, &it);
        if (rc == 0 && it.parent != NULL) {
            rc = apply_start(&run, lru, device_id, changed, strong, generic, dedupe, &it);
            rc = rc < 0 ? rc : stamp(&run, it.parent);  /* the new node was stamped by _new_node */
        } else if (rc == 0) {
            rc = apply_item(&run, lru, device_id, changed, strong, generic, dedupe, &it);
            rc = rc < 0 ? rc : stamp(&run, it.node);
            rc = rc < 0 || it.named == NULL ? rc : stamp_key(&run, nodes, it.named, 1);
        } else if (rc == 2)
            run.duplicates++, rc = 0;
        drop_item(&it);
        Py_DECREF(event);
        if (rc != 0) {
            failed = rc < 0;
            break;
        }
    }
    if (finish(&run) == 0 && !failed)
        result = PyLong_FromSsize_t(i);
out:
    Py_DECREF(events);
    Py_XDECREF(device_id);
    Py_XDECREF(nodes);
    Py_XDECREF(lru_dict);
    Py_XDECREF(lru);
    Py_XDECREF(limits);
    Py_XDECREF(run.stats);
    Py_XDECREF(run.epoch);
    Py_XDECREF(run.stamped_key);
    for (int q = 0; q < run.n_queued; q++)
        Py_DECREF(run.queued[q].node), Py_DECREF(run.queued[q].key);
    Py_XDECREF(run.blank);
    Py_XDECREF(run.touched);
    forget_kinds(&run);
    Py_XDECREF(run.when_obj);
    return result;
}

/* --- the rows of a flush: `Detector._rows` (pipeline/detect.py) ------------------------------------- */

/* `detect._scorable`: started or imaged (not a placeholder), and its image class not an anchor's. */
static int scorable(PyObject *node, PyObject *anchors) {
    int known = truthy_attr(node, s_started);
    if (known == 0)
        known = truthy_attr(node, s_image);
    if (known <= 0)
        return known;
    PyObject *cls = get_attr(node, s_image_cls);
    if (cls == NULL)
        return -1;
    int anchor = PySet_Contains(anchors, cls);
    Py_DECREF(cls);
    return anchor < 0 ? -1 : !anchor;
}

/* (forest, node) onto `out` unless `node` is already there (`seen`: the nodes taken, by identity). */
static int take(PyObject *out, PyObject *seen, PyObject *forest, PyObject *node, PyObject *anchors) {
    int ok = scorable(node, anchors);
    if (ok <= 0)
        return ok;
    /* A node whose type keeps object's hash and equality (ProcessNode: eq=False) is its own identity key;
       any other is keyed by its address, so no __hash__ or __eq__ of its own decides what is "once". */
    PyTypeObject *type = Py_TYPE(node);
    const int plain = type->tp_hash == PyBaseObject_Type.tp_hash && type->tp_richcompare == PyBaseObject_Type.tp_richcompare;
    PyObject *id = plain ? Py_NewRef(node) : PyLong_FromVoidPtr(node);
    int held = id == NULL ? -1 : PySet_Contains(seen, id);
    if (held == 0)
        held = PySet_Add(seen, id) < 0 ? -1 : 0;
    Py_XDECREF(id);
    if (held != 0)
        return held < 0 ? -1 : 0;
    PyObject *row = PyTuple_Pack(2, forest, node);
    if (row != NULL)  /* a forest and its node: no cycle runs through the pair (see `clone_node`) */
        PyObject_GC_UnTrack(row);
    int rc = row == NULL ? -1 : PyList_Append(out, row);
    Py_XDECREF(row);
    return rc;
}

/* Take the scorable ones of `node`'s known ancestors, nearest first, at most min(max_depth, up) of
   them (`DeviceForest.ancestors(key, up)`). */
static int take_ancestors(PyObject *out, PyObject *seen, PyObject *forest, PyObject *nodes, PyObject *node,
                          Py_ssize_t up, PyObject *anchors) {
    PyObject *limits = get_attr(forest, s_limits);
    long long max_depth = 0;
    int rc = limits == NULL ? -1 : get_ll(limits, s_max_depth, &max_depth);
    if (rc > 0) {  /* not a small int: below `up` only when hugely negative (no ancestors), else `up` */
        PyObject *value = get_attr(limits, s_max_depth), *bound = value == NULL ? NULL : PyLong_FromSsize_t(up);
        rc = bound == NULL ? -1 : PyObject_RichCompareBool(value, bound, Py_LT);
        max_depth = rc > 0 ? 0 : (long long)up;
        Py_XDECREF(value);
        Py_XDECREF(bound);
    }
    Py_XDECREF(limits);
    if (rc < 0)
        return -1;
    const long long depth = max_depth < (long long)up ? max_depth : (long long)up;
    PyObject *at = Py_NewRef(node);
    for (long long found = 0; found < depth;) {
        PyObject *parent_key = get_attr(at, s_parent_key);
        if (parent_key == NULL || parent_key == Py_None) {
            rc = parent_key == NULL ? -1 : 0;
            Py_XDECREF(parent_key);
            break;
        }
        PyObject *parent = PyDict_GetItemWithError(nodes, parent_key);  /* borrowed */
        Py_DECREF(parent_key);
        if (parent == NULL) {
            rc = PyErr_Occurred() ? -1 : 0;
            break;
        }
        Py_SETREF(at, Py_NewRef(parent));
        found++;
        if ((rc = take(out, seen, forest, at, anchors)) < 0)
            break;
    }
    Py_DECREF(at);
    return rc < 0 ? -1 : 0;
}

/* One queued change (device_id, process_key, notable): its node and, when notable, its ancestors. */
static int take_change(PyObject *out, PyObject *seen, PyObject *forests, PyObject *change, Py_ssize_t up,
                       PyObject *anchors) {
    if (!PyTuple_Check(change) || PyTuple_GET_SIZE(change) != 3) {
        PyErr_SetString(PyExc_TypeError, "a queued change must be a (device_id, process_key, notable) tuple");
        return -1;
    }
    PyObject *forest = PyDict_GetItemWithError(forests, PyTuple_GET_ITEM(change, 0));
    if (forest == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(forest);  /* held: the reads below may run code */
    PyObject *nodes = get_attr(forest, s_nodes), *node = NULL;
    int rc = nodes == NULL ? -1 : 0;
    if (rc == 0 && !PyDict_Check(nodes)) {
        PyErr_SetString(PyExc_TypeError, "DeviceForest.nodes must be a dict");
        rc = -1;
    }
    if (rc == 0 && (node = PyDict_GetItemWithError(nodes, PyTuple_GET_ITEM(change, 1))) == NULL)
        rc = PyErr_Occurred() ? -1 : 1;  /* evicted since it was queued */
    Py_XINCREF(node);
    if (rc == 0)
        rc = take(out, seen, forest, node, anchors);
    int notable = rc == 0 ? PyObject_IsTrue(PyTuple_GET_ITEM(change, 2)) : 0;
    if (notable != 0)
        rc = notable < 0 ? -1 : take_ancestors(out, seen, forest, nodes, node, up, anchors);
    Py_XDECREF(node);
    Py_XDECREF(nodes);
    Py_DECREF(forest);
    return rc < 0 ? -1 : 0;
}

static PyObject *rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "rows(pending, forests, context_up, anchors) takes 4 arguments");
        return NULL;
    }
    PyObject *forests = args[1], *anchors = args[3];
    Py_ssize_t up = PyLong_AsSsize_t(args[2]);
    if (up == -1 && PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(forests) || !PyAnySet_Check(anchors)) {
        PyErr_SetString(PyExc_TypeError, "forests must be a dict and anchors a set");
        return NULL;
    }
    PyObject *pending = PySequence_Fast(args[0], "pending must be a sequence");
    if (pending == NULL)
        return NULL;
    PyObject *out = PyList_New(0), *seen = PySet_New(NULL);
    if (seen == NULL)
        Py_CLEAR(out);
    for (Py_ssize_t i = 0; out != NULL && i < PySequence_Fast_GET_SIZE(pending); i++) {
        PyObject *change = Py_NewRef(PySequence_Fast_GET_ITEM(pending, i));
        if (take_change(out, seen, forests, change, up, anchors) < 0)
            Py_CLEAR(out);
        Py_DECREF(change);
    }
    Py_DECREF(pending);
    Py_XDECREF(seen);
    return out;
}

/* --- the recency order: `pipeline.recency.apply_touches` ---------------------------------------------- */

/* apply_touches(lru, touched): put each node of the list `touched` at the end of the mapping `lru` (its
   key moved when present, inserted when not), once, in the order of its last touch; `touched` emptied
   first (so code the moves run cannot see it half applied). Which touch is a node's last is found from
   the end with a set of node addresses (the nodes are held meanwhile), not a Python set. */
static int apply_touched(PyObject *lru, PyObject *touched) {
    PyObject *pending = PyList_GetSlice(touched, 0, PY_SSIZE_T_MAX);
    if (pending == NULL || PyList_SetSlice(touched, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        Py_XDECREF(pending);
        return -1;
    }
    const Py_ssize_t n = PyList_GET_SIZE(pending);
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    PyObject **seen = PyMem_Calloc(cap, sizeof(PyObject *));
    char *last = PyMem_Calloc(n ? (size_t)n : 1, 1);
    PyObject *move = seen == NULL || last == NULL ? NULL : PyObject_GetAttr(lru, s_move_to_end);
    int rc = move == NULL ? -1 : 0;
    if (seen == NULL || last == NULL)
        PyErr_NoMemory();
    for (Py_ssize_t i = n - 1; rc == 0 && i >= 0; i--) {  /* a node's last touch: the first met from the end */
        PyObject *node = PyList_GET_ITEM(pending, i);
        size_t at = ((uintptr_t)node >> 4) * 0x9E3779B97F4A7C15ull >> 20 & (cap - 1);
        while (seen[at] != NULL && seen[at] != node)
            at = (at + 1) & (cap - 1);
        if (seen[at] == NULL)
            seen[at] = node, last[i] = 1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        if (!last[i])
            continue;
        PyObject *key = get_attr(PyList_GET_ITEM(pending, i), s_key);
        int present = key == NULL ? -1 : PySequence_Contains(lru, key);
        if (present > 0) {
            PyObject *r = PyObject_CallOneArg(move, key);
            present = r == NULL ? -1 : 1;
            Py_XDECREF(r);
        } else if (present == 0) {
            present = PyObject_SetItem(lru, key, Py_None);
        }
        Py_XDECREF(key);
        rc = present < 0 ? -1 : 0;
    }
    Py_XDECREF(move);
    PyMem_Free(seen);
    PyMem_Free(last);
    Py_DECREF(pending);
    return rc;
}

static PyObject *apply_touches(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "apply_touches(lru, touched: list)");
        return NULL;
    }
    return apply_touched(args[0], args[1]) < 0 ? NULL : Py_NewRef(Py_None);
}

/* defer_touches(on=None) -> bool: whether the fold appends to `forest._touched` (on, the default) or, after
   applying what is pending there, moves `_lru` per event as before session L (off: tests and benchmarks
   compare the two). With `on`, the answer is the previous state. */
static PyObject *defer_touches(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "defer_touches(on=None)");
        return NULL;
    }
    const int was = deferring;
    if (nargs == 1) {
        int on = PyObject_IsTrue(args[0]);
        if (on < 0)
            return NULL;
        deferring = on;
    }
    return PyBool_FromLong(was);
}

static PyMethodDef methods[] = {
    READS_RINGS_METHOD,
    {"defer_touches", (PyCFunction)(void (*)(void))defer_touches, METH_FASTCALL,
     "defer_touches(on=None) -> bool: whether the fold defers recency moves to forest._touched (set `on` to "
     "change it; the answer is then the previous state)."},
    {"apply_touches", (PyCFunction)(void (*)(void))apply_touches, METH_FASTCALL,
     "apply_touches(lru, touched) -> None: each node of the list `touched` put at the end of `lru` (moved, or "
     "inserted when its key is not there), once, in the order of its last touch; `touched` is emptied."},
    {"fold", (PyCFunction)(void (*)(void))fold, METH_FASTCALL,
     "fold(forest, events, start, changed, codes_by_kind, strong, generic[, caches[, starts]]) -> index of "
     "the first event not applied (another device's, or one DeviceForest.apply must handle). caches: kind -> "
     "(codes function, deciding field names, dict) to remember that function's codes by those fields; "
     "starts: (child_codes, indicator_mask, DeviceForest._new_node or None, lone_mask) to apply the start of a "
     "new process under a known parent, and the end of a known process, too; a start whose indicator_mask is "
     "0 and whose lone_mask is not is kept as notable (alert evidence) as well."},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(pending, forests, context_up, anchors) -> [(forest, node)]: the rows a flush scores for the queued "
     "(device_id, process_key, notable) changes, as pipeline.detect.Detector._rows picks them: each scorable "
     "changed process and, on a notable change, its scorable ancestors up to context_up, once each."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipeline._cforest", "DeviceForest.apply's common case in C (pipeline.tree).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__cforest(void) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_device_id, "device_id"}, {&s_ts, "ts"}, {&s_timestamp, "timestamp"}, {&s_seq, "seq"},
        {&s_process_key, "process_key"}, {&s_image, "image"}, {&s_payload, "payload"}, {&s_kind, "kind"},
        {&s_parent_process_key, "parent_process_key"}, {&s_nodes, "nodes"}, {&s_lru, "_lru"},
        {&s_stats, "stats"}, {&s_limits, "limits"}, {&s_dedupe_by_seq, "dedupe_by_seq"},
        {&s_watermark_ms, "watermark_ms"}, {&s_seq_hwm, "seq_hwm"}, {&s_events, "events"},
        {&s_duplicates_dropped, "duplicates_dropped"}, {&s_evidence_dropped, "evidence_dropped"},
        {&s_started, "started"}, {&s_last_ms, "last_ms"}, {&s_parent_key, "parent_key"}, {&s_path, "path"},
        {&s_conns, "conns"}, {&s_evidence, "evidence"}, {&s_code_counts, "code_counts"},
        {&s_notable, "notable"}, {&s_maxlen, "maxlen"}, {&s_append, "append"},
        {&s_move_to_end, "move_to_end"}, {&s_dst_ip, "dst_ip"}, {&s_dst_port, "dst_port"}, {&s_key, "key"},
        {&s_old_path, "old_path"}, {&s_value_name, "value_name"}, {&s_operation, "operation"},
        {&s_outbound, "outbound"}, {&s_signed, "signed"}, {&s_target_image, "target_image"},
        {&s_granted_access, "granted_access"},
        {&s_command_line, "command_line"}, {&s_cmd_mask, "cmd_mask"}, {&s_sha256, "sha256"}, {&s_user, "user"},
        {&s_pid, "pid"}, {&s_integrity_level, "integrity_level"}, {&s_uid, "uid"}, {&s_start_ms, "start_ms"},
        {&s_children, "children"}, {&s_set_image, "set_image"}, {&s_new_node, "_new_node"},
        {&s_max_nodes, "max_nodes"}, {&s_end_ms, "end_ms"}, {&s_exited, "_exited"},
        {&s_image_cls, "image_cls"}, {&s_max_depth, "max_depth"}, {&s_epoch, "epoch"}, {&s_stamp, "stamp"},
        {&s_blank, "_blank"}, {&s_copy, "__copy__"}, {&s_nodes_created, "nodes_created"},
        {&s_max_evidence, "max_evidence_per_node"}, {&s_max_conns, "max_conns_per_node"},
        {&s_max_notable, "max_notable_per_node"}, {&s_touched, "_touched"},
        {&k_start, "process_start"}, {&k_end, "process_end"}, {&k_script, "script"},
        {&k_network, "network_connect"}, {&k_load, "image_load"},
    };
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    if ((deque_type = import_deque_type()) == NULL ||  /* kept for the module's lifetime */
        (deque_append = PyObject_GetAttrString((PyObject *)deque_type, "append")) == NULL || ring_import() < 0)
        return NULL;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    for (Py_ssize_t n = 2; n <= SCRATCH_MAX; n++) {
        if ((scratch[n] = PyTuple_New(n)) == NULL)
            return NULL;
        PyObject_GC_UnTrack(scratch[n]);  /* holds only str/int/bool/None, and only while a lookup runs */
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "CODES_CACHE_ENTRIES", CODES_CACHE_ENTRIES) < 0 ||
                      PyModule_AddIntConstant(m, "CODES_CACHE_CHARS", CODES_CACHE_CHARS) < 0))
        Py_CLEAR(m);
    return m;
}
