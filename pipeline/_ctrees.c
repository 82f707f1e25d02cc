/*
 * pipeline._ctrees: a multi:softprob gradient-boosted forest scored in C, bit for bit as XGBoost's
 * CPU predictor scores it (see pipeline/compiled_model.py for why and for the Python side).
 *
 * Why it is exact: XGBoost starts every (row, class) margin at the class's base score (float32),
 * adds the leaf of each of that class's trees in tree order in float32, goes left when
 * `value < threshold` and to the default child when the value is missing (NaN), then applies its
 * softmax: max by fmaxf, exp by expf, the sum in double, each term divided by the sum cast to float.
 * This file does exactly that, row by row, so a row's probabilities do not depend on the batch it
 * came in (XGBoost's do not either). Built without -ffast-math (setup.py), so the compiler keeps
 * that order of float operations.
 *
 * Which leaf a row reaches is found the QuickScorer way (see `Entry` below), which gives the same
 * leaf as descending the tree. The model comes in the perfect-binary-tree layout of `CompiledTrees`
 * (a leaf above the maximum depth copied down to it; at most depth 6, 64 leaves, one bit each) and
 * is copied and checked once: every split's feature is inside a row, every tree's class inside the
 * base vector, every size consistent with the depth, so `predict` indexes nothing out of bounds.
 * Only the buffer protocol is used (no numpy headers): the build needs gcc and Python's headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* One split as QuickScorer sees it (Lucchese et al., SIGIR 2015): a node is "false" when its row
   goes right (`!(value < threshold)`), and a false node rules out every leaf of its left subtree.
   With the leaves of each tree numbered left to right, the leaf a row exits at is the leftmost one
   no false node ruled out. So a row is scored by visiting, feature by feature, only the splits its
   values make false (thresholds at or below the value, in ascending order: the scan stops at the
   first threshold above it), AND-ing their masks into one bit set per tree, then taking each tree's
   lowest set bit. Rows are mostly zeros and most thresholds are above zero, so a row visits a few
   hundred splits instead of descending all 1,560 trees. */
typedef struct {
    float threshold;   /* the split is false when value >= threshold */
    uint32_t tree;     /* the tree, bit 31 set when a missing (NaN) value goes left (the split is true) */
    uint64_t mask;     /* the tree's leaves still possible when the split is false */
} Entry;

#define DEFAULT_LEFT_BIT 0x80000000u

typedef struct {
    PyObject_HEAD
    Entry *entries;     /* every split, feature after feature, thresholds ascending */
    int32_t *start;     /* (n_features + 1,) where each feature's splits begin in `entries` */
    int32_t *used;      /* the features some split reads */
    float *leaves;      /* (trees, 2**depth) left to right */
    int32_t *classes;   /* class each tree adds to */
    float *base;        /* base margin of each class */
    Py_ssize_t n_trees, n_classes, n_features, n_used;
    int depth;
    int ready;          /* __init__ completed: everything above is filled and checked */
} Forest;


static int get_buffer(PyObject *obj, Py_buffer *view, const char *format, const char *what, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *got = view->format != NULL ? view->format : "B";  /* NULL means unsigned bytes */
    if (view->itemsize != 4 || strcmp(got, format) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer of format '%s' (4 bytes), got '%s'",
                     what, format, got);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void *copy_of(const Py_buffer *view) {
    void *out = PyMem_Malloc(view->len > 0 ? (size_t)view->len : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, view->buf, (size_t)view->len);
    return out;
}

enum { FEATURES, THRESHOLDS, DEFAULT_LEFT, LEAVES, CLASSES, BASE, N_PARTS };

static int make_entries(Forest *self, const int32_t *features, const float *thresholds, const int32_t *dleft,
                        Py_ssize_t internal);

/* Sizes agree with the depth and tree count; features and classes are in range. */
static int build(Forest *self, Py_buffer *parts) {
    const Py_ssize_t internal = ((Py_ssize_t)1 << self->depth) - 1, trees = parts[CLASSES].len / 4;
    const Py_ssize_t classes = parts[BASE].len / 4;
    if (trees > INT32_MAX / internal) {  /* split counts and positions are int32, the tree index 31 bits */
        PyErr_SetString(PyExc_ValueError, "more splits than 2**31");
        return -1;
    }
    if (trees == 0 || classes == 0 || parts[FEATURES].len / 4 != trees * internal ||
        parts[THRESHOLDS].len / 4 != trees * internal || parts[DEFAULT_LEFT].len / 4 != trees * internal ||
        parts[LEAVES].len / 4 != trees * (internal + 1)) {
        PyErr_SetString(PyExc_ValueError, "array sizes do not match the tree count and depth");
        return -1;
    }
    const int32_t *features = parts[FEATURES].buf, *dleft = parts[DEFAULT_LEFT].buf;
    const int32_t *tree_class = parts[CLASSES].buf;
    const float *thresholds = parts[THRESHOLDS].buf;
    for (Py_ssize_t i = 0; i < trees * internal; i++)
        if (features[i] < 0 || features[i] >= self->n_features) {
            PyErr_Format(PyExc_ValueError, "split %zd uses feature %d of %zd", i, features[i], self->n_features);
            return -1;
        }
    for (Py_ssize_t t = 0; t < trees; t++)
        if (tree_class[t] < 0 || tree_class[t] >= classes) {
            PyErr_Format(PyExc_ValueError, "tree %zd adds to class %d of %zd", t, tree_class[t], classes);
            return -1;
        }
    self->leaves = copy_of(&parts[LEAVES]);
    self->classes = copy_of(&parts[CLASSES]);
    self->base = copy_of(&parts[BASE]);
    if (self->leaves == NULL || self->classes == NULL || self->base == NULL)
        return -1;
    self->n_trees = trees, self->n_classes = classes;
    return make_entries(self, features, thresholds, dleft, internal);
}

static int by_threshold(const void *a, const void *b) {
    float x = ((const Entry *)a)->threshold, y = ((const Entry *)b)->threshold;
    return (x > y) - (x < y);
}

/* The splits of every tree as entries grouped by feature, thresholds ascending, and the features in use. */
static int make_entries(Forest *self, const int32_t *features, const float *thresholds, const int32_t *dleft,
                        Py_ssize_t internal) {
    const Py_ssize_t width = self->n_features, n_splits = self->n_trees * internal;
    self->start = PyMem_Calloc((size_t)width + 1, sizeof(int32_t));
    self->entries = PyMem_Malloc((size_t)n_splits * sizeof(Entry));
    self->used = PyMem_Malloc((size_t)width * sizeof(int32_t));
    int32_t *fill = PyMem_Calloc((size_t)width + 1, sizeof(int32_t));
    int rc = -1;
    if (self->start == NULL || self->entries == NULL || self->used == NULL || fill == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_splits; i++) {
        if (isnan(thresholds[i])) {
            PyErr_Format(PyExc_ValueError, "split %zd has a NaN threshold", i);
            goto done;
        }
        fill[features[i] + 1]++;
    }
    for (Py_ssize_t f = 0; f < width; f++)
        fill[f + 1] += fill[f];
    memcpy(self->start, fill, ((size_t)width + 1) * sizeof(int32_t));
    for (Py_ssize_t t = 0; t < self->n_trees; t++) {
        for (int level = 0, slot = 0; level < self->depth; level++) {
            for (int pos = 0; pos < 1 << level; pos++, slot++) {
                const Py_ssize_t i = t * internal + slot;
                const int span = 1 << (self->depth - level - 1);  /* leaves under each child */
                const uint64_t left = (span == 64 ? ~(uint64_t)0 : (((uint64_t)1 << span) - 1)) << (2 * pos * span);
                Entry *e = &self->entries[fill[features[i]]++];
                e->threshold = thresholds[i];
                e->tree = (uint32_t)t | (dleft[i] ? DEFAULT_LEFT_BIT : 0);
                e->mask = ~left;
            }
        }
    }
    for (Py_ssize_t f = 0; f < width; f++) {
        int32_t n = self->start[f + 1] - self->start[f];
        qsort(self->entries + self->start[f], (size_t)n, sizeof(Entry), by_threshold);
        if (n > 0)
            self->used[self->n_used++] = (int32_t)f;
    }
    rc = 0;
done:
    PyMem_Free(fill);
    return rc;
}

static int Forest_init(Forest *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"features", "thresholds", "default_left", "leaves", "classes", "base", "depth",
                             "n_features", NULL};
    static const char *formats[N_PARTS] = {"i", "f", "i", "f", "i", "f"};
    PyObject *objs[N_PARTS];
    int depth;
    Py_ssize_t n_features;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOin", kwlist, &objs[0], &objs[1], &objs[2], &objs[3],
                                     &objs[4], &objs[5], &depth, &n_features))
        return -1;
    if (self->entries != NULL || self->start != NULL || self->leaves != NULL) {  /* even a failed try */
        PyErr_SetString(PyExc_RuntimeError, "Forest is already initialised");
        return -1;
    }
    if (depth < 1 || depth > 6 || n_features <= 0 || n_features > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "depth must be in [1, 6] (64 leaves) and n_features positive");
        return -1;
    }
    self->depth = depth, self->n_features = n_features;
    Py_buffer parts[N_PARTS];
    int got = 0, rc = -1;
    for (; got < N_PARTS; got++)
        if (get_buffer(objs[got], &parts[got], formats[got], kwlist[got], 0) < 0)
            break;
    if (got == N_PARTS)
        rc = build(self, parts);
    self->ready = rc == 0;
    while (got-- > 0)
        PyBuffer_Release(&parts[got]);
    return rc;
}

static void Forest_dealloc(Forest *self) {
    PyMem_Free(self->entries);
    PyMem_Free(self->start);
    PyMem_Free(self->used);
    PyMem_Free(self->leaves);
    PyMem_Free(self->classes);
    PyMem_Free(self->base);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void softmax(float *m, Py_ssize_t n) {
    float wmax = m[0];
    for (Py_ssize_t c = 1; c < n; c++)
        wmax = fmaxf(m[c], wmax);
    double wsum = 0.0;
    for (Py_ssize_t c = 0; c < n; c++) {
        m[c] = expf(m[c] - wmax);
        wsum += m[c];
    }
    for (Py_ssize_t c = 0; c < n; c++)
        m[c] /= (float)wsum;
}

/* One row: the bit set of possible leaves per tree, narrowed by the row's false splits. */
static void score_row(const Forest *f, const float *row, uint64_t *possible, float *out) {
    const uint64_t all = f->depth == 6 ? ~(uint64_t)0 : (((uint64_t)1 << (1 << f->depth)) - 1);
    for (Py_ssize_t t = 0; t < f->n_trees; t++)
        possible[t] = all;
    for (Py_ssize_t u = 0; u < f->n_used; u++) {
        const int32_t feature = f->used[u];
        const float v = row[feature];
        const Entry *e = f->entries + f->start[feature], *end = f->entries + f->start[feature + 1];
        if (isnan(v)) {  /* false exactly where a missing value goes right */
            for (; e < end; e++)
                if (!(e->tree & DEFAULT_LEFT_BIT))
                    possible[e->tree & ~DEFAULT_LEFT_BIT] &= e->mask;
        } else {
            for (; e < end && e->threshold <= v; e++)
                possible[e->tree & ~DEFAULT_LEFT_BIT] &= e->mask;
        }
    }
    const int per_tree = 1 << f->depth;
    memcpy(out, f->base, (size_t)f->n_classes * sizeof(float));
    for (Py_ssize_t t = 0; t < f->n_trees; t++)  /* in tree order, as XGBoost adds them */
        out[f->classes[t]] += f->leaves[t * per_tree + __builtin_ctzll(possible[t])];
}

static void score(const Forest *f, const float *x, float *out, Py_ssize_t rows, int probabilities,
                  uint64_t *possible) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        score_row(f, x + r * f->n_features, possible, out + r * f->n_classes);
        if (probabilities)
            softmax(out + r * f->n_classes, f->n_classes);
    }
}

static PyObject *run(Forest *self, PyObject *args, int probabilities) {
    PyObject *matrix_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &matrix_obj, &out_obj))
        return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Forest is not initialised");
        return NULL;
    }
    Py_buffer matrix, out;
    if (get_buffer(matrix_obj, &matrix, "f", "matrix", 0) < 0)
        return NULL;
    if (get_buffer(out_obj, &out, "f", "out", 1) < 0) {
        PyBuffer_Release(&matrix);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t rows = matrix.len / 4 / self->n_features;  /* divisions only: no product can overflow */
    if (rows * self->n_features * 4 != matrix.len || out.len % (4 * self->n_classes) != 0 ||
        out.len / 4 / self->n_classes != rows) {
        PyErr_Format(PyExc_ValueError, "matrix of %zd bytes is not rows x %zd features, or out is not "
                     "rows x %zd classes", matrix.len, self->n_features, self->n_classes);
    } else {
        uint64_t *possible = PyMem_Malloc((size_t)self->n_trees * sizeof(uint64_t));
        if (possible == NULL) {
            PyErr_NoMemory();
        } else {
            Py_BEGIN_ALLOW_THREADS
            score(self, matrix.buf, out.buf, rows, probabilities, possible);
            Py_END_ALLOW_THREADS
            PyMem_Free(possible);
            result = Py_None;
            Py_INCREF(result);
        }
    }
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *Forest_predict(Forest *self, PyObject *args) { return run(self, args, 1); }

static PyObject *Forest_margins(Forest *self, PyObject *args) { return run(self, args, 0); }

static PyMethodDef Forest_methods[] = {
    {"predict", (PyCFunction)Forest_predict, METH_VARARGS,
     "predict(matrix, out): softmax probabilities of float32 (rows, features) into float32 (rows, classes)."},
    {"margins", (PyCFunction)Forest_margins, METH_VARARGS,
     "margins(matrix, out): raw margins (base score plus leaves) into float32 (rows, classes)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Forest_trees(Forest *self, void *closure) { return PyLong_FromSsize_t(self->n_trees); }

static PyGetSetDef Forest_getset[] = {
    {"trees", (getter)Forest_trees, NULL, "number of trees", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ForestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._ctrees.Forest",
    .tp_doc = "Forest(features, thresholds, default_left, leaves, classes, base, depth, n_features): "
              "a checked copy of a multi:softprob gbtree in perfect-binary-tree slots.",
    .tp_basicsize = sizeof(Forest),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forest_init,
    .tp_dealloc = (destructor)Forest_dealloc,
    .tp_methods = Forest_methods,
    .tp_getset = Forest_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipeline._ctrees", "XGBoost-exact tree scoring in C (pipeline.compiled_model).",
    -1, NULL,
};

PyMODINIT_FUNC PyInit__ctrees(void) {
    if (PyType_Ready(&ForestType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ForestType);
    if (PyModule_AddObject(m, "Forest", (PyObject *)&ForestType) < 0) {
        Py_DECREF(&ForestType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
