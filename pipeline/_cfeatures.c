/*
 * pipeline._cfeatures: the rows of `feature_matrix` (pipeline/features.py) in C.
 *
 * Why: with the tree update in C, computing feature rows was the largest part of the detector's CPU
 * time (~15 us per scored row in numpy and Python: BENCHMARKS.md, "Session F — feature rows in C"),
 * almost all of it fixed cost per numpy call and per Python object, not arithmetic. `rows` fills
 * the same float32 matrix the numpy path (`features._numpy_rows`) fills, row by row:
 *
 * - every node a row needs (the process and its window-active descendants) is read once per call
 *   into a table keyed by (node, window start): image class, indicator mask, static facts (the
 *   node's cached `static`, else `static_facts(node)`), image, and its behaviour counts in the window
 *   -- the numpy path's `_Table` and `count_windows`;
 * - each row then sets classes, pairs, static facts, process scalars, subtree counts, indicator bits
 *   and counters from the table, and counts distinct destinations from the nodes' connection records.
 *
 * What the row is made of (columns, class sets of the pairs, sizes) comes from Python in `layout`
 * (`features._C_LAYOUT`), so the feature list is defined once, in pipeline/feature_catalogue.py.
 * Values are computed in the numpy path's float order (float32 sums of descendants' counts in row
 * order, float64 sums of user-writable flags) so the matrices are equal byte for byte
 * (tests/unit/test_features_compiled.py). Slots are read through `_slots.h`; ProcessNode's three
 * properties the rows need (`placeholder`, `exited`, `mask`, one-line expressions of its slots in
 * pipeline/node.py) are computed from those slots for a plain ProcessNode and read through the
 * property for any subclass. A node's evidence `Ring` (pipeline/_ring.h) is counted from its buffer; on
 * CPython 3.11 an evidence deque is read in place (its layout checked at import; see `count_evidence`),
 * else through its iterator. `context` builds `row_context`'s RowContext the same way
 * (off the cycle collector's lists: see `make_row`).
 * Whatever it cannot read as the numpy path would raises (TypeError, ValueError, OverflowError,
 * IndexError) instead of guessing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "_slots.h"  /* slot_of, get_attr, set_attr: attribute access of slotted objects */
#include "_ring.h"   /* a `Ring` of evidence records, counted straight from its buffer */

static PyObject *s_image_cls, *s_image, *s_started, *s_exited, *s_placeholder, *s_end_ms, *s_start_ms;
static PyObject *s_cmd_mask, *s_script_mask, *s_command_line, *s_lone;
static PyObject *s_children, *s_mask, *s_evidence, *s_conns, *s_static, *s_parent_key, *s_nodes;
static PyObject *s_limits, *s_max_depth, *s_watermark_ms, *s_get, *s_last_ms, *s_key;
static PyObject *zero, *one, *thousand; /* the ints 0, 1 and 1000 */

#define N_PAIRS 8
#define N_STATIC_COLS 16 /* static facts copied to the row; one more (user-writable) is summed */
#define N_PROCESS_COLS 7
#define N_GROUPS 3 /* descendant class groups: shells, LOLBins, admin tools */
#define LAYOUT_LEN (11 + 3 * N_PAIRS + N_STATIC_COLS + N_PROCESS_COLS + 2 + 2 * N_GROUPS + 10)

typedef struct {
    Py_ssize_t n_features, n_cls, n_ind, n_cnt, n_static, ancestor_depth, depth_cap;
    Py_ssize_t img, parent, gparent, parent_unknown;
    Py_ssize_t pair_col[N_PAIRS];
    uint64_t pair_parent[N_PAIRS], pair_own[N_PAIRS]; /* class bit sets */
    Py_ssize_t static_col[N_STATIC_COLS], process_col[N_PROCESS_COLS];
    Py_ssize_t distinct_images, user_writable;
    Py_ssize_t group_col[N_GROUPS];
    uint64_t group_cls[N_GROUPS];
    Py_ssize_t self_ind, desc_ind, anc_ind, self_ind_count, tree_ind_count;
    Py_ssize_t own_cnt, sub_cnt, own_ips, own_ports, sub_ips;
    PyTypeObject *plain; /* ProcessNode: its properties are read from their slots (borrowed) */
} Layout;

static int in_range(Py_ssize_t first, Py_ssize_t width, Py_ssize_t n) { return first >= 0 && width >= 0 && first + width <= n; }

/* `layout` (a tuple of ints, in the order of `features._C_LAYOUT`) into `L`, checked against itself. */
static int read_layout(PyObject *layout, Layout *L) {
    if (!PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != LAYOUT_LEN) {
        PyErr_Format(PyExc_ValueError, "layout must be a tuple of %d ints", LAYOUT_LEN);
        return -1;
    }
    long long v[LAYOUT_LEN];
    for (Py_ssize_t i = 0; i < LAYOUT_LEN; i++) {
        v[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(layout, i));
        if (v[i] == -1 && PyErr_Occurred())
            return -1;
        if (v[i] < 0 || v[i] > ((long long)1 << 62)) {
            PyErr_SetString(PyExc_ValueError, "layout values must be non-negative");
            return -1;
        }
    }
    const long long *p = v;
    L->n_features = *p++, L->n_cls = *p++, L->n_ind = *p++, L->n_cnt = *p++, L->n_static = *p++;
    L->ancestor_depth = *p++, L->depth_cap = *p++;
    L->img = *p++, L->parent = *p++, L->gparent = *p++, L->parent_unknown = *p++;
    for (int k = 0; k < N_PAIRS; k++)
        L->pair_col[k] = *p++, L->pair_parent[k] = (uint64_t)*p++, L->pair_own[k] = (uint64_t)*p++;
    for (int k = 0; k < N_STATIC_COLS; k++)
        L->static_col[k] = *p++;
    for (int k = 0; k < N_PROCESS_COLS; k++)
        L->process_col[k] = *p++;
    L->distinct_images = *p++, L->user_writable = *p++;
    for (int k = 0; k < N_GROUPS; k++)
        L->group_col[k] = *p++, L->group_cls[k] = (uint64_t)*p++;
    L->self_ind = *p++, L->desc_ind = *p++, L->anc_ind = *p++, L->self_ind_count = *p++;
    L->tree_ind_count = *p++, L->own_cnt = *p++, L->sub_cnt = *p++, L->own_ips = *p++;
    L->own_ports = *p++, L->sub_ips = *p++;
    const Py_ssize_t nf = L->n_features;
    int ok = L->n_cls >= 1 && L->n_cls <= 64 && L->n_ind <= 64 && L->n_cnt >= 1 && L->n_cnt <= 256 &&
             L->n_static == N_STATIC_COLS + 1 && in_range(L->img, L->n_cls, nf) &&
             in_range(L->parent, L->n_cls, nf) && in_range(L->gparent, L->n_cls, nf) &&
             in_range(L->self_ind, L->n_ind, nf) && in_range(L->desc_ind, L->n_ind, nf) &&
             in_range(L->anc_ind, L->n_ind, nf) && in_range(L->own_cnt, L->n_cnt, nf) &&
             in_range(L->sub_cnt, L->n_cnt, nf);
    const Py_ssize_t single[] = {L->parent_unknown, L->distinct_images, L->user_writable, L->self_ind_count,
                                 L->tree_ind_count, L->own_ips, L->own_ports, L->sub_ips};
    for (size_t k = 0; k < sizeof(single) / sizeof(single[0]); k++)
        ok = ok && single[k] < nf;
    for (int k = 0; k < N_PAIRS; k++)
        ok = ok && L->pair_col[k] < nf;
    for (int k = 0; k < N_STATIC_COLS; k++)
        ok = ok && L->static_col[k] < nf;
    for (int k = 0; k < N_PROCESS_COLS; k++)
        ok = ok && L->process_col[k] < nf;
    for (int k = 0; k < N_GROUPS; k++)
        ok = ok && L->group_col[k] < nf;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "layout: a column or size is out of range");
        return -1;
    }
    return 0;
}

/* --- values ---------------------------------------------------------------------------------------- */

/* An int as a long long; OverflowError beyond 64 bits, TypeError for what is not an int (3.11's
   PyLong_AsLongLong goes through a byte array for ints of two or more digits: this does not). */
static int as_ll(PyObject *value, long long *out) {
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "int too big to convert");
        return -1;
    }
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* obj.name as a long long (an OverflowError or TypeError when it is not one). */
static int attr_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    int rc = as_ll(value, out);
    Py_DECREF(value);
    return rc;
}

/* obj.name as numpy stores it in a float32 cell: float(value), then rounded to float32. */
static int attr_float(PyObject *obj, PyObject *name, float *out) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    double d = PyFloat_AsDouble(value);
    Py_DECREF(value);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    *out = (float)d;
    return 0;
}

/* obj.name as numpy's uint64 takes it (OverflowError when negative or too wide). */
static int attr_u64(PyObject *obj, PyObject *name, uint64_t *out) {
    PyObject *value = get_attr(obj, name);
    if (value == NULL)
        return -1;
    *out = PyLong_AsUnsignedLongLong(value);
    Py_DECREF(value);
    return *out == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
}

/* The ProcessNode properties the rows read (pipeline/node.py: `mask`, `placeholder`, `exited`): for a
   plain ProcessNode computed from the slots they are defined on, as they define them, without a
   Python call; for anything else (a subclass may redefine them) read through the property. */
static int mask_of(PyObject *node, const Layout *L, uint64_t *out) {
    uint64_t cmd, script;
    if (Py_TYPE(node) != L->plain)
        return attr_u64(node, s_mask, out);
    if (attr_u64(node, s_cmd_mask, &cmd) < 0 || attr_u64(node, s_script_mask, &script) < 0)
        return -1;
    *out = cmd | script;  /* cmd_mask | script_mask */
    return 0;
}

static int attr_true(PyObject *obj, PyObject *name) {
    PyObject *value = get_attr(obj, name);
    int rc = value == NULL ? -1 : PyObject_IsTrue(value);
    Py_XDECREF(value);
    return rc;
}

static int is_placeholder(PyObject *node, const Layout *L) {
    if (Py_TYPE(node) != L->plain)
        return attr_true(node, s_placeholder);
    int started = attr_true(node, s_started);  /* not started and not image */
    if (started != 0)
        return started < 0 ? -1 : 0;
    int image = attr_true(node, s_image);
    return image < 0 ? -1 : !image;
}

static int is_exited(PyObject *node, const Layout *L) {
    if (Py_TYPE(node) != L->plain)
        return attr_true(node, s_exited);
    PyObject *end = get_attr(node, s_end_ms);  /* end_ms is not None */
    if (end == NULL)
        return -1;
    const int exited = end != Py_None;
    Py_DECREF(end);
    return exited;
}

static int class_in_range(long long cls, const Layout *L) {
    if (cls >= 0 && cls < L->n_cls)
        return 0;
    PyErr_Format(PyExc_ValueError, "image class %lld is not one of the %zd classes", cls, L->n_cls);
    return -1;
}

/* --- the node table: every node the rows need, read once per (node, window start) ---------------- */

typedef struct {
    PyObject *node, *image; /* strong references */
    long long start;
    int cls;
    uint64_t mask;
    float facts[N_STATIC_COLS + 1];
} Rec;

typedef struct {
    Rec *recs;
    int32_t *counts; /* n_cnt per record */
    Py_ssize_t n, cap, n_cnt;
    Py_ssize_t *slots; /* open addressing: record index + 1, 0 = empty */
    size_t n_slots;    /* a power of two, at least twice cap */
} Table;

static size_t slot_hash(PyObject *node, long long start) {
    uint64_t h = ((uint64_t)(uintptr_t)node >> 4) ^ ((uint64_t)start * 0xC2B2AE3D27D4EB4Full);
    return (size_t)((h * 0x9E3779B97F4A7C15ull) >> 20);
}

static void table_free(Table *t) {
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Py_DECREF(t->recs[i].node);
        Py_XDECREF(t->recs[i].image);
    }
    PyMem_Free(t->recs);
    PyMem_Free(t->counts);
    PyMem_Free(t->slots);
}

static int table_grow(Table *t) {
    Py_ssize_t cap = t->cap ? t->cap * 2 : 64;
    size_t n_slots = 1;
    while (n_slots < (size_t)cap * 2)
        n_slots <<= 1;
    Rec *recs = PyMem_Realloc(t->recs, (size_t)cap * sizeof(Rec));
    if (recs == NULL)
        return PyErr_NoMemory(), -1;
    t->recs = recs;
    int32_t *counts = PyMem_Realloc(t->counts, (size_t)cap * (size_t)t->n_cnt * sizeof(int32_t));
    if (counts == NULL)
        return PyErr_NoMemory(), -1;
    t->counts = counts;
    Py_ssize_t *slots = PyMem_Calloc(n_slots, sizeof(Py_ssize_t));
    if (slots == NULL)
        return PyErr_NoMemory(), -1;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        size_t at = slot_hash(t->recs[i].node, t->recs[i].start) & (n_slots - 1);
        while (slots[at])
            at = (at + 1) & (n_slots - 1);
        slots[at] = i + 1;
    }
    PyMem_Free(t->slots);
    t->slots = slots, t->n_slots = n_slots, t->cap = cap;
    return 0;
}

/* One evidence record (`ts_ms << 8 | code`) counted when it is at or after `start` and its code has a
   counter: the rule of `windows.count_windows`, for every way `count_evidence` reads the records. */
static inline void count_record(long long packed, long long start, int32_t *counts, const Layout *L) {
    const long long code = packed & 0xFF;
    if ((packed >> 8) >= start && code < L->n_cnt && counts[code] < INT32_MAX)
        counts[code]++;
}

/* A node's evidence is a `pipeline._cring.Ring` (read from its buffer: `count_evidence`), or, without that
   extension, a `collections.deque` of up to 512 packed ints, and counting a deque was ~40 % of the
   rows' CPU, most of it in the deque's iterator: a reference taken and dropped per record (two writes to
   each int object, whose cache line the tree update has since evicted). On CPython 3.11 the deque is
   read in place instead: its blocks of 64 item pointers, left to right (Modules/_collectionsmodule.c's
   `dequeobject` and `block`, whose layout 3.11 keeps; the module checks it at import against the
   type's size and against iteration, and reads nothing in place when either differs). Only an exact
   deque, and only while every record is a small exact int: reading those runs no Python code, so the
   deque cannot change under the loop; anything else is counted again through the iterator. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define DEQUE_BLOCKLEN 64
typedef struct deque_block {
    struct deque_block *leftlink;
    PyObject *data[DEQUE_BLOCKLEN];
    struct deque_block *rightlink;
} DequeBlock;

typedef struct {
    PyObject_VAR_HEAD              /* ob_size: the number of items */
    DequeBlock *leftblock, *rightblock;
    Py_ssize_t leftindex, rightindex;  /* the first item is leftblock->data[leftindex] */
    size_t state;
    Py_ssize_t maxlen, numfreeblocks;
    DequeBlock *freeblocks[16];
    PyObject *weakreflist;
} DequeHead;

static PyTypeObject *deque_type;  /* collections.deque when its layout passed `check_deque_layout` */
static int in_place = 1;          /* `read_in_place(False)` turns the in-place reading off (tests, benchmarks) */

/* The deque's items in place, in order, as `visit(item, arg)` sees them; stops at a visit's 0. */
static int each_in_place(PyObject *deque, int (*visit)(PyObject *, void *), void *arg) {
    const DequeHead *d = (const DequeHead *)deque;
    const DequeBlock *b = d->leftblock;
    Py_ssize_t i = d->leftindex;
    for (Py_ssize_t n = Py_SIZE(deque); n > 0; n--, i++) {
        if (i == DEQUE_BLOCKLEN)
            b = b->rightlink, i = 0;
        if (!visit(b->data[i], arg))
            return 0;
    }
    return 1;
}

typedef struct {
    long long start;
    int32_t *counts;
    const Layout *L;
} Tally;

static int tally(PyObject *item, void *arg) {
    Tally *t = arg;
    long long packed;
    if (!small_ll(item, &packed))
        return 0;
    count_record(packed, t->start, t->counts, t->L);
    return 1;
}

typedef struct {
    PyObject *items;
    Py_ssize_t at;
} Same;

static int same_item(PyObject *item, void *arg) {
    Same *s = arg;
    return s->at < PyList_GET_SIZE(s->items) && PyList_GET_ITEM(s->items, s->at++) == item;
}

/* Whether reading `deque` in place gives the items its iterator gives, the same objects in order. */
static int reads_as_iterated(PyObject *deque) {
    PyObject *items = PySequence_List(deque);
    if (items == NULL)
        return -1;
    Same s = {items, 0};
    int same = each_in_place(deque, same_item, &s) && s.at == PyList_GET_SIZE(items);
    Py_DECREF(items);
    return same;
}

/* `deque_type` set when collections.deque has 3.11's size and reads in place as it iterates: deques
   of 0 to 700 items, bounded and not, after appends on both sides and pops (every block boundary and
   start index the checks reach). -1 only when Python itself fails. */
static int check_deque_layout(void) {
    PyObject *collections = PyImport_ImportModule("collections");
    PyObject *type = collections == NULL ? NULL : PyObject_GetAttrString(collections, "deque");
    Py_XDECREF(collections);
    if (type == NULL)
        return -1;
    int ok = PyType_Check(type) && ((PyTypeObject *)type)->tp_basicsize == (Py_ssize_t)sizeof(DequeHead);
    static const char *shapes[] = {
        "deque()", "deque(range(1))", "deque(range(63))", "deque(range(64))", "deque(range(65))",
        "deque(range(700), maxlen=512)", "deque(range(-40, 0)) + deque(range(90))",
        "(lambda d: (d.extendleft(range(70)), d.rotate(5), [d.popleft() for _ in range(33)], d)[-1])(deque(range(200)))",
    };
    PyObject *globals = ok ? Py_BuildValue("{sO}", "deque", type) : NULL;
    for (size_t i = 0; ok > 0 && globals != NULL && i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        PyObject *deque = PyRun_String(shapes[i], Py_eval_input, globals, globals);
        ok = deque == NULL ? -1 : Py_TYPE(deque) != (PyTypeObject *)type ? 0 : reads_as_iterated(deque);
        Py_XDECREF(deque);
    }
    if (ok > 0)
        deque_type = (PyTypeObject *)Py_NewRef(type);
    Py_XDECREF(globals);
    Py_DECREF(type);
    return ok < 0 ? -1 : 0;
}
#else
static int check_deque_layout(void) { return 0; }
#endif

/* Behaviour counts of `evidence` (packed `ts_ms << 8 | code` ints) at or after `start`, as
   `windows.count_windows` counts them (each record read by `small_ll`: every one, ms << 8 | code, is
   below 2**60, two digits). */
static int count_evidence(PyObject *evidence, long long start, int32_t *counts, const Layout *L) {
    memset(counts, 0, (size_t)L->n_cnt * sizeof(int32_t));
    if (is_ring(evidence)) {  /* int64 records in one buffer: no object read */
        const RingObject *r = (const RingObject *)evidence;
        for (Py_ssize_t i = 0; i < r->len; i++)
            count_record(ring_at(r, i), start, counts, L);
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (in_place && deque_type != NULL && Py_TYPE(evidence) == deque_type) {
        Tally t = {start, counts, L};
        if (each_in_place(evidence, tally, &t))
            return 0;
        memset(counts, 0, (size_t)L->n_cnt * sizeof(int32_t));  /* a record that is not a small int */
    }
#endif
    PyObject *it = PyObject_GetIter(evidence);
    if (it == NULL)
        return -1;
    iternextfunc next = Py_TYPE(it)->tp_iternext;  /* the iterator's own slot: no PyIter_Next per record */
    PyObject *item;
    while ((item = next(it)) != NULL) {
        long long packed;
        int rc = small_ll(item, &packed) ? 0 : as_ll(item, &packed);
        Py_DECREF(item);
        if (rc < 0)
            break;
        count_record(packed, start, counts, L);
    }
    Py_DECREF(it);
    if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_StopIteration))
        PyErr_Clear();  /* the end of an iterator written in Python, as PyIter_Next takes it */
    return PyErr_Occurred() ? -1 : 0;
}

/* The facts `features.static_facts` gives: the node's cache when set, else a call. */
static int read_facts(PyObject *node, PyObject *static_facts, float *facts, const Layout *L) {
    PyObject *cached = get_attr(node, s_static);
    if (cached == NULL)
        return -1;
    PyObject *value = cached;
    if (cached == Py_None) {
        Py_DECREF(cached);
        value = PyObject_CallOneArg(static_facts, node);
        if (value == NULL)
            return -1;
    }
    PyObject *seq = PySequence_Tuple(value);
    Py_DECREF(value);
    if (seq == NULL)
        return -1;
    int rc = 0;
    if (PyTuple_GET_SIZE(seq) != L->n_static) {
        PyErr_Format(PyExc_ValueError, "static facts: %zd values, expected %zd", PyTuple_GET_SIZE(seq), L->n_static);
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < L->n_static; i++) {
        double d = PyFloat_AsDouble(PyTuple_GET_ITEM(seq, i));
        if (d == -1.0 && PyErr_Occurred())
            rc = -1;
        facts[i] = (float)d;
    }
    Py_DECREF(seq);
    return rc;
}

static int fill_rec(Rec *r, int32_t *counts, PyObject *node, long long start, PyObject *static_facts,
                    const Layout *L) {
    long long cls;
    if (attr_ll(node, s_image_cls, &cls) < 0 || class_in_range(cls, L) < 0)
        return -1;
    r->cls = (int)cls;
    if (mask_of(node, L, &r->mask) < 0 || read_facts(node, static_facts, r->facts, L) < 0)
        return -1;
    if ((r->image = get_attr(node, s_image)) == NULL)
        return -1;
    PyObject *evidence = get_attr(node, s_evidence);
    if (evidence == NULL)
        return -1;
    int rc = count_evidence(evidence, start, counts, L);
    Py_DECREF(evidence);
    return rc;
}

/* Index of the record of (node, start), read now if it is new; -1 with an exception on failure. */
static Py_ssize_t lookup(Table *t, PyObject *node, long long start, PyObject *static_facts, const Layout *L) {
    if (t->n_slots) {
        size_t at = slot_hash(node, start) & (t->n_slots - 1);
        for (; t->slots[at]; at = (at + 1) & (t->n_slots - 1)) {
            const Rec *r = &t->recs[t->slots[at] - 1];
            if (r->node == node && r->start == start)
                return t->slots[at] - 1;
        }
    }
    if (t->n == t->cap && table_grow(t) < 0)
        return -1;
    const Py_ssize_t i = t->n;
    Rec *r = &t->recs[i];
    memset(r, 0, sizeof(*r));
    if (fill_rec(r, t->counts + i * t->n_cnt, node, start, static_facts, L) < 0) {
        Py_XDECREF(r->image);
        return -1;
    }
    Py_INCREF(node);
    r->node = node, r->start = start;
    t->n++;
    size_t at = slot_hash(node, start) & (t->n_slots - 1);
    while (t->slots[at])
        at = (at + 1) & (t->n_slots - 1);
    t->slots[at] = i + 1;
    return i;
}

/* --- one row ------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *forest, *node, *ancestors, *descendants, *depths; /* the last three: tuples, strong */
    long long start;
} Ctx;

/* Image class of ancestors[level], -1 when there is none or it is a placeholder (`_class_of`). */
static int ancestor_class(const Ctx *c, Py_ssize_t level, const Layout *L, long long *cls) {
    *cls = -1;
    if (PyTuple_GET_SIZE(c->ancestors) <= level)
        return 0;
    PyObject *a = PyTuple_GET_ITEM(c->ancestors, level);
    int is = is_placeholder(a, L);
    if (is != 0)
        return is < 0 ? -1 : 0;
    if (attr_ll(a, s_image_cls, cls) < 0)
        return -1;
    return class_in_range(*cls, L);
}

static int set_classes(float *out, const Ctx *c, int own, const Layout *L) {
    long long parent, grand;
    if (ancestor_class(c, 0, L, &parent) < 0 || ancestor_class(c, 1, L, &grand) < 0)
        return -1;
    out[L->img + own] = 1.0f;
    if (parent >= 0)
        out[L->parent + parent] = 1.0f;
    if (grand >= 0)
        out[L->gparent + grand] = 1.0f;
    out[L->parent_unknown] = parent < 0;
    for (int k = 0; k < N_PAIRS; k++)
        if (parent >= 0 && (L->pair_parent[k] >> parent & 1) && (L->pair_own[k] >> own & 1))
            out[L->pair_col[k]] = 1.0f;
    return 0;
}

/* nodes.get(key) as a new reference (None when absent). */
static PyObject *node_get(PyObject *nodes, PyObject *key) {
    if (PyDict_CheckExact(nodes)) {
        PyObject *found = PyDict_GetItemWithError(nodes, key);
        return found != NULL ? Py_NewRef(found) : PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    return PyObject_CallMethodOneArg(nodes, s_get, key);
}

/* `features._depth`: known ancestors, at most the cap, walking up past the context's own. */
static int depth_of(const Ctx *c, const Layout *L, long long *depth) {
    const Py_ssize_t n = PyTuple_GET_SIZE(c->ancestors);
    *depth = n < L->depth_cap ? n : L->depth_cap;
    if (n == 0)
        return 0;
    if (n < L->ancestor_depth) {
        PyObject *limits = get_attr(c->forest, s_limits);
        long long max_depth;
        int rc = limits == NULL ? -1 : attr_ll(limits, s_max_depth, &max_depth);
        Py_XDECREF(limits);
        if (rc < 0)
            return -1;
        if (max_depth >= L->ancestor_depth)
            return 0;
    }
    PyObject *nodes = get_attr(c->forest, s_nodes);
    if (nodes == NULL)
        return -1;
    PyObject *parent = get_attr(PyTuple_GET_ITEM(c->ancestors, n - 1), s_parent_key);
    *depth = n;
    int rc = parent == NULL ? -1 : 0;
    while (rc == 0 && parent != Py_None && *depth < L->depth_cap) {
        PyObject *up = node_get(nodes, parent);
        Py_DECREF(parent);
        parent = NULL;
        if (up == NULL) {
            rc = -1;
        } else if (up == Py_None) {
            Py_DECREF(up);
            break;
        } else {
            ++*depth;
            parent = get_attr(up, s_parent_key);
            Py_DECREF(up);
            rc = parent == NULL ? -1 : 0;
        }
    }
    Py_XDECREF(parent);
    Py_DECREF(nodes);
    return rc;
}

/* log1p of the seconds between start and exit (or the forest's watermark), `_process_scalars`. */
static int lifetime_log(const Ctx *c, float *out) {
    PyObject *start = get_attr(c->node, s_start_ms);
    if (start == NULL)
        return -1;
    if (start == Py_None) {
        Py_DECREF(start);
        *out = 0.0f;
        return 0;
    }
    PyObject *end = get_attr(c->node, s_end_ms);
    if (end == Py_None) {
        Py_DECREF(end);
        end = get_attr(c->forest, s_watermark_ms);
    }
    PyObject *span = end == NULL ? NULL : PyNumber_Subtract(end, start);
    Py_XDECREF(end);
    Py_DECREF(start);
    if (span == NULL)
        return -1;
    const int negative = PyObject_RichCompareBool(span, zero, Py_LT);  /* max(0, span) / 1000 */
    PyObject *seconds = negative < 0 ? NULL : PyNumber_TrueDivide(negative ? zero : span, thousand);
    Py_DECREF(span);
    double s = seconds == NULL ? -1.0 : PyFloat_AsDouble(seconds);
    Py_XDECREF(seconds);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    *out = (float)log1p(s);
    return 0;
}

static int set_process(float *out, const Ctx *c, const Layout *L) {
    float v[N_PROCESS_COLS];
    long long depth;
    const int exited = is_exited(c->node, L);
    if (attr_float(c->node, s_started, &v[0]) < 0 || exited < 0 || depth_of(c, L, &depth) < 0 ||
        lifetime_log(c, &v[3]) < 0)
        return -1;
    v[1] = (float)exited;
    v[2] = (float)depth;
    PyObject *children = get_attr(c->node, s_children);
    Py_ssize_t n_children = children == NULL ? -1 : PyObject_Length(children);
    Py_XDECREF(children);
    if (n_children < 0)
        return -1;
    v[4] = (float)n_children;
    const Py_ssize_t n_desc = PyTuple_GET_SIZE(c->depths);
    v[5] = (float)n_desc;
    v[6] = 0.0f;
    if (n_desc) {
        double d = PyFloat_AsDouble(PyTuple_GET_ITEM(c->depths, n_desc - 1));
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        v[6] = (float)d;
    }
    for (int k = 0; k < N_PROCESS_COLS; k++)
        out[L->process_col[k]] = v[k];
    return 0;
}

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
/* A connection record read in place: an exact (small int, str, int) tuple; hashing and comparing those
   in a set that holds only exact strs and ints runs no Python code, so the deque cannot change meanwhile. */
static int plain_conn(PyObject *item, void *arg) {
    (void)arg;
    long long ts;
    return PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 3 && small_ll(PyTuple_GET_ITEM(item, 0), &ts) &&
           PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 1)) && PyLong_CheckExact(PyTuple_GET_ITEM(item, 2));
}

typedef struct {
    long long start;
    PyObject *ips, *ports;
} ConnSets;

static int add_conn(PyObject *item, void *arg) {
    const ConnSets *c = arg;
    long long ts = 0;
    if (!small_ll(PyTuple_GET_ITEM(item, 0), &ts) || ts < c->start)  /* `plain_conn` checked it is one */
        return 1;
    return PySet_Add(c->ips, PyTuple_GET_ITEM(item, 1)) == 0 &&
           (c->ports == NULL || PySet_Add(c->ports, PyTuple_GET_ITEM(item, 2)) == 0);
}
#endif

/* Add the IPs (and, for the process itself, ports) of `node`'s connection records at or after
   `start` to the sets (`features._in_window`). `*plain` says the sets hold only exact strs and ints
   (clear them to set it): then an exact deque of plain records is read in place (see `count_evidence`);
   anything else goes through the iterator and clears `*plain`. */
static int add_conns(PyObject *node, long long start, PyObject *ips, PyObject *ports, int *plain) {
    PyObject *conns = get_attr(node, s_conns);
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (conns != NULL && *plain && in_place && deque_type != NULL && Py_TYPE(conns) == deque_type &&
        each_in_place(conns, plain_conn, NULL)) {
        ConnSets sets = {start, ips, ports};
        const int added = each_in_place(conns, add_conn, &sets);
        Py_DECREF(conns);
        return added ? 0 : -1;  /* only a set's MemoryError stops the walk */
    }
#endif
    *plain = 0;
    PyObject *it = conns == NULL ? NULL : PyObject_GetIter(conns);
    Py_XDECREF(conns);
    if (it == NULL)
        return -1;
    PyObject *item;
    int rc = 0;
    iternextfunc next = Py_TYPE(it)->tp_iternext;
    while (rc == 0 && (item = next(it)) != NULL) {
        PyObject *record = PySequence_Tuple(item);
        Py_DECREF(item);
        if (record == NULL || PyTuple_GET_SIZE(record) != 3) {
            if (record != NULL)
                PyErr_SetString(PyExc_ValueError, "a connection record is not (ts, ip, port)");
            Py_XDECREF(record);
            rc = -1;
            break;
        }
        long long ts;
        rc = small_ll(PyTuple_GET_ITEM(record, 0), &ts) ? 0 : as_ll(PyTuple_GET_ITEM(record, 0), &ts);
        if (rc == 0 && ts >= start) {
            rc = PySet_Add(ips, PyTuple_GET_ITEM(record, 1));
            if (rc == 0 && ports != NULL)
                rc = PySet_Add(ports, PyTuple_GET_ITEM(record, 2));
        }
        Py_DECREF(record);
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_StopIteration))
        PyErr_Clear();  /* the end of an iterator written in Python */
    return rc < 0 || PyErr_Occurred() ? -1 : 0;
}

/* Distinct IPs and ports without sets, for a row whose connection records are all plain (`plain_conn`,
   read in place): two open-addressing tables, one of borrowed exact strs (equal when the same object or
   the same text, as a set compares them) with their hashes, one of port values. The deques whose strs
   the table borrows are held until the row is counted, and no Python code runs meanwhile (an exact str's
   hash and comparison run none), so nothing the table points to can change or go. What the sets count,
   without a set entry's reference, resize and clear per row (~0.4 us a row: BENCHMARKS.md, "Session AE"). */
typedef struct {
    PyObject **ips;
    Py_hash_t *hashes;
    long long *ports;
    unsigned char *port_used;
    Py_ssize_t cap;       /* slots of each table allocated (a power of two) */
    Py_ssize_t mask;      /* this row's slots - 1 */
    Py_ssize_t n_ips, n_ports;
    long long start;
    int own;              /* the row's own process: its ports count too */
} Distinct;

static void distinct_free(Distinct *d) {
    PyMem_Free(d->ips), PyMem_Free(d->hashes), PyMem_Free(d->ports), PyMem_Free(d->port_used);
    memset(d, 0, sizeof(*d));
}

/* Empty tables of at least 2 * `records` slots. -1 with MemoryError set. */
static int distinct_reset(Distinct *d, Py_ssize_t records) {
    Py_ssize_t slots = 16;
    while (slots < 2 * records)
        slots *= 2;
    if (slots > d->cap) {
        distinct_free(d);
        d->ips = PyMem_Malloc((size_t)slots * sizeof(PyObject *));
        d->hashes = PyMem_Malloc((size_t)slots * sizeof(Py_hash_t));
        d->ports = PyMem_Malloc((size_t)slots * sizeof(long long));
        d->port_used = PyMem_Malloc((size_t)slots);
        if (d->ips == NULL || d->hashes == NULL || d->ports == NULL || d->port_used == NULL) {
            distinct_free(d);
            PyErr_NoMemory();
            return -1;
        }
        d->cap = slots;
    }
    memset(d->ips, 0, (size_t)slots * sizeof(PyObject *));
    memset(d->port_used, 0, (size_t)slots);
    d->mask = slots - 1, d->n_ips = d->n_ports = 0;
    return 0;
}

static void distinct_ip(Distinct *d, PyObject *ip, Py_hash_t hash) {
    for (Py_ssize_t at = (Py_ssize_t)((size_t)hash & (size_t)d->mask);; at = (at + 1) & d->mask) {
        PyObject *held = d->ips[at];
        if (held == NULL) {
            d->ips[at] = ip, d->hashes[at] = hash, d->n_ips++;
            return;
        }
        if (held == ip || (d->hashes[at] == hash && PyUnicode_Compare(held, ip) == 0))
            return;
    }
}

static void distinct_port(Distinct *d, long long port) {
    const uint64_t mixed = (uint64_t)port * 0x9E3779B97F4A7C15ULL;
    for (Py_ssize_t at = (Py_ssize_t)((mixed >> 32) & (uint64_t)d->mask);; at = (at + 1) & d->mask) {
        if (!d->port_used[at]) {
            d->port_used[at] = 1, d->ports[at] = port, d->n_ports++;
            return;
        }
        if (d->ports[at] == port)
            return;
    }
}

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
/* One record into the tables; 0 (stop) when it is not plain. */
static int distinct_conn(PyObject *item, void *arg) {
    Distinct *d = arg;
    if (!plain_conn(item, NULL))
        return 0;
    long long ts = 0, port = 0;
    small_ll(PyTuple_GET_ITEM(item, 0), &ts);  /* `plain_conn` checked it is one */
    if (ts < d->start)
        return 1;
    PyObject *ip = PyTuple_GET_ITEM(item, 1);
    const Py_hash_t hash = PyObject_Hash(ip);  /* an exact str's: cached after the first, runs no code */
    if (hash == -1) {
        PyErr_Clear();
        return 0;
    }
    if (d->own) {
        int overflow = 0;
        port = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(item, 2), &overflow);
        if (overflow || (port == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;  /* a port past int64: the sets count it */
        }
        distinct_port(d, port);
    }
    distinct_ip(d, ip, hash);
    return 1;
}

#define DISTINCT_HELD 257  /* the row's process and its window-active descendants (`features.MAX_DESCENDANTS`
                             256) held on the stack; a row with more is counted by the sets */

/* `set_distinct` without sets: 1 when counted, 0 when a record or a deque is not plain (the sets count
   the row then), -1 with an exception set. */
static int distinct_fast(float *out, const Ctx *c, Distinct *d, const Layout *L) {
    const Py_ssize_t n = 1 + PyTuple_GET_SIZE(c->descendants);
    if (n > DISTINCT_HELD)
        return 0;
    PyObject *held[DISTINCT_HELD];
    Py_ssize_t got = 0, records = 0;
    int rc = 1;
    for (; got < n; got++) {
        PyObject *node = got == 0 ? c->node : PyTuple_GET_ITEM(c->descendants, got - 1);
        if ((held[got] = get_attr(node, s_conns)) == NULL) {
            rc = -1;
            break;
        }
        if (Py_TYPE(held[got]) != deque_type) {
            got++, rc = 0;
            break;
        }
        records += Py_SIZE(held[got]);
    }
    if (rc == 1)
        rc = distinct_reset(d, records) < 0 ? -1 : 1;
    d->start = c->start;
    for (Py_ssize_t k = 0; rc == 1 && k < n; k++) {
        d->own = k == 0;
        if (!each_in_place(held[k], distinct_conn, d))
            rc = 0;
        else if (k == 0)
            out[L->own_ips] = (float)d->n_ips, out[L->own_ports] = (float)d->n_ports;
    }
    if (rc == 1)
        out[L->sub_ips] = (float)d->n_ips;
    for (Py_ssize_t k = 0; k < got; k++)
        Py_DECREF(held[k]);
    return rc;
}
#endif

static int set_distinct(float *out, const Ctx *c, PyObject *ips, PyObject *ports, Distinct *d, const Layout *L) {
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (in_place && deque_type != NULL) {
        const int fast = distinct_fast(out, c, d, L);
        if (fast != 0)
            return fast < 0 ? -1 : 0;
    }
#else
    (void)d;
#endif
    int plain = 1;  /* the sets are empty */
    if (PySet_Clear(ips) < 0 || PySet_Clear(ports) < 0 || add_conns(c->node, c->start, ips, ports, &plain) < 0)
        return -1;
    out[L->own_ips] = (float)PySet_GET_SIZE(ips);
    out[L->own_ports] = (float)PySet_GET_SIZE(ports);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c->descendants); i++)
        if (add_conns(PyTuple_GET_ITEM(c->descendants, i), c->start, ips, NULL, &plain) < 0)
            return -1;
    out[L->sub_ips] = (float)PySet_GET_SIZE(ips);
    return 0;
}

static void set_bits(float *out, Py_ssize_t first, uint64_t mask, const Layout *L) {
    for (Py_ssize_t i = 0; i < L->n_ind; i++)
        out[first + i] = (float)(mask >> i & 1);
}

static uint64_t low_bits(const Layout *L) { return L->n_ind >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << L->n_ind) - 1; }

/* Descendant classes, images, user-writable count, indicator bits and counters of one row. */
static int set_subtree(float *out, const Ctx *c, Py_ssize_t own, Table *t, PyObject *images,
                       PyObject *static_facts, const Layout *L) {
    const Py_ssize_t n_desc = PyTuple_GET_SIZE(c->descendants), n_cnt = L->n_cnt;
    float sum[256];
    double user_writable = 0.0;
    uint64_t desc_mask = 0, anc_mask = 0;
    long long groups[N_GROUPS] = {0};
    if (PySet_Clear(images) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n_desc; i++) {
        Py_ssize_t d = lookup(t, PyTuple_GET_ITEM(c->descendants, i), c->start, static_facts, L);
        if (d < 0)
            return -1;
        const Rec *r = &t->recs[d];
        const int32_t *counts = t->counts + d * n_cnt;
        for (int k = 0; k < N_GROUPS; k++)
            groups[k] += L->group_cls[k] >> r->cls & 1;
        user_writable += (double)r->facts[N_STATIC_COLS];
        desc_mask |= r->mask;
        if (PySet_Add(images, r->image) < 0)
            return -1;
        for (Py_ssize_t k = 0; k < n_cnt; k++)  /* float32, in row order: numpy's add.reduceat */
            sum[k] = i == 0 ? (float)counts[k] : sum[k] + (float)counts[k];
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c->ancestors); i++) {
        uint64_t m;
        if (mask_of(PyTuple_GET_ITEM(c->ancestors, i), L, &m) < 0)
            return -1;
        anc_mask |= m;
    }
    const Rec *o = &t->recs[own];
    const int32_t *own_counts = t->counts + own * n_cnt;
    for (int k = 0; k < N_GROUPS; k++)
        out[L->group_col[k]] = (float)groups[k];
    out[L->user_writable] = (float)user_writable;
    out[L->distinct_images] = (float)PySet_GET_SIZE(images);
    const uint64_t low = low_bits(L), self = o->mask & low;
    set_bits(out, L->self_ind, self, L);
    set_bits(out, L->desc_ind, desc_mask, L);
    set_bits(out, L->anc_ind, anc_mask, L);
    out[L->self_ind_count] = (float)__builtin_popcountll(self);
    out[L->tree_ind_count] = (float)__builtin_popcountll((self | desc_mask | anc_mask) & low);
    for (Py_ssize_t k = 0; k < n_cnt; k++) {
        const float mine = (float)own_counts[k];
        out[L->own_cnt + k] = mine;
        out[L->sub_cnt + k] = n_desc ? mine + sum[k] : mine;
    }
    return 0;
}

typedef struct {
    Table table;
    PyObject *images, *ips, *ports;
    Distinct distinct;
    PyObject *static_facts;
    const Layout *L;
} Work;

static int one_row(float *out, const Ctx *c, Work *w) {
    const Layout *L = w->L;
    Py_ssize_t own = lookup(&w->table, c->node, c->start, w->static_facts, L);
    if (own < 0)
        return -1;
    const Rec *o = &w->table.recs[own];
    for (int k = 0; k < N_STATIC_COLS; k++)
        out[L->static_col[k]] = o->facts[k];
    if (set_classes(out, c, w->table.recs[own].cls, L) < 0 || set_process(out, c, L) < 0 ||
        set_subtree(out, c, own, &w->table, w->images, w->static_facts, L) < 0)
        return -1;
    return set_distinct(out, c, w->ips, w->ports, &w->distinct, L);
}

/* A RowContext (forest, node, ancestors, descendants, depths, window_start_ms) with its sequences
   copied to tuples, so Python code run while the row is computed cannot resize them. */
static int read_ctx(PyObject *context, Ctx *c) {
    memset(c, 0, sizeof(*c));
    if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
        PyErr_SetString(PyExc_TypeError, "a row context must be a RowContext");
        return -1;
    }
    c->forest = PyTuple_GET_ITEM(context, 0), c->node = PyTuple_GET_ITEM(context, 1);
    if ((c->ancestors = PySequence_Tuple(PyTuple_GET_ITEM(context, 2))) == NULL ||
        (c->descendants = PySequence_Tuple(PyTuple_GET_ITEM(context, 3))) == NULL ||
        (c->depths = PySequence_Tuple(PyTuple_GET_ITEM(context, 4))) == NULL)
        return -1;
    return as_ll(PyTuple_GET_ITEM(context, 5), &c->start);
}

static void drop_ctx(Ctx *c) {
    Py_XDECREF(c->ancestors);
    Py_XDECREF(c->descendants);
    Py_XDECREF(c->depths);
}

/* The contexts as a tuple (new reference) with `matrix` as a writable float32 buffer in C order, one row
   per context; NULL with an error (`who` names the caller) when it is not one. The caller releases both. */
static PyObject *rows_and_matrix(PyObject *contexts_arg, PyObject *matrix, Py_buffer *view, const char *who) {
    PyObject *contexts = PySequence_Tuple(contexts_arg);
    if (contexts == NULL)
        return NULL;
    if (PyObject_GetBuffer(matrix, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        Py_DECREF(contexts);
        return NULL;
    }
    if (view->ndim != 2 || view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0 ||
        view->shape[0] != PyTuple_GET_SIZE(contexts)) {
        PyErr_Format(PyExc_ValueError, "%s: matrix must be float32 in C order with %zd rows", who,
                     PyTuple_GET_SIZE(contexts));
        PyBuffer_Release(view);
        Py_DECREF(contexts);
        return NULL;
    }
    return contexts;
}

/* rows(contexts, matrix, static_facts, layout, node_type): fill `matrix` (zeros, float32, C order, one row per
   context) as features._numpy_rows does. */
static PyObject *rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "rows(contexts, matrix, static_facts, layout, node_type)");
        return NULL;
    }
    Layout L;
    if (read_layout(args[3], &L) < 0)
        return NULL;
    if (!PyType_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "node_type must be a class (ProcessNode)");
        return NULL;
    }
    L.plain = (PyTypeObject *)args[4];  /* borrowed: the caller's reference lives through the call */
    Py_buffer view;
    PyObject *contexts = rows_and_matrix(args[0], args[1], &view, "rows");
    if (contexts == NULL)
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(contexts);
    PyObject *result = NULL;
    Work w = {.static_facts = args[2], .L = &L};
    w.table.n_cnt = L.n_cnt;
    if (view.shape[1] != L.n_features) {
        PyErr_Format(PyExc_ValueError, "rows: matrix must be float32 of shape (%zd, %zd) in C order", n,
                     L.n_features);
        goto out;
    }
    if ((w.images = PySet_New(NULL)) == NULL || (w.ips = PySet_New(NULL)) == NULL ||
        (w.ports = PySet_New(NULL)) == NULL)
        goto out;
    for (Py_ssize_t r = 0; r < n; r++) {
        Ctx c;
        int rc = read_ctx(PyTuple_GET_ITEM(contexts, r), &c);
        if (rc == 0)
            rc = one_row((float *)view.buf + r * L.n_features, &c, &w);
        drop_ctx(&c);
        if (rc < 0)
            goto out;
    }
    result = Py_NewRef(Py_None);
out:
    table_free(&w.table);
    distinct_free(&w.distinct);
    Py_XDECREF(w.images);
    Py_XDECREF(w.ips);
    Py_XDECREF(w.ports);
    PyBuffer_Release(&view);
    Py_DECREF(contexts);
    return result;
}

/* --- lone-command bits: `features._fill_lone` ------------------------------------------------------ */

typedef struct {
    PyObject *mask;            /* `indicators.lone_mask`, borrowed */
    PyObject *seen;            /* a dict: exact str of 1..cache_chars chars -> its mask (an exact int), borrowed */
    Py_ssize_t cache_chars, cache_max;  /* what `seen` may hold: line length, entries (then it is cleared) */
    int remember;              /* lines longer than cache_chars: read and keep each node's memo (`ProcessNode.lone`) */
} LoneMask;

/* The mask the node's memo (`ProcessNode.lone`: (line, mask)) holds for `text`, as a new reference, when
   the memo was made from this very str object; NULL otherwise, and with an exception set only when the
   node has no `lone` to read. */
static PyObject *memo_for(PyObject *node, PyObject *text) {
    PyObject *memo = get_attr(node, s_lone);
    if (memo == NULL)
        return NULL;
    PyObject *found = NULL;
    if (PyTuple_CheckExact(memo) && PyTuple_GET_SIZE(memo) == 2 && PyTuple_GET_ITEM(memo, 0) == text &&
        PyLong_CheckExact(PyTuple_GET_ITEM(memo, 1)))
        found = Py_NewRef(PyTuple_GET_ITEM(memo, 1));
    Py_DECREF(memo);
    return found;
}

/* `lone_mask(text)` of the node's command line as a uint64. An exact str of 1..cache_chars characters is
   looked up in `seen` first and its answer kept there. A longer one, with `remember`, is read once per
   process: the node's memo answers, and what `lone_mask` finds is kept there (a 5,000-character launcher,
   the ancestor of every row of its subtree, was read again for each of them: BENCHMARKS.md, "Session Z").
   Anything else goes through `lone_mask` itself, so its errors (and its own cache) are its own. */
static int lone_of(const LoneMask *m, PyObject *node, uint64_t *out) {
    PyObject *text = get_attr(node, s_command_line);
    if (text == NULL)
        return -1;
    const int str = PyUnicode_CheckExact(text);
    if (str && PyUnicode_GET_LENGTH(text) == 0) {
        Py_DECREF(text);
        *out = 0;
        return 0;
    }
    const int keep = str && PyUnicode_GET_LENGTH(text) <= m->cache_chars;
    const int memo = str && !keep && m->remember;
    PyObject *value = keep ? Py_XNewRef(PyDict_GetItemWithError(m->seen, text)) : memo ? memo_for(node, text) : NULL;
    if (value != NULL) {
        Py_DECREF(text);
        *out = PyLong_AsUnsignedLongLong(value);  /* an exact int this function put there */
        Py_DECREF(value);
        return PyErr_Occurred() ? -1 : 0;
    }
    if (PyErr_Occurred() || (value = PyObject_CallOneArg(m->mask, text)) == NULL) {
        Py_DECREF(text);
        return -1;
    }
    int rc = -1;
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "lone_mask must return an int");
    } else {
        *out = PyLong_AsUnsignedLongLong(value);  /* OverflowError past 64 bits or below zero */
        if (!PyErr_Occurred()) {
            rc = 0;
            if (keep && PyLong_CheckExact(value)) {
                if (PyDict_GET_SIZE(m->seen) >= m->cache_max)
                    PyDict_Clear(m->seen);  /* bounded: a flood of distinct lines starts it afresh */
                rc = PyDict_SetItem(m->seen, text, value);
            } else if (memo && PyLong_CheckExact(value)) {
                PyObject *pair = PyTuple_Pack(2, text, value);
                rc = pair == NULL ? -1 : set_attr(node, s_lone, pair);
                Py_XDECREF(pair);
            }
        }
    }
    Py_DECREF(text);
    Py_DECREF(value);
    return rc;
}

/* lone_bits(contexts, matrix, lone) -> None; lone = (lone_mask, seen, cache_chars, cache_max, own_first,
   anc_first, n, remember): set bit i of each row's own command line's `lone_mask` at column own_first + i and of
   its ancestors' (or-ed) at anc_first + i, i < n; a row whose masks are both zero is left as it is
   (zero in a fresh matrix). The bytes `features._fill_lone` writes, without a Python loop per row. */
static PyObject *lone_bits(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 8) {
        PyErr_SetString(PyExc_TypeError, "lone_bits(contexts, matrix, (lone_mask, seen, cache_chars, cache_max, "
                                         "own_first, anc_first, n, remember))");
        return NULL;
    }
    PyObject *lone = args[2];
    LoneMask m = {PyTuple_GET_ITEM(lone, 0), PyTuple_GET_ITEM(lone, 1), 0, 0, 0};
    long long v[5];
    for (int k = 0; k < 5; k++) {
        if (as_ll(PyTuple_GET_ITEM(lone, 2 + k), &v[k]) < 0)
            return NULL;
        if (v[k] < 0) {
            PyErr_SetString(PyExc_ValueError, "lone_bits: sizes and columns must be non-negative");
            return NULL;
        }
    }
    m.cache_chars = (Py_ssize_t)v[0], m.cache_max = (Py_ssize_t)v[1];
    if ((m.remember = PyObject_IsTrue(PyTuple_GET_ITEM(lone, 7))) < 0)
        return NULL;
    const Py_ssize_t own_first = (Py_ssize_t)v[2], anc_first = (Py_ssize_t)v[3], n_bits = (Py_ssize_t)v[4];
    if (!PyCallable_Check(m.mask) || !PyDict_CheckExact(m.seen) || n_bits > 64) {
        PyErr_SetString(PyExc_TypeError, "lone_bits: lone_mask, a dict and at most 64 bits");
        return NULL;
    }
    Py_buffer view;
    PyObject *contexts = rows_and_matrix(args[0], args[1], &view, "lone_bits");
    if (contexts == NULL)
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(contexts);
    PyObject *result = NULL;
    if (!in_range(own_first, n_bits, view.shape[1]) || !in_range(anc_first, n_bits, view.shape[1])) {
        PyErr_Format(PyExc_ValueError, "lone_bits: the matrix's %zd columns do not hold the lone columns",
                     view.shape[1]);
        goto out;
    }
    const Py_ssize_t width = view.shape[1];
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *context = PyTuple_GET_ITEM(contexts, r);
        if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
            PyErr_SetString(PyExc_TypeError, "a row context must be a RowContext");
            goto out;
        }
        uint64_t own, anc = 0;
        if (lone_of(&m, PyTuple_GET_ITEM(context, 1), &own) < 0)
            goto out;
        PyObject *ancestors = PySequence_Tuple(PyTuple_GET_ITEM(context, 2));  /* Python may run meanwhile */
        if (ancestors == NULL)
            goto out;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ancestors); i++) {
            uint64_t one_mask;
            if (lone_of(&m, PyTuple_GET_ITEM(ancestors, i), &one_mask) < 0) {
                Py_DECREF(ancestors);
                goto out;
            }
            anc |= one_mask;
        }
        Py_DECREF(ancestors);
        if (own | anc) {
            float *row = (float *)view.buf + r * width;
            for (Py_ssize_t i = 0; i < n_bits; i++) {
                row[own_first + i] = (float)(own >> i & 1);
                row[anc_first + i] = (float)(anc >> i & 1);
            }
        }
    }
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&view);
    Py_DECREF(contexts);
    return result;
}

/* --- row contexts: `features.row_context` ------------------------------------------------------- */

#define FEW_ANCESTORS 16  /* a walk this short fills a tuple from an array, without a list in between */

static PyObject *many_ancestors_of(PyObject *nodes, PyObject *node, Py_ssize_t depth);

/* `DeviceForest.ancestors(key, depth)`: known ancestors of `node`, nearest first, as a tuple. */
static PyObject *ancestors_of(PyObject *nodes, PyObject *node, Py_ssize_t depth) {
    if (depth > FEW_ANCESTORS)
        return many_ancestors_of(nodes, node, depth);
    PyObject *found[FEW_ANCESTORS], *at = node;  /* found: new references; at: borrowed */
    Py_ssize_t n = 0;
    int failed = 0;
    while (n < depth) {
        PyObject *parent = get_attr(at, s_parent_key);
        PyObject *up = parent == NULL || parent == Py_None ? NULL : node_get(nodes, parent);
        failed = parent == NULL || (parent != Py_None && up == NULL);
        Py_XDECREF(parent);
        if (up == NULL || up == Py_None) {
            Py_XDECREF(up);
            break;
        }
        found[n++] = at = up;
    }
    PyObject *out = failed ? NULL : PyTuple_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out == NULL)
            Py_DECREF(found[i]);
        else
            PyTuple_SET_ITEM(out, i, found[i]);
    }
    return out;
}

/* `ancestors_of` for a depth past FEW_ANCESTORS, through a list. */
static PyObject *many_ancestors_of(PyObject *nodes, PyObject *node, Py_ssize_t depth) {
    PyObject *found = PyList_New(0), *at = Py_NewRef(node);
    while (found != NULL && PyList_GET_SIZE(found) < depth) {
        PyObject *parent = get_attr(at, s_parent_key);
        PyObject *up = parent == NULL || parent == Py_None ? NULL : node_get(nodes, parent);
        int failed = parent == NULL || (parent != Py_None && up == NULL);
        Py_XDECREF(parent);
        Py_SETREF(at, up);
        if (failed)
            Py_CLEAR(found);
        if (at == NULL || at == Py_None)
            break;
        if (found != NULL && PyList_Append(found, at) < 0)
            Py_CLEAR(found);
    }
    Py_XDECREF(at);
    PyObject *out = found == NULL ? NULL : PyList_AsTuple(found);
    Py_XDECREF(found);
    return out;
}

/* `last_ms >= start` of a node, as Python compares them. */
static int active_since(PyObject *node, PyObject *start) {
    PyObject *last = get_attr(node, s_last_ms);
    if (last == NULL)
        return -1;
    int rc = PyObject_RichCompareBool(last, start, Py_GE);
    Py_DECREF(last);
    return rc;
}

/* The next level of a breadth-first walk: children of `level` not in `seen` and known to `nodes`
   (a key listed twice in one level is taken twice, as the Python comprehension takes it). */
static PyObject *next_level(PyObject *nodes, PyObject *level, PyObject *seen) {
    PyObject *next = PyList_New(0);
    for (Py_ssize_t i = 0; next != NULL && i < PyList_GET_SIZE(level); i++) {
        PyObject *children = get_attr(PyList_GET_ITEM(level, i), s_children);
        PyObject *keys = children == NULL ? NULL : PySequence_Tuple(children);
        Py_XDECREF(children);
        if (keys == NULL) {
            Py_CLEAR(next);
            break;
        }
        for (Py_ssize_t k = 0; next != NULL && k < PyTuple_GET_SIZE(keys); k++) {
            PyObject *key = PyTuple_GET_ITEM(keys, k);
            int known = PySet_Contains(seen, key);
            PyObject *child = known != 0 ? NULL : node_get(nodes, key);
            int take = child == NULL ? -1 : PyObject_IsTrue(child);
            if (known < 0 || (known == 0 && take < 0) || (take > 0 && PyList_Append(next, child) < 0))
                Py_CLEAR(next);
            Py_XDECREF(child);
        }
        Py_DECREF(keys);
    }
    return next;
}

/* `features._descendants_with_depth`: window-active descendants breadth first, and their levels. */
static int descendants_of(PyObject *forest, PyObject *nodes, PyObject *node, PyObject *start,
                          Py_ssize_t max_descendants, PyObject **found, PyObject **depths) {
    PyObject *limits = get_attr(forest, s_limits);
    long long max_depth;
    int rc = limits == NULL ? -1 : attr_ll(limits, s_max_depth, &max_depth);
    Py_XDECREF(limits);
    PyObject *level = rc < 0 ? NULL : PyList_New(1), *seen = level == NULL ? NULL : PySet_New(NULL);
    PyObject *key = seen == NULL ? NULL : get_attr(node, s_key);
    PyObject *out = key == NULL ? NULL : PyList_New(0), *levels = out == NULL ? NULL : PyList_New(0);
    if (levels == NULL || PySet_Add(seen, key) < 0)
        goto fail;
    PyList_SET_ITEM(level, 0, Py_NewRef(node));
    for (long long depth = 1; depth < max_depth; depth++) {
        Py_SETREF(level, next_level(nodes, level, seen));
        if (level == NULL)
            goto fail;
        if (PyList_GET_SIZE(level) == 0 || PyList_GET_SIZE(out) >= max_descendants)
            break;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(level); i++) {
            PyObject *k = get_attr(PyList_GET_ITEM(level, i), s_key);
            int added = k == NULL ? -1 : PySet_Add(seen, k);
            Py_XDECREF(k);
            if (added < 0)
                goto fail;
        }
        const Py_ssize_t room = max_descendants - PyList_GET_SIZE(out);
        PyObject *level_depth = PyLong_FromLongLong(depth);
        if (level_depth == NULL)
            goto fail;
        Py_ssize_t taken = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(level) && taken < room; i++) {
            PyObject *n = PyList_GET_ITEM(level, i);
            int active = active_since(n, start);
            if (active < 0 || (active && (PyList_Append(out, n) < 0 || PyList_Append(levels, level_depth) < 0))) {
                Py_DECREF(level_depth);
                goto fail;
            }
            taken += active;
        }
        Py_DECREF(level_depth);
    }
    *found = PyList_AsTuple(out), *depths = *found == NULL ? NULL : PyList_AsTuple(levels);
    rc = *depths == NULL ? -1 : 0;
    if (rc < 0)
        Py_CLEAR(*found);
    goto done;
fail:
    rc = -1;
done:
    Py_XDECREF(level);
    Py_XDECREF(seen);
    Py_XDECREF(key);
    Py_XDECREF(out);
    Py_XDECREF(levels);
    return rc;
}

/* Off the cycle collector's lists, when tracked: an exact tuple of a context's nodes or depths, or the
   context itself (see `make_row`). */
static void untrack(PyObject *obj) {
    if (PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
}

/* row_type(*fields). For a tuple subclass (the NamedTuple RowContext) as its generated __new__ builds
   it, `tuple.__new__(row_type, fields)`, without running that __new__'s Python frame.
   Such a context and its tuples of nodes and depths (made here, exact tuples) are taken off the cycle
   collector's lists: a flush makes one per scored row (~0.2 per event) and they lived through one to
   three young collections each, visited with every node they name, though no cycle can run through
   them (they hold the forest, its nodes, ints; nothing a forest or a node holds refers to a context).
   They are freed by their reference counts as before; what they hold stays alive while they do. */
static PyObject *make_row(PyObject *row_type, PyObject **fields) {
    if (!PyType_Check(row_type) || !PyType_IsSubtype((PyTypeObject *)row_type, &PyTuple_Type))
        return PyObject_Vectorcall(row_type, fields, 6, NULL);
    PyTypeObject *type = (PyTypeObject *)row_type;
    PyObject *row = type == &PyTuple_Type ? PyTuple_New(6) : type->tp_alloc(type, 6);  /* tuple_subtype_new's */
    if (row == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 6; i++)
        PyTuple_SET_ITEM(row, i, Py_NewRef(fields[i]));
    for (Py_ssize_t i = 2; i < 5; i++)
        if (PyTuple_CheckExact(fields[i]))
            untrack(fields[i]);
    untrack(row);
    return row;
}

/* ancestor_depth and max_descendants as sizes; -1 with an error set when one is negative or not an int. */
static int read_bounds(PyObject *depth_arg, PyObject *max_arg, Py_ssize_t *ancestor_depth, Py_ssize_t *max_descendants) {
    if ((*ancestor_depth = PyLong_AsSsize_t(depth_arg)) < 0 || (*max_descendants = PyLong_AsSsize_t(max_arg)) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "ancestor_depth and max_descendants must be >= 0");
        return -1;
    }
    return 0;
}

/* context_of(forest, key, window_ms, row_type, ancestor_depth, max_descendants) -> row_type(forest, node,
   ancestors, descendants, depths, window_start_ms), as features.row_context builds it (row_type: a
   NamedTuple class, or any callable taking the six fields). */
/* The window start last computed in one `contexts` call, and the watermark object it was computed from:
   rows of one device follow each other, and their forest's watermark is the same int object. */
typedef struct {
    PyObject *watermark, *start;
} Starts;

/* sliding_start: watermark - window + 1, as a new reference (from `cache` when its watermark is this one). */
static PyObject *start_of(PyObject *watermark, PyObject *window_ms, Starts *cache) {
    if (cache != NULL && cache->watermark == watermark)
        return Py_NewRef(cache->start);
    PyObject *end = PyNumber_Subtract(watermark, window_ms);
    PyObject *start = end == NULL ? NULL : PyNumber_Add(end, one);
    Py_XDECREF(end);
    if (start != NULL && cache != NULL) {
        Py_XSETREF(cache->watermark, Py_NewRef(watermark));
        Py_XSETREF(cache->start, Py_NewRef(start));
    }
    return start;
}

static PyObject *context_of(PyObject *forest, PyObject *key, PyObject *window_ms, PyObject *row_type,
                            Py_ssize_t ancestor_depth, Py_ssize_t max_descendants, Starts *cache) {
    PyObject *result = NULL, *ancestors = NULL, *found = NULL, *depths = NULL;
    PyObject *watermark = get_attr(forest, s_watermark_ms);
    PyObject *start = watermark == NULL ? NULL : start_of(watermark, window_ms, cache);
    PyObject *nodes = start == NULL ? NULL : get_attr(forest, s_nodes);
    PyObject *node = nodes == NULL ? NULL : PyObject_GetItem(nodes, key);
    PyObject *limits = node == NULL ? NULL : get_attr(forest, s_limits);
    long long max_depth;
    if (limits == NULL || attr_ll(limits, s_max_depth, &max_depth) < 0)
        goto out;
    const Py_ssize_t depth = max_depth < ancestor_depth ? (Py_ssize_t)(max_depth < 0 ? 0 : max_depth) : ancestor_depth;
    PyObject *children = get_attr(node, s_children);
    int has_children = children == NULL ? -1 : PyObject_IsTrue(children);
    Py_XDECREF(children);
    if (has_children < 0)
        goto out;
    if (!has_children) {  /* most rows are leaves */
        found = PyTuple_New(0), depths = found == NULL ? NULL : PyTuple_New(0);
        if (depths == NULL)
            goto out;
    } else if (descendants_of(forest, nodes, node, start, max_descendants, &found, &depths) < 0) {
        goto out;
    }
    if ((ancestors = ancestors_of(nodes, node, depth)) == NULL)
        goto out;
    result = make_row(row_type, (PyObject *[6]){forest, node, ancestors, found, depths, start});
out:
    Py_XDECREF(watermark);
    Py_XDECREF(start);
    Py_XDECREF(nodes);
    Py_XDECREF(node);
    Py_XDECREF(limits);
    Py_XDECREF(ancestors);
    Py_XDECREF(found);
    Py_XDECREF(depths);
    return result;
}

/* context(forest, key, window_ms, row_type, ancestor_depth, max_descendants): `context_of` from Python. */
static PyObject *context(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Py_ssize_t ancestor_depth, max_descendants;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "context(forest, key, window_ms, row_type, ancestor_depth, max_descendants)");
        return NULL;
    }
    if (read_bounds(args[4], args[5], &ancestor_depth, &max_descendants) < 0)
        return NULL;
    return context_of(args[0], args[1], args[2], args[3], ancestor_depth, max_descendants, NULL);
}

/* contexts(rows, window_ms, row_type, ancestor_depth, max_descendants) -> [context(forest, node.key, ...) for
   forest, node in rows]: a flush's contexts in one call. */
static PyObject *contexts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Py_ssize_t ancestor_depth, max_descendants;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "contexts(rows, window_ms, row_type, ancestor_depth, max_descendants)");
        return NULL;
    }
    if (read_bounds(args[3], args[4], &ancestor_depth, &max_descendants) < 0)
        return NULL;
    PyObject *rows = PySequence_Tuple(args[0]);  /* a copy: code run per row cannot resize it */
    if (rows == NULL)
        return NULL;
    PyObject *out = PyList_New(PyTuple_GET_SIZE(rows));
    Starts cache = {NULL, NULL};
    for (Py_ssize_t i = 0; out != NULL && i < PyTuple_GET_SIZE(rows); i++) {
        PyObject *row = PyTuple_GET_ITEM(rows, i), *key = NULL, *ctx = NULL;
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2)
            PyErr_SetString(PyExc_TypeError, "a row must be a (forest, node) tuple");
        else if ((key = get_attr(PyTuple_GET_ITEM(row, 1), s_key)) != NULL)
            ctx = context_of(PyTuple_GET_ITEM(row, 0), key, args[1], args[2], ancestor_depth, max_descendants, &cache);
        Py_XDECREF(key);
        if (ctx == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, ctx);
    }
    Py_XDECREF(cache.watermark);
    Py_XDECREF(cache.start);
    Py_DECREF(rows);
    return out;
}

/* read_in_place(on=None) -> bool: whether evidence deques are read in place (set `on` to turn it on or off;
   evidence rings are read from their buffer either way;
   the answer is then the previous state). False on other Pythons or when the deque's layout differs. */
static PyObject *read_in_place(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "read_in_place(on=None)");
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    const int was = in_place && deque_type != NULL;
    if (nargs == 1 && args[0] != Py_None) {
        const int on = PyObject_IsTrue(args[0]);
        if (on < 0)
            return NULL;
        in_place = on;
    }
    return PyBool_FromLong(was);
#else
    (void)args;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    READS_RINGS_METHOD,
    {"read_in_place", (PyCFunction)(void (*)(void))read_in_place, METH_FASTCALL,
     "read_in_place(on=None) -> bool: whether a node's evidence deque is read in place (a ring always is; "
     "CPython 3.11's layout, "
     "checked at import); `on` turns it on or off and the previous state is returned."},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(contexts, matrix, static_facts, layout, node_type) -> None: fill the zeroed float32 matrix with one "
     "feature row per RowContext, as pipeline.features computes it with numpy."},
    {"lone_bits", (PyCFunction)(void (*)(void))lone_bits, METH_FASTCALL,
     "lone_bits(contexts, matrix, (lone_mask, seen, cache_chars, cache_max, own_first, anc_first, n, remember)) -> None: set the "
     "lone-command indicator columns of each row as pipeline.features._fill_lone does."},
    {"context", (PyCFunction)(void (*)(void))context, METH_FASTCALL,
     "context(forest, key, window_ms, row_type, ancestor_depth, max_descendants) -> the RowContext "
     "pipeline.features.row_context builds."},
    {"contexts", (PyCFunction)(void (*)(void))contexts, METH_FASTCALL,
     "contexts(rows, window_ms, row_type, ancestor_depth, max_descendants) -> [context(forest, node.key, "
     "window_ms, row_type, ancestor_depth, max_descendants) for forest, node in rows]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipeline._cfeatures", "Feature rows in C (pipeline.features).", -1, methods,
};

PyMODINIT_FUNC PyInit__cfeatures(void) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_image_cls, "image_cls"}, {&s_image, "image"}, {&s_started, "started"}, {&s_exited, "exited"},
        {&s_placeholder, "placeholder"}, {&s_end_ms, "end_ms"}, {&s_start_ms, "start_ms"},
        {&s_children, "children"}, {&s_mask, "mask"}, {&s_cmd_mask, "cmd_mask"}, {&s_script_mask, "script_mask"}, {&s_evidence, "evidence"}, {&s_conns, "conns"},
        {&s_static, "static"}, {&s_parent_key, "parent_key"}, {&s_nodes, "nodes"}, {&s_limits, "limits"},
        {&s_max_depth, "max_depth"}, {&s_watermark_ms, "watermark_ms"}, {&s_get, "get"},
        {&s_last_ms, "last_ms"}, {&s_key, "key"}, {&s_command_line, "command_line"},
        {&s_lone, "lone"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    if ((zero = PyLong_FromLong(0)) == NULL || (one = PyLong_FromLong(1)) == NULL ||
        (thousand = PyLong_FromLong(1000)) == NULL || check_deque_layout() < 0 || ring_import() < 0)
        return NULL;
    return PyModule_Create(&module);
}
