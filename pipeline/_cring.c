/*
 * pipeline/_cring.c: `Ring`, a bounded ring of int64 records: a process's evidence (`ProcessNode.evidence`,
 * packed `ts_ms << 8 | code` records) as one buffer instead of a deque of int objects (see _ring.h for why
 * and for the layout the other extensions read).
 *
 * From Python it is what the forest used of `collections.deque(maxlen=N)`: `append`, `extend`, `len`,
 * iteration both ways, indexing, `maxlen`, `copy`, `clear`, equality with a ring or a deque of the same
 * records, pickling; plus `tobytes()` (the records as little-endian int64s, what a state record stores).
 * Every record must be an int in int64's range (TypeError or OverflowError otherwise, and nothing is
 * appended), so a reader never meets anything else. It holds no Python object, so the cycle collector
 * never visits it. Not subclassable: the extensions read exactly this type in place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define RINGFENCE_RING_DEFINES_TYPE
#include "_ring.h"

static PyTypeObject Ring_Type;
static PyTypeObject *deque_type;  /* collections.deque, looked up at import: a ring compares equal to one */

static int64_t as_record(PyObject *value, int *failed) {
    *failed = 0;
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "an evidence record must be an int, not %.100s", Py_TYPE(value)->tp_name);
        *failed = 1;
        return 0;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        *failed = 1;
    return (int64_t)v;
}

static RingObject *ring_alloc(PyTypeObject *type, Py_ssize_t maxlen) {
    RingObject *r = (RingObject *)type->tp_alloc(type, 0);
    if (r != NULL)
        r->buf = NULL, r->cap = 0, r->start = 0, r->len = 0, r->maxlen = maxlen, r->state = 0;
    return r;
}

/* Append every item of `iterable`, each checked before it is appended. */
static int ring_extend_from(RingObject *r, PyObject *iterable) {
    PyObject *it = PyObject_GetIter(iterable), *item;
    if (it == NULL)
        return -1;
    int rc = 0;
    while (rc == 0 && (item = PyIter_Next(it)) != NULL) {
        int failed;
        int64_t v = as_record(item, &failed);
        Py_DECREF(item);
        rc = failed ? -1 : ring_push(r, v) < 0 ? -1 : 0;
    }
    Py_DECREF(it);
    return rc == 0 && PyErr_Occurred() ? -1 : rc;
}

static Py_ssize_t parse_maxlen(PyObject *value) {
    if (value == NULL || value == Py_None) {
        PyErr_SetString(PyExc_TypeError, "Ring needs a maxlen (an int >= 0)");
        return -1;
    }
    Py_ssize_t maxlen = PyNumber_AsSsize_t(value, PyExc_OverflowError);
    if (maxlen == -1 && PyErr_Occurred())
        return -1;
    if (maxlen < 0) {
        PyErr_SetString(PyExc_ValueError, "maxlen must be non-negative");
        return -1;
    }
    return maxlen;
}

static PyObject *Ring_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"iterable", "maxlen", NULL};
    PyObject *iterable = NULL, *maxlen_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:Ring", names, &iterable, &maxlen_obj))
        return NULL;
    Py_ssize_t maxlen = parse_maxlen(maxlen_obj);
    if (maxlen < 0)
        return NULL;
    RingObject *r = ring_alloc(type, maxlen);
    if (r != NULL && iterable != NULL && ring_extend_from(r, iterable) < 0)
        Py_CLEAR(r);
    return (PyObject *)r;
}

static void Ring_dealloc(RingObject *r) {
    PyMem_Free(r->buf);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static Py_ssize_t Ring_len(RingObject *r) { return r->len; }

static PyObject *Ring_item(RingObject *r, Py_ssize_t i) {
    if (i < 0 || i >= r->len) {
        PyErr_SetString(PyExc_IndexError, "Ring index out of range");
        return NULL;
    }
    return PyLong_FromLongLong(ring_at(r, i));
}

static PyObject *Ring_append(RingObject *r, PyObject *value) {
    int failed;
    int64_t v = as_record(value, &failed);
    if (failed || ring_push(r, v) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Ring_extend(RingObject *r, PyObject *iterable) {
    if ((PyObject *)r == iterable) {  /* extending by itself: its records as they are now */
        PyObject *items = PySequence_List(iterable);
        if (items == NULL)
            return NULL;
        int rc = ring_extend_from(r, items);
        Py_DECREF(items);
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    return ring_extend_from(r, iterable) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *Ring_clear(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    PyMem_Free(r->buf);
    r->buf = NULL, r->cap = 0, r->start = 0, r->len = 0, r->state++;
    Py_RETURN_NONE;
}

static PyObject *Ring_copy(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    RingObject *c = ring_alloc(Py_TYPE(r), r->maxlen);
    if (c == NULL || r->len == 0)
        return (PyObject *)c;
    c->buf = PyMem_Malloc((size_t)r->len * sizeof(int64_t));
    if (c->buf == NULL) {
        Py_DECREF(c);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < r->len; i++)
        c->buf[i] = ring_at(r, i);
    c->cap = c->len = r->len;
    return (PyObject *)c;
}

static PyObject *Ring_tobytes(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 * r->len);
    if (out != NULL)
        ring_pack(r, 0, (unsigned char *)PyBytes_AS_STRING(out));
    return out;
}

static PyObject *Ring_list(RingObject *r) {
    PyObject *items = PyList_New(r->len);
    for (Py_ssize_t i = 0; items != NULL && i < r->len; i++) {
        PyObject *v = PyLong_FromLongLong(ring_at(r, i));
        if (v == NULL)
            Py_CLEAR(items);
        else
            PyList_SET_ITEM(items, i, v);
    }
    return items;
}

static PyObject *Ring_reduce(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    PyObject *items = Ring_list(r);
    return items == NULL ? NULL : Py_BuildValue("O(Nn)", Py_TYPE(r), items, r->maxlen);
}

static PyObject *Ring_sizeof(RingObject *r, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(Py_TYPE(r)->tp_basicsize + r->cap * (Py_ssize_t)sizeof(int64_t));
}

static PyObject *Ring_get_maxlen(RingObject *r, void *Py_UNUSED(closure)) { return PyLong_FromSsize_t(r->maxlen); }

static PyObject *Ring_repr(RingObject *r) {
    PyObject *items = Ring_list(r);
    if (items == NULL)
        return NULL;
    PyObject *text = PyUnicode_FromFormat("Ring(%R, maxlen=%zd)", items, r->maxlen);
    Py_DECREF(items);
    return text;
}

/* Equal to a ring or a deque holding the same records in the same order (the maxlen aside, as deques
   compare); ordering comparisons are not defined. */
static PyObject *Ring_richcompare(RingObject *r, PyObject *other, int op) {
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    int same;
    if (Py_IS_TYPE(other, &Ring_Type)) {
        RingObject *o = (RingObject *)other;
        same = r->len == o->len;
        for (Py_ssize_t i = 0; same && i < r->len; i++)
            same = ring_at(r, i) == ring_at(o, i);
    } else {
        if (!PyObject_TypeCheck(other, deque_type))
            Py_RETURN_NOTIMPLEMENTED;
        PyObject *mine = Ring_list(r), *theirs = mine == NULL ? NULL : PySequence_List(other);
        same = theirs == NULL ? -1 : PyObject_RichCompareBool(mine, theirs, Py_EQ);
        Py_XDECREF(mine);
        Py_XDECREF(theirs);
        if (same < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

/* Iteration (forward or reversed): refuses to go on once the ring has changed, as a deque's does. */
typedef struct {
    PyObject_HEAD
    RingObject *ring;
    Py_ssize_t at, left;
    size_t state;
    int reverse;
} RingIter;

static PyTypeObject RingIter_Type;

static PyObject *ring_iter(RingObject *r, int reverse) {
    RingIter *it = PyObject_New(RingIter, &RingIter_Type);
    if (it == NULL)
        return NULL;
    it->ring = (RingObject *)Py_NewRef(r);
    it->at = reverse ? r->len - 1 : 0, it->left = r->len, it->state = r->state, it->reverse = reverse;
    return (PyObject *)it;
}

static PyObject *Ring_iter(RingObject *r) { return ring_iter(r, 0); }

static PyObject *Ring_reversed(RingObject *r, PyObject *Py_UNUSED(ignored)) { return ring_iter(r, 1); }

static void RingIter_dealloc(RingIter *it) {
    Py_DECREF(it->ring);
    PyObject_Free(it);
}

static PyObject *RingIter_next(RingIter *it) {
    if (it->left == 0)
        return NULL;
    if (it->state != it->ring->state) {
        it->left = 0;
        PyErr_SetString(PyExc_RuntimeError, "Ring mutated during iteration");
        return NULL;
    }
    PyObject *v = PyLong_FromLongLong(ring_at(it->ring, it->at));
    it->at += it->reverse ? -1 : 1;
    it->left--;
    return v;
}

static PyObject *RingIter_length_hint(RingIter *it, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(it->left);
}

static PyMethodDef RingIter_methods[] = {
    {"__length_hint__", (PyCFunction)RingIter_length_hint, METH_NOARGS, "records left"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject RingIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._cring.RingIterator",
    .tp_basicsize = sizeof(RingIter),
    .tp_dealloc = (destructor)RingIter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)RingIter_next,
    .tp_methods = RingIter_methods,
};

static PySequenceMethods Ring_as_sequence = {
    .sq_length = (lenfunc)Ring_len,
    .sq_item = (ssizeargfunc)Ring_item,
};

static PyMethodDef Ring_methods[] = {
    {"append", (PyCFunction)Ring_append, METH_O, "append(record): add at the right end, the oldest dropped when full"},
    {"extend", (PyCFunction)Ring_extend, METH_O, "extend(iterable): append each record in turn"},
    {"clear", (PyCFunction)Ring_clear, METH_NOARGS, "clear(): remove every record"},
    {"copy", (PyCFunction)Ring_copy, METH_NOARGS, "copy() -> Ring: the same records and maxlen"},
    {"__copy__", (PyCFunction)Ring_copy, METH_NOARGS, "copy()"},
    {"tobytes", (PyCFunction)Ring_tobytes, METH_NOARGS,
     "tobytes() -> bytes: the records, oldest first, as little-endian int64s"},
    {"__reversed__", (PyCFunction)Ring_reversed, METH_NOARGS, "the records, newest first"},
    {"__reduce__", (PyCFunction)Ring_reduce, METH_NOARGS, "pickling: Ring(records, maxlen)"},
    {"__sizeof__", (PyCFunction)Ring_sizeof, METH_NOARGS, "bytes held, the buffer included"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Ring_getset[] = {
    {"maxlen", (getter)Ring_get_maxlen, NULL, "the most records kept", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject Ring_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._cring.Ring",
    .tp_doc = "Ring(iterable=(), maxlen) -- a bounded ring of int64 records (a process's evidence): "
              "deque(maxlen=...)'s appends, iteration and indexing over one buffer.",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_SEQUENCE,
    .tp_new = Ring_new,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_repr = (reprfunc)Ring_repr,
    .tp_as_sequence = &Ring_as_sequence,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = (richcmpfunc)Ring_richcompare,
    .tp_iter = (getiterfunc)Ring_iter,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pipeline._cring",
                                    "Ring: a process's evidence records in one buffer (pipeline/_cring.c).", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__cring(void) {
    if (PyType_Ready(&Ring_Type) < 0 || PyType_Ready(&RingIter_Type) < 0)
        return NULL;
    if ((deque_type = import_deque_type()) == NULL)  /* kept for the module's lifetime */
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Ring", (PyObject *)&Ring_Type) < 0 ||
        PyModule_AddIntConstant(m, "RING_LAYOUT", RING_LAYOUT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
