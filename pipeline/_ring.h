/*
 * pipeline/_ring.h: a process's evidence records as one bounded ring of int64s (`pipeline._cring.Ring`),
 * shared by the extensions that read or append them (pipeline/_cring.c defines the type; _cforest.c
 * appends, _cfeatures.c counts, _cstate.c packs).
 *
 * Why: a `collections.deque` of up to 512 packed ints (`ts_ms << 8 | code`) keeps each record as an int
 * object of its own (~40 bytes with the deque's pointer, allocated per append and freed per drop), and
 * every reader of the records dereferences them one by one, cache-cold after the tree update. The ring
 * keeps the same records as 8 bytes each in one buffer: an append is a store, a count is a loop over
 * memory, a state record is a copy.
 *
 * Header-only, like _slots.h: each extension keeps its own pointer to the type (`ring_type`, set by
 * `ring_import`) and reads the object through the struct below. `RING_LAYOUT` is exported by
 * `pipeline._cring` and compared at import, so an extension built against another layout of the struct
 * never reads a ring in place (it then treats rings as any other sequence: slower, the same values).
 *
 * Needs <Python.h> and <stdint.h> included before it.
 */
#ifndef RINGFENCE_RING_H
#define RINGFENCE_RING_H

#define RING_LAYOUT_VERSION 1
#define RING_FIRST_CAPACITY 8

typedef struct {
    PyObject_HEAD
    int64_t *buf;        /* `cap` slots; the records are buf[start], buf[start + 1], ... modulo cap */
    Py_ssize_t cap;      /* allocated slots: grows by doubling up to maxlen */
    Py_ssize_t start;    /* the oldest record's slot */
    Py_ssize_t len;      /* records held, at most maxlen */
    Py_ssize_t maxlen;   /* the bound: an append to a full ring drops the oldest record */
    size_t state;        /* changed by every mutation: an iterator refuses to go on after one */
} RingObject;

#define RING_LAYOUT ((long)(sizeof(RingObject) * 100 + RING_LAYOUT_VERSION))

/* The record `i` (0 = the oldest; 0 <= i < len). */
static inline int64_t ring_at(const RingObject *r, Py_ssize_t i) {
    Py_ssize_t j = r->start + i;
    return r->buf[j >= r->cap ? j - r->cap : j];
}

/* Room for one more record without dropping one: the buffer doubled (up to maxlen), its records moved to
   its front in order. -1 with MemoryError set when the allocation fails (the ring is unchanged). */
static inline int ring_grow(RingObject *r) {
    Py_ssize_t cap = r->cap ? r->cap * 2 : RING_FIRST_CAPACITY;
    if (cap > r->maxlen)
        cap = r->maxlen;
    int64_t *buf = PyMem_Malloc((size_t)cap * sizeof(int64_t));
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < r->len; i++)
        buf[i] = ring_at(r, i);
    PyMem_Free(r->buf);
    r->buf = buf, r->cap = cap, r->start = 0;
    return 0;
}

/* Append one record as a deque with this maxlen appends: 1 when the oldest was dropped to make room (or,
   with maxlen 0, the record itself), 0 when not, -1 with MemoryError set. */
static inline int ring_push(RingObject *r, int64_t value) {
    r->state++;
    if (r->maxlen == 0)
        return 1;
    if (r->len == r->maxlen) {  /* full: the new record takes the oldest's slot */
        r->buf[r->start] = value;
        r->start = r->start + 1 == r->cap ? 0 : r->start + 1;
        return 1;
    }
    if (r->len == r->cap && ring_grow(r) < 0)
        return -1;
    Py_ssize_t j = r->start + r->len;
    r->buf[j >= r->cap ? j - r->cap : j] = value;
    r->len++;
    return 0;
}

/* One record as the 8 little-endian bytes a state record stores (`tree_state._pack`). */
static inline void put_le64(unsigned char *out, int64_t value) {
    const uint64_t u = (uint64_t)value;
    for (int b = 0; b < 8; b++)
        out[b] = (unsigned char)(u >> (8 * b));
}

/* The records from `first` on (0 <= first <= len), in order, as little-endian int64 bytes at `out`. */
static inline void ring_pack(const RingObject *r, Py_ssize_t first, unsigned char *out) {
    for (Py_ssize_t i = first; i < r->len; i++, out += 8)
        put_le64(out, ring_at(r, i));
}

/* `collections.deque` (a new reference: the caller keeps it for the module's lifetime), or NULL with an
   error set; the three extensions that tell a deque of evidence from a ring each look it up once. */
static inline PyTypeObject *import_deque_type(void) {
    PyObject *collections = PyImport_ImportModule("collections");
    PyObject *deque = collections == NULL ? NULL : PyObject_GetAttrString(collections, "deque");
    Py_XDECREF(collections);
    if (deque != NULL && !PyType_Check(deque)) {
        Py_CLEAR(deque);
        PyErr_SetString(PyExc_TypeError, "collections.deque is not a type");
    }
    return (PyTypeObject *)deque;
}

#ifndef RINGFENCE_RING_DEFINES_TYPE
/* This extension's view of `pipeline._cring.Ring`. `ring_type`: read in place (the layout matched);
   `ring_any_type`: the type whatever its layout, to tell a ring from other values (a ring is mutable and
   holds no object: it must never be shared between nodes like an immutable value). Both NULL when
   `pipeline._cring` is missing; then `pipeline.node.new_evidence` makes deques and no ring exists. */
static PyTypeObject *ring_type, *ring_any_type;

/* Set `ring_type` and `ring_any_type` once, at the extension's import; 0 whatever `pipeline._cring`
   offers (missing, another layout, an odd module: then rings are read as any other sequence, slower,
   the same values), -1 only when Python fails in a way an import must not hide (MemoryError). */
static int ring_import(void) {
    PyObject *module = PyImport_ImportModule("pipeline._cring");
    PyObject *type = module == NULL ? NULL : PyObject_GetAttrString(module, "Ring");
    PyObject *layout = type == NULL ? NULL : PyObject_GetAttrString(module, "RING_LAYOUT");
    Py_XDECREF(module);
    long seen = layout == NULL || !PyLong_Check(layout) ? -1 : PyLong_AsLong(layout);
    Py_XDECREF(layout);
    if (PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            Py_XDECREF(type);
            return -1;
        }
        PyErr_Clear();
    }
    if (type == NULL || !PyType_Check(type)) {
        Py_XDECREF(type);
        return 0;
    }
    ring_any_type = (PyTypeObject *)type;  /* kept for the extension's lifetime */
    if (seen == RING_LAYOUT)
        ring_type = ring_any_type;
    return 0;
}

/* Whether `obj` is a ring this extension may read in place (exactly the type: it has no subclasses). */
static inline int is_ring(PyObject *obj) {
    return ring_type != NULL && Py_IS_TYPE(obj, ring_type);
}

/* reads_rings() -> bool: whether this extension reads evidence rings in place (their layout matched). */
static PyObject *reads_rings(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    (void)self;
    return PyBool_FromLong(ring_type != NULL);
}
#define READS_RINGS_METHOD \
    {"reads_rings", (PyCFunction)reads_rings, METH_NOARGS, \
     "reads_rings() -> bool: whether evidence rings (pipeline._cring.Ring) are read in place here."}

/* Whether `obj` is a ring at all (read in place or not). */
static inline int is_any_ring(PyObject *obj) {
    return ring_any_type != NULL && Py_IS_TYPE(obj, ring_any_type);
}
#endif /* RINGFENCE_RING_DEFINES_TYPE */

#endif /* RINGFENCE_RING_H */
