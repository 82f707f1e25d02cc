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
 * The model comes in the perfect-binary-tree layout of `CompiledTrees` (a leaf above the maximum
 * depth copied down to it) and is copied and checked once: every split's feature is inside a row,
 * every tree's class inside the base vector, every size consistent with the depth, so `predict`
 * walks a fixed number of levels without bounds checks and cannot loop. Only the buffer
 * protocol is used (no numpy headers): the build needs gcc and Python's headers, nothing else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    float threshold;   /* go left when value < threshold */
    int32_t split;     /* feature << 1 | 1 when a missing (NaN) value goes left */
} Split;

typedef struct {
    PyObject_HEAD
    Split *splits;     /* (trees, 2**depth - 1): perfect binary trees, children of slot i at 2i+1, 2i+2 */
    float *leaves;     /* (trees, 2**depth) */
    int32_t *classes;  /* class each tree adds to */
    float *base;       /* base margin of each class */
    Py_ssize_t n_trees, n_classes, n_features;
    int depth;
} Forest;

#define ROW_BLOCK 64
#define LANES 8

static int get_buffer(PyObject *obj, Py_buffer *view, const char *format, const char *what, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->itemsize != 4 || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer of format '%s' (4 bytes), got '%s'",
                     what, format, view->format);
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

/* Sizes agree with the depth and tree count; features and classes are in range. */
static int build(Forest *self, Py_buffer *parts) {
    const Py_ssize_t internal = ((Py_ssize_t)1 << self->depth) - 1, trees = parts[CLASSES].len / 4;
    const Py_ssize_t classes = parts[BASE].len / 4;
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
    self->splits = PyMem_Malloc((size_t)(trees * internal) * sizeof(Split));
    self->leaves = copy_of(&parts[LEAVES]);
    self->classes = copy_of(&parts[CLASSES]);
    self->base = copy_of(&parts[BASE]);
    if (self->splits == NULL || self->leaves == NULL || self->classes == NULL || self->base == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < trees * internal; i++)
        self->splits[i].threshold = thresholds[i], self->splits[i].split = features[i] << 1 | (dleft[i] != 0);
    self->n_trees = trees, self->n_classes = classes;
    return 0;
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
    if (self->splits != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Forest is already initialised");
        return -1;
    }
    if (depth < 1 || depth > 16 || n_features <= 0 || n_features > (INT32_MAX >> 1)) {
        PyErr_SetString(PyExc_ValueError, "depth must be in [1, 16] and n_features positive");
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
    while (got-- > 0)
        PyBuffer_Release(&parts[got]);
    return rc;
}

static void Forest_dealloc(Forest *self) {
    PyMem_Free(self->splits);
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

/* Leaf slot of one tree for LANES rows at once: independent chains the CPU overlaps. A missing
   (NaN) value takes the split's default: `v < threshold` is false for NaN, so left is
   (v < threshold) or (NaN and default left). */
static inline void descend(const Split *tree, int depth, const float *const *rows, int32_t *slot) {
    int32_t s[LANES];
#pragma GCC unroll 8
    for (int r = 0; r < LANES; r++)
        s[r] = 0;
    for (int level = 0; level < depth; level++) {
#pragma GCC unroll 8
        for (int r = 0; r < LANES; r++) {
            const Split node = tree[s[r]];
            const float v = rows[r][node.split >> 1];
            const int32_t left = (v < node.threshold) | (isnan(v) & node.split);
            s[r] = 2 * s[r] + 2 - left;
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < LANES; r++)
        slot[r] = s[r];
}

static inline int32_t descend_one(const Split *tree, int depth, const float *row) {
    int32_t s = 0;
    for (int level = 0; level < depth; level++) {
        const Split node = tree[s];
        const float v = row[node.split >> 1];
        s = 2 * s + 2 - ((v < node.threshold) | (isnan(v) & node.split));
    }
    return s;
}

/* Rows in blocks, trees outermost within a block (a tree stays in cache); per (row, class) the
   leaves are added in tree order, as XGBoost adds them. */
static void score(const Forest *f, const float *x, float *out, Py_ssize_t rows, int probabilities) {
    const Py_ssize_t k = f->n_classes, width = f->n_features;
    const int32_t internal = (1 << f->depth) - 1;
    for (Py_ssize_t lo = 0; lo < rows; lo += ROW_BLOCK) {
        Py_ssize_t hi = lo + ROW_BLOCK < rows ? lo + ROW_BLOCK : rows;
        for (Py_ssize_t r = lo; r < hi; r++)
            memcpy(out + r * k, f->base, (size_t)k * sizeof(float));
        for (Py_ssize_t t = 0; t < f->n_trees; t++) {
            const Split *tree = f->splits + t * internal;
            const float *leaves = f->leaves + t * (internal + 1);
            const int32_t cls = f->classes[t];
            for (Py_ssize_t r0 = lo; r0 < hi; r0 += LANES) {
                const float *lane[LANES];
                int32_t slot[LANES];
                int n = hi - r0 < LANES ? (int)(hi - r0) : LANES;
                for (int r = 0; r < n; r++)
                    lane[r] = x + (r0 + r) * width;
                if (n == LANES)
                    descend(tree, f->depth, lane, slot);
                else
                    for (int r = 0; r < n; r++)
                        slot[r] = descend_one(tree, f->depth, lane[r]);
                for (int r = 0; r < n; r++)
                    out[(r0 + r) * k + cls] += leaves[slot[r] - internal];
            }
        }
        if (probabilities)
            for (Py_ssize_t r = lo; r < hi; r++)
                softmax(out + r * k, k);
    }
}

static PyObject *run(Forest *self, PyObject *args, int probabilities) {
    PyObject *matrix_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &matrix_obj, &out_obj))
        return NULL;
    Py_buffer matrix, out;
    if (get_buffer(matrix_obj, &matrix, "f", "matrix", 0) < 0)
        return NULL;
    if (get_buffer(out_obj, &out, "f", "out", 1) < 0) {
        PyBuffer_Release(&matrix);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t rows = matrix.len / 4 / self->n_features;
    if (rows * self->n_features * 4 != matrix.len || out.len != rows * self->n_classes * 4) {
        PyErr_Format(PyExc_ValueError, "matrix of %zd bytes is not rows x %zd features, or out is not "
                     "rows x %zd classes", matrix.len, self->n_features, self->n_classes);
    } else {
        Py_BEGIN_ALLOW_THREADS
        score(self, matrix.buf, out.buf, rows, probabilities);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
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
