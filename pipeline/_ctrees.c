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
 * leaf as descending the tree; with SIMD (AVX-512 or AVX2, checked at load) for blocks of 8 or 16
 * rows at once, each row in its own lane (see `score_block`), with the same bits. The model comes in the perfect-binary-tree layout of `CompiledTrees`
 * (a leaf above the maximum depth copied down to it; at most depth 6, 64 leaves, one bit each) and
 * is copied and checked once: every split's feature is inside a row, every tree's class inside the
 * base vector, every size consistent with the depth, so `predict` indexes nothing out of bounds.
 * Only the buffer protocol is used (no numpy headers): the build needs gcc and Python's headers.
 *
 * The second type, `Explainer` (below the scorer), computes one class's TreeSHAP contributions as
 * XGBoost's `pred_contribs` does, bit for bit, on the trees as trained.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <sched.h>
#include <string.h>
#include <time.h>

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
    int readers;        /* atomic: Scoring threads that may still read it (its dealloc waits for them) */
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

/* 1 once no Scoring's thread reads the Forest (a thread ends its chunk in tens of µs); 0 after a
   second of waiting: a process forked while a thread ran inherits its count but not the thread. */
static int readers_gone(const Forest *self) {
    struct timespec since, now;
    clock_gettime(CLOCK_MONOTONIC, &since);
    while (__atomic_load_n(&self->readers, __ATOMIC_ACQUIRE) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - since.tv_sec > 1)
            return 0;
        sched_yield();
    }
    return 1;
}

static void Forest_dealloc(Forest *self) {
    if (!readers_gone(self))  /* left allocated (a leak, never a read of freed memory) */
        return;
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

/* Blocks of rows (the "vectorised QuickScorer" of Lucchese et al., 2016): BLOCK rows share one walk of
   each feature's splits, so a split is loaded once per block instead of once per row. A split's mask
   is AND-ed into the bit set of every row of the block the split is false for (`possible` holds the
   block's bit sets of a tree side by side). The walk of a feature stops at the first threshold
   above the block's largest value (or goes through when a row's value is missing). Which leaf each
   row exits at is the same as row by row (AND is order-free), and each row's leaves are then added
   in tree order from its class's base score exactly as `score_row` adds them (a SIMD lane per row:
   the same float32 additions in the same order), so the bits do not change. */
#define BLOCK 8
#define WIDE_BLOCK 16  /* the AVX-512 kernel of trees of at most 32 leaves */

typedef struct {
    uint64_t *possible;  /* (n_trees, BLOCK) */
    float *values;       /* (n_used, BLOCK) the block's values of each used feature */
    float *sums;         /* (n_classes, BLOCK) */
} Scratch;

typedef void (*narrow_fn)(const Entry *e, const Entry *end, const float *v, uint64_t *possible);
typedef void (*finish_fn)(const Forest *f, const uint64_t *possible, float *sums);

/* Portable: one split at a time, each row of the block tested. */
static void narrow_generic(const Entry *e, const Entry *end, const float *v, uint64_t *possible) {
    float top = v[0];
    int missing = 0;
    for (int r = 0; r < BLOCK; r++) {
        missing |= isnan(v[r]);
        top = v[r] > top ? v[r] : top;
    }
    for (; e < end && (missing || e->threshold <= top); e++) {
        uint64_t *p = possible + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * BLOCK;
        const int nan_false = !(e->tree & DEFAULT_LEFT_BIT);
        for (int r = 0; r < BLOCK; r++)
            if (v[r] >= e->threshold || (nan_false && isnan(v[r])))
                p[r] &= e->mask;
    }
}

/* Each row's sums (lane r of every class), tree after tree. */
static void finish_generic(const Forest *f, const uint64_t *possible, float *sums) {
    const int per_tree = 1 << f->depth;
    const Py_ssize_t n_trees = f->n_trees;
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        const float *leaves = f->leaves + t * per_tree;
        const uint64_t *p = possible + t * BLOCK;
        float *s = sums + (Py_ssize_t)f->classes[t] * BLOCK;
        for (int r = 0; r < BLOCK; r++)
            s[r] += leaves[__builtin_ctzll(p[r])];
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86_KERNELS 1
/* The largest of 8 row values (a split above it sends every row left: the walk may stop there). The
   8-row kernels of every width share it; inlined into the AVX-512 ones too (AVX-512F implies AVX2). */
__attribute__((target("avx2"))) static inline float max8(__m256 values) {
    __m256 top = _mm256_max_ps(values, _mm256_permute2f128_ps(values, values, 1));
    top = _mm256_max_ps(top, _mm256_permute_ps(top, 0x4e));
    top = _mm256_max_ps(top, _mm256_permute_ps(top, 0xb1));
    return _mm256_cvtss_f32(top);
}

/* AVX2: the 8 rows' comparison in one instruction, their 8 bit sets narrowed in two 256-bit ANDs. */
__attribute__((target("avx2"))) static void narrow_avx2(const Entry *e, const Entry *end, const float *v,
                                                        uint64_t *possible) {
    const __m256 values = _mm256_loadu_ps(v);
    const __m256 nan = _mm256_cmp_ps(values, values, _CMP_UNORD_Q);
    const int missing = _mm256_movemask_ps(nan) != 0;
    const float limit = max8(values);  /* used only when no value is missing */
    for (; e < end && (missing || e->threshold <= limit); e++) {
        __m256 hit = _mm256_cmp_ps(values, _mm256_set1_ps(e->threshold), _CMP_GE_OQ);
        if (missing && !(e->tree & DEFAULT_LEFT_BIT))
            hit = _mm256_or_ps(hit, nan);
        const __m256i bits = _mm256_castps_si256(hit);
        const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(bits));
        const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(bits, 1));
        const __m256i cut = _mm256_set1_epi64x((long long)~e->mask);  /* the leaves the split rules out */
        __m256i *p = (__m256i *)(possible + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * BLOCK);
        _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_and_si256(lo, cut), _mm256_loadu_si256(p)));
        _mm256_storeu_si256(p + 1, _mm256_andnot_si256(_mm256_and_si256(hi, cut), _mm256_loadu_si256(p + 1)));
    }
}

/* AVX2 for trees of at most 32 leaves: the 8 rows' 32-bit bit sets are one 256-bit vector, which the
   comparison's lanes mask directly. */
__attribute__((target("avx2"))) static void narrow_avx2_32(const Entry *e, const Entry *end, const float *v,
                                                           uint64_t *possible) {
    const __m256 values = _mm256_loadu_ps(v);
    const __m256 nan = _mm256_cmp_ps(values, values, _CMP_UNORD_Q);
    const int missing = _mm256_movemask_ps(nan) != 0;
    const float limit = max8(values);  /* used only when no value is missing */
    uint32_t *sets = (uint32_t *)possible;
    for (; e < end && (missing || e->threshold <= limit); e++) {
        __m256 hit = _mm256_cmp_ps(values, _mm256_set1_ps(e->threshold), _CMP_GE_OQ);
        if (missing && !(e->tree & DEFAULT_LEFT_BIT))
            hit = _mm256_or_ps(hit, nan);
        const __m256i cut = _mm256_set1_epi32((int)~(uint32_t)e->mask);  /* the leaves the split rules out */
        __m256i *p = (__m256i *)(sets + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * BLOCK);
        _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_and_si256(_mm256_castps_si256(hit), cut),
                                                   _mm256_loadu_si256(p)));
    }
}

/* The lowest set bit's position read from the exponent of its value as a float (2**k is exact; bit 31
   converts to -2**31, exponent 31 too), then the 8 leaves gathered. */
__attribute__((target("avx2"))) static void finish_avx2_32(const Forest *f, const uint64_t *possible, float *sums) {
    const int per_tree = 1 << f->depth;
    const Py_ssize_t n_trees = f->n_trees;
    const uint32_t *sets = (const uint32_t *)possible;
    const __m256i zero = _mm256_setzero_si256(), bias = _mm256_set1_epi32(127), byte = _mm256_set1_epi32(0xff);
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        const __m256i p = _mm256_loadu_si256((const __m256i *)(sets + t * BLOCK));
        const __m256i lowest = _mm256_and_si256(p, _mm256_sub_epi32(zero, p));
        const __m256i exponent = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(lowest)), 23);
        const __m256i leaf = _mm256_sub_epi32(_mm256_and_si256(exponent, byte), bias);
        const __m256 value = _mm256_i32gather_ps(f->leaves + t * per_tree, leaf, 4);
        float *s = sums + (Py_ssize_t)f->classes[t] * BLOCK;
        _mm256_storeu_ps(s, _mm256_add_ps(_mm256_loadu_ps(s), value));
    }
}

#define AVX512 "avx512f,avx512vl,avx512cd"
/* AVX-512: the comparison gives a lane mask, and one masked 512-bit AND narrows the 8 bit sets. */
__attribute__((target(AVX512))) static void narrow_avx512(const Entry *e, const Entry *end, const float *v,
                                                          uint64_t *possible) {
    const __m256 values = _mm256_loadu_ps(v);
    const __mmask8 nan = _mm256_cmp_ps_mask(values, values, _CMP_UNORD_Q);
    const float limit = max8(values);  /* used only when no value is missing */
    for (; e < end && (nan || e->threshold <= limit); e++) {
        __mmask8 hit = _mm256_cmp_ps_mask(values, _mm256_set1_ps(e->threshold), _CMP_GE_OQ);
        if (!(e->tree & DEFAULT_LEFT_BIT))
            hit |= nan;
        uint64_t *p = possible + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * BLOCK;
        const __m512i bits = _mm512_loadu_si512(p);
        _mm512_storeu_si512(p, _mm512_mask_and_epi64(bits, hit, bits, _mm512_set1_epi64((long long)e->mask)));
    }
}

/* AVX-512: the 8 rows' exit leaves (lowest set bit: 63 - lzcnt of the isolated bit) gathered and
   added to the 8 lanes of the tree's class. */
__attribute__((target(AVX512))) static void finish_avx512(const Forest *f, const uint64_t *possible, float *sums) {
    const int per_tree = 1 << f->depth;
    const Py_ssize_t n_trees = f->n_trees;
    const __m512i top_bit = _mm512_set1_epi64(63), zero = _mm512_setzero_si512();
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        const __m512i p = _mm512_loadu_si512(possible + t * BLOCK);
        const __m512i lowest = _mm512_and_si512(p, _mm512_sub_epi64(zero, p));
        const __m512i leaf = _mm512_sub_epi64(top_bit, _mm512_lzcnt_epi64(lowest));
        const __m256 value = _mm512_i64gather_ps(leaf, f->leaves + t * per_tree, 4);
        float *s = sums + (Py_ssize_t)f->classes[t] * BLOCK;
        _mm256_storeu_ps(s, _mm256_add_ps(_mm256_loadu_ps(s), value));
    }
}
/* AVX-512 for trees of at most 32 leaves (depth <= 5, the committed model's): 32-bit bit sets, half
   the memory the block's sets take (1,560 trees x 8 rows: 50 kB against 100 kB, closer to L1). */
__attribute__((target(AVX512))) static void narrow_avx512_32(const Entry *e, const Entry *end, const float *v,
                                                             uint64_t *possible) {
    const __m256 values = _mm256_loadu_ps(v);
    const __mmask8 nan = _mm256_cmp_ps_mask(values, values, _CMP_UNORD_Q);
    const float limit = max8(values);  /* used only when no value is missing */
    uint32_t *sets = (uint32_t *)possible;
    for (; e < end && (nan || e->threshold <= limit); e++) {
        __mmask8 hit = _mm256_cmp_ps_mask(values, _mm256_set1_ps(e->threshold), _CMP_GE_OQ);
        if (!(e->tree & DEFAULT_LEFT_BIT))
            hit |= nan;
        uint32_t *p = sets + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * BLOCK;
        const __m256i bits = _mm256_loadu_si256((const __m256i *)p);
        const __m256i mask = _mm256_set1_epi32((int)(uint32_t)e->mask);
        _mm256_storeu_si256((__m256i *)p, _mm256_mask_and_epi32(bits, hit, bits, mask));
    }
}

__attribute__((target(AVX512))) static void finish_avx512_32(const Forest *f, const uint64_t *possible,
                                                             float *sums) {
    const int per_tree = 1 << f->depth;
    const Py_ssize_t n_trees = f->n_trees;
    const uint32_t *sets = (const uint32_t *)possible;
    const __m256i top_bit = _mm256_set1_epi32(31), zero = _mm256_setzero_si256();
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        const __m256i p = _mm256_loadu_si256((const __m256i *)(sets + t * BLOCK));
        const __m256i lowest = _mm256_and_si256(p, _mm256_sub_epi32(zero, p));
        const __m256i leaf = _mm256_sub_epi32(top_bit, _mm256_lzcnt_epi32(lowest));
        const __m256 value = _mm256_i32gather_ps(f->leaves + t * per_tree, leaf, 4);
        float *s = sums + (Py_ssize_t)f->classes[t] * BLOCK;
        _mm256_storeu_ps(s, _mm256_add_ps(_mm256_loadu_ps(s), value));
    }
}
/* AVX-512, 16 rows per walk (trees of at most 32 leaves): a tree's 16 bit sets are one 512-bit line. */
__attribute__((target(AVX512))) static void narrow_avx512_16(const Entry *e, const Entry *end, const float *v,
                                                             uint64_t *possible) {
    const __m512 values = _mm512_loadu_ps(v);
    const __mmask16 nan = _mm512_cmp_ps_mask(values, values, _CMP_UNORD_Q);
    const float limit = _mm512_reduce_max_ps(values);  /* used only when no value is missing */
    uint32_t *sets = (uint32_t *)possible;
    for (; e < end && (nan || e->threshold <= limit); e++) {
        __mmask16 hit = _mm512_cmp_ps_mask(values, _mm512_set1_ps(e->threshold), _CMP_GE_OQ);
        if (!(e->tree & DEFAULT_LEFT_BIT))
            hit |= nan;
        uint32_t *p = sets + (size_t)(e->tree & ~DEFAULT_LEFT_BIT) * WIDE_BLOCK;
        const __m512i bits = _mm512_loadu_si512(p);
        _mm512_storeu_si512(p, _mm512_mask_and_epi32(bits, hit, bits, _mm512_set1_epi32((int)(uint32_t)e->mask)));
    }
}

__attribute__((target(AVX512))) static void finish_avx512_16(const Forest *f, const uint64_t *possible,
                                                             float *sums) {
    const int per_tree = 1 << f->depth;
    const Py_ssize_t n_trees = f->n_trees;
    const uint32_t *sets = (const uint32_t *)possible;
    const __m512i top_bit = _mm512_set1_epi32(31), zero = _mm512_setzero_si512();
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        const __m512i p = _mm512_loadu_si512(sets + t * WIDE_BLOCK);
        const __m512i lowest = _mm512_and_si512(p, _mm512_sub_epi32(zero, p));
        const __m512i leaf = _mm512_sub_epi32(top_bit, _mm512_lzcnt_epi32(lowest));
        const __m512 value = _mm512_i32gather_ps(leaf, f->leaves + t * per_tree, 4);
        float *s = sums + (Py_ssize_t)f->classes[t] * WIDE_BLOCK;
        _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), value));
    }
}
#endif

enum { KERNEL_ROW, KERNEL_BLOCK, KERNEL_AVX2, KERNEL_AVX512, N_KERNELS };
static const char *kernel_names[N_KERNELS] = {"row", "block", "avx2", "avx512"};
/* Chosen at module load: the widest SIMD kernel the CPU has, else one row at a time (the portable
   block kernel computes the same but measured slower than rows here: it is the reference the SIMD
   kernels are tested against, not a default). */
static int kernel = -1;

static int kernel_available(int k) {
#ifdef HAVE_X86_KERNELS
    if (k == KERNEL_AVX2)
        return __builtin_cpu_supports("avx2");
    if (k == KERNEL_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
#else
    if (k == KERNEL_AVX2 || k == KERNEL_AVX512)
        return 0;
#endif
    return k >= 0 && k < N_KERNELS;
}

/* BLOCK rows (`rows` of them real; the padding repeats the first row, adds no split, is not written). */
typedef struct {
    narrow_fn narrow;
    finish_fn finish;
    size_t set_size;  /* bytes of one row's bit set of a tree */
    int block;        /* rows per walk */
} BlockKernel;

/* `k.block` rows (`rows` of them real; the padding repeats the first row, adds no split, is not written). */
static void score_block(const Forest *f, const float *x, Py_ssize_t rows, float *out, const Scratch *s,
                        BlockKernel k) {
    const Py_ssize_t width = f->n_features, n_used = f->n_used, n_classes = f->n_classes, block = k.block;
    uint64_t *possible = s->possible;
    /* Every bit set, also above the tree's leaves: the exit leaf always survives and is lower than them. */
    memset(possible, 0xff, (size_t)f->n_trees * (size_t)block * k.set_size);
    for (Py_ssize_t r = 0; r < block; r++) {  /* the block's columns, row by row */
        const float *row = x + (r < rows ? r : 0) * width;
        for (Py_ssize_t u = 0; u < n_used; u++)
            s->values[u * block + r] = row[f->used[u]];
    }
    for (Py_ssize_t u = 0; u < n_used; u++) {
        const int32_t feature = f->used[u];
        k.narrow(f->entries + f->start[feature], f->entries + f->start[feature + 1], s->values + u * block,
                 possible);
    }
    for (Py_ssize_t c = 0; c < n_classes; c++)
        for (Py_ssize_t r = 0; r < block; r++)
            s->sums[c * block + r] = f->base[c];
    k.finish(f, possible, s->sums);
    for (Py_ssize_t r = 0; r < rows; r++)
        for (Py_ssize_t c = 0; c < n_classes; c++)
            out[r * n_classes + c] = s->sums[c * block + r];
}

/* Rows from `r` on in blocks while at least `least` rows are left (the last block padded); the next row. */
static Py_ssize_t score_blocks(const Forest *f, const float *x, float *out, Py_ssize_t r, Py_ssize_t rows,
                               const Scratch *s, BlockKernel k, Py_ssize_t least) {
    for (; r + least <= rows; r += k.block) {
        const Py_ssize_t n = rows - r < k.block ? rows - r : k.block;
        score_block(f, x + r * f->n_features, n, out + r * f->n_classes, s, k);
    }
    return r;
}

/* Blocks of 16 rows while 12 or more are left (AVX-512, trees of at most 32 leaves), then of 8 while
   4 or more are left, the last 0-3 rows one by one (a block costs about as much as 4 rows). */
static void score(const Forest *f, const float *x, float *out, Py_ssize_t rows, int probabilities,
                  const Scratch *s, int how) {
    Py_ssize_t r = 0;
    if (how != KERNEL_ROW) {
        BlockKernel k = {narrow_generic, finish_generic, sizeof(uint64_t), BLOCK};
#ifdef HAVE_X86_KERNELS
        if (how == KERNEL_AVX2 && f->depth <= 5)
            k = (BlockKernel){narrow_avx2_32, finish_avx2_32, sizeof(uint32_t), BLOCK};
        else if (how == KERNEL_AVX2)
            k.narrow = narrow_avx2;
        if (how == KERNEL_AVX512 && f->depth <= 5) {
            const BlockKernel wide = {narrow_avx512_16, finish_avx512_16, sizeof(uint32_t), WIDE_BLOCK};
            r = score_blocks(f, x, out, r, rows, s, wide, WIDE_BLOCK * 3 / 4);
            k = (BlockKernel){narrow_avx512_32, finish_avx512_32, sizeof(uint32_t), BLOCK};
        } else if (how == KERNEL_AVX512) {
            k.narrow = narrow_avx512, k.finish = finish_avx512;
        }
#endif
        r = score_blocks(f, x, out, r, rows, s, k, BLOCK / 2);
    }
    for (; r < rows; r++)
        score_row(f, x + r * f->n_features, s->possible, out + r * f->n_classes);
    if (probabilities)
        for (r = 0; r < rows; r++)
            softmax(out + r * f->n_classes, f->n_classes);
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
        Scratch s;  /* one allocation: bit sets first (8-byte aligned), then the floats */
        s.possible = PyMem_Malloc(((size_t)self->n_trees * BLOCK * sizeof(uint64_t)) +  /* = 16 x 32 bits */
                                  ((size_t)self->n_used + (size_t)self->n_classes) * WIDE_BLOCK * sizeof(float));
        if (s.possible == NULL) {
            PyErr_NoMemory();
        } else {
            s.values = (float *)(s.possible + self->n_trees * BLOCK);
            s.sums = s.values + self->n_used * WIDE_BLOCK;
            const int how = kernel;
            Py_BEGIN_ALLOW_THREADS
            score(self, matrix.buf, out.buf, rows, probabilities, &s, how);
            Py_END_ALLOW_THREADS
            PyMem_Free(s.possible);
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

/* ---------------------------------------------------------------------------------------------------
 * Scoring: one `predict` shared between a thread of its own and the caller, so the caller's thread
 * goes on meanwhile (the worker decodes the next records while a flush is scored: pipeline/detect.py,
 * `Detector.start_flush`).
 *
 * The rows are cut in chunks of SHARE_ROWS. The thread scores them from the first on; when the
 * caller asks for the result (`wait`), it scores, from the last chunk back, every chunk the thread
 * has not finished: those nobody began, and also the one the thread is working on, into its own
 * output, the first of the two to finish giving it (a compare-and-swap on the chunk's state). So the
 * caller never waits for the thread: on a busy machine a thread that has not got a core yet, or lost
 * it mid-chunk, costs the caller at most one chunk scored twice, not a wait for the scheduler (a
 * thread joined on a loaded 2-core machine made the flush several times slower). Each row's
 * probabilities are the same bits whichever side, chunk or kernel scores it (`score`).
 *
 * Why it is safe: the thread touches no Python object and no memory Python can reach. `start` copies
 * the matrix into a C block (`Job`) holding each side's output and scratch; the Job is freed by the
 * last of the thread and the Scoring to let go of it (a detached thread: nobody joins it). The Forest
 * the thread reads is immutable once initialised (a second __init__ is refused) and counts the
 * threads reading it (`readers`): its dealloc waits until none is (it only happens when a model is
 * dropped; in a child forked while a thread ran, which inherits the count and not the thread, it
 * leaves the Forest allocated after a second). Nothing can fail on the thread: allocation happens
 * in `start` (MemoryError there); when no thread can be created, `wait` scores everything.
 * ------------------------------------------------------------------------------------------------- */
#include <pthread.h>
#include <sched.h>

#define SHARE_ROWS 16  /* rows per chunk: a wide block (AVX-512), ~20-60 us of work */

enum { CHUNK_FREE, CHUNK_THREAD, CHUNK_BY_THREAD, CHUNK_BY_CALLER };  /* a chunk's state */

typedef struct {
    Forest *forest;        /* kept readable by its `readers` count while the thread runs */
    float *matrix;         /* the rows, copied: (rows, n_features) */
    float *out[2];         /* (rows, n_classes): [0] what the thread scored, [1] what the caller scored */
    Scratch scratch[2];    /* [0] the thread's, [1] the caller's; each `.possible` owns its allocation */
    int *state;            /* (chunks,) atomic CHUNK_* */
    Py_ssize_t rows, chunks;
    Py_ssize_t by_thread;  /* atomic: chunks the thread finished first */
    int how;               /* the kernel chosen when started */
    int refs;              /* atomic: the Scoring, and the thread while it runs */
} Job;

static void job_release(Job *j) {
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    PyMem_RawFree(j->matrix);
    PyMem_RawFree(j->out[0]);
    PyMem_RawFree(j->out[1]);
    PyMem_RawFree(j->scratch[0].possible);
    PyMem_RawFree(j->scratch[1].possible);
    PyMem_RawFree(j->state);
    PyMem_RawFree(j);
}

static void job_score(Job *j, Py_ssize_t chunk, int side) {
    const Forest *f = j->forest;
    const Py_ssize_t r = chunk * SHARE_ROWS, n = j->rows - r < SHARE_ROWS ? j->rows - r : SHARE_ROWS;
    score(f, j->matrix + r * f->n_features, j->out[side] + r * f->n_classes, n, 1, &j->scratch[side], j->how);
}

static void *job_thread(void *arg) {
    Job *j = arg;
    for (Py_ssize_t c = 0; c < j->chunks; c++) {
        int expected = CHUNK_FREE;
        if (!__atomic_compare_exchange_n(&j->state[c], &expected, CHUNK_THREAD, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            break;  /* the caller took it: it takes every chunk from the last back, so the rest too */
        job_score(j, c, 0);
        expected = CHUNK_THREAD;
        if (__atomic_compare_exchange_n(&j->state[c], &expected, CHUNK_BY_THREAD, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            __atomic_add_fetch(&j->by_thread, 1, __ATOMIC_RELEASE);
    }
    __atomic_sub_fetch(&j->forest->readers, 1, __ATOMIC_RELEASE);  /* the last read of the Forest */
    job_release(j);
    return NULL;
}

/* The caller's share (no GIL needed): every chunk the thread has not finished, from the last back. */
static void job_finish(Job *j) {
    for (Py_ssize_t c = j->chunks - 1; c >= 0; c--) {
        int seen = CHUNK_FREE;
        if (__atomic_compare_exchange_n(&j->state[c], &seen, CHUNK_BY_CALLER, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            job_score(j, c, 1);  /* nobody began it, and the thread will not */
        } else if (seen == CHUNK_THREAD) {  /* the thread is on it: score it too, the first one gives it */
            job_score(j, c, 1);
            __atomic_compare_exchange_n(&j->state[c], &seen, CHUNK_BY_CALLER, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE);
        }
    }
}

static int scratch_alloc(Scratch *s, const Forest *f) {  /* laid out as `run` lays it out */
    s->possible = PyMem_RawMalloc(((size_t)f->n_trees * BLOCK * sizeof(uint64_t)) +
                                  ((size_t)f->n_used + (size_t)f->n_classes) * WIDE_BLOCK * sizeof(float));
    if (s->possible == NULL)
        return -1;
    s->values = (float *)(s->possible + f->n_trees * BLOCK);
    s->sums = s->values + f->n_used * WIDE_BLOCK;
    return 0;
}

/* A Job for `rows` rows of `matrix` (copied), one reference (the caller's); NULL and MemoryError. */
static Job *job_new(Forest *f, const Py_buffer *matrix, Py_ssize_t rows) {
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL)
        return (Job *)PyErr_NoMemory();
    const size_t out_bytes = (size_t)rows * (size_t)f->n_classes * sizeof(float) + 1;
    j->forest = f, j->rows = rows, j->chunks = (rows + SHARE_ROWS - 1) / SHARE_ROWS, j->how = kernel, j->refs = 1;
    j->matrix = PyMem_RawMalloc((size_t)matrix->len + 1);
    j->out[0] = PyMem_RawMalloc(out_bytes);
    j->out[1] = PyMem_RawMalloc(out_bytes);
    j->state = PyMem_RawCalloc((size_t)j->chunks + 1, sizeof(int));  /* CHUNK_FREE is 0 */
    if (j->matrix == NULL || j->out[0] == NULL || j->out[1] == NULL || j->state == NULL ||
        scratch_alloc(&j->scratch[0], f) < 0 || scratch_alloc(&j->scratch[1], f) < 0) {
        job_release(j);
        return (Job *)PyErr_NoMemory();
    }
    memcpy(j->matrix, matrix->buf, (size_t)matrix->len);
    return j;
}

typedef struct {
    PyObject_HEAD
    Forest *forest;  /* strong reference while `job` is held */
    Job *job;        /* NULL once collected by `wait` */
} Scoring;

static void job_cancel(Job *j) {  /* no chunk is begun after this */
    for (Py_ssize_t c = 0; c < j->chunks; c++) {
        int seen = CHUNK_FREE;
        __atomic_compare_exchange_n(&j->state[c], &seen, CHUNK_BY_CALLER, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
}

static void Scoring_dealloc(Scoring *self) {
    if (self->job != NULL) {  /* dropped without wait: the thread stops after its chunk, frees the Job */
        job_cancel(self->job);
        job_release(self->job);
    }
    Py_XDECREF(self->forest);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Scoring_done(Scoring *self, PyObject *unused) {
    const Job *j = self->job;
    return PyBool_FromLong(j == NULL || __atomic_load_n(&j->by_thread, __ATOMIC_ACQUIRE) >= j->chunks);
}

static PyObject *Scoring_wait(Scoring *self, PyObject *args) {
    PyObject *out_obj;
    if (!PyArg_ParseTuple(args, "O", &out_obj))
        return NULL;
    Job *j = self->job;
    if (j == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this scoring was already collected by wait()");
        return NULL;
    }
    Py_buffer out;
    if (get_buffer(out_obj, &out, "f", "out", 1) < 0)
        return NULL;
    const Py_ssize_t n_classes = self->forest->n_classes;
    if (out.len % (4 * n_classes) != 0 || out.len / 4 / n_classes != j->rows) {
        PyErr_Format(PyExc_ValueError, "out of %zd bytes is not %zd rows x %zd classes", out.len, j->rows,
                     n_classes);
        PyBuffer_Release(&out);
        return NULL;
    }
    if (__atomic_load_n(&j->by_thread, __ATOMIC_ACQUIRE) < j->chunks) {
        Py_BEGIN_ALLOW_THREADS
        job_finish(j);
        Py_END_ALLOW_THREADS
    }
    float *to = out.buf;
    for (Py_ssize_t c = 0; c < j->chunks; c++) {  /* every chunk is done: by the thread, or by us */
        const int by = __atomic_load_n(&j->state[c], __ATOMIC_ACQUIRE) == CHUNK_BY_THREAD ? 0 : 1;
        const Py_ssize_t r = c * SHARE_ROWS, n = j->rows - r < SHARE_ROWS ? j->rows - r : SHARE_ROWS;
        memcpy(to + r * n_classes, j->out[by] + r * n_classes, (size_t)(n * n_classes) * sizeof(float));
    }
    PyBuffer_Release(&out);
    self->job = NULL;
    job_release(j);
    Py_RETURN_NONE;
}

static PyObject *Scoring_rows(Scoring *self, void *closure) {
    return self->job == NULL ? Py_NewRef(Py_None) : PyLong_FromSsize_t(self->job->rows);
}

static PyMethodDef Scoring_methods[] = {
    {"done", (PyCFunction)Scoring_done, METH_NOARGS,
     "done(): True once the thread has scored every row (wait() then only copies)."},
    {"wait", (PyCFunction)Scoring_wait, METH_VARARGS,
     "wait(out): score what the thread has not finished (GIL released; never waits for the thread) and "
     "copy the probabilities into float32 (rows, classes) `out`; once only."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scoring_getset[] = {
    {"rows", (getter)Scoring_rows, NULL, "rows being scored (None once collected)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScoringType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._ctrees.Scoring",
    .tp_doc = "A predict under way on a thread of its own (Forest.predict_start); collect it with wait(out).",
    .tp_basicsize = sizeof(Scoring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Scoring_dealloc,
    .tp_methods = Scoring_methods,
    .tp_getset = Scoring_getset,
};

static PyObject *Forest_predict_start(Forest *self, PyObject *args) {
    PyObject *matrix_obj;
    if (!PyArg_ParseTuple(args, "O", &matrix_obj))
        return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Forest is not initialised");
        return NULL;
    }
    Py_buffer matrix;
    if (get_buffer(matrix_obj, &matrix, "f", "matrix", 0) < 0)
        return NULL;
    const Py_ssize_t rows = matrix.len / 4 / self->n_features;
    Job *j = NULL;
    if (rows * self->n_features * 4 != matrix.len)
        PyErr_Format(PyExc_ValueError, "matrix of %zd bytes is not rows x %zd features", matrix.len,
                     self->n_features);
    else
        j = job_new(self, &matrix, rows);
    PyBuffer_Release(&matrix);
    if (j == NULL)
        return NULL;
    Scoring *s = PyObject_New(Scoring, &ScoringType);
    if (s == NULL) {
        job_release(j);
        return NULL;
    }
    s->forest = (Forest *)Py_NewRef(self), s->job = j;
    pthread_t thread;
    pthread_attr_t attr;
    if (rows > 0 && pthread_attr_init(&attr) == 0) {  /* no thread: `wait` scores it all */
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED);  /* the thread's, before it can run */
        __atomic_add_fetch(&self->readers, 1, __ATOMIC_RELAXED);
        if (pthread_create(&thread, &attr, job_thread, j) != 0) {
            __atomic_sub_fetch(&self->readers, 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&j->refs, 1, __ATOMIC_RELAXED);
        }
        pthread_attr_destroy(&attr);
    }
    return (PyObject *)s;
}


static PyMethodDef Forest_methods[] = {
    {"predict", (PyCFunction)Forest_predict, METH_VARARGS,
     "predict(matrix, out): softmax probabilities of float32 (rows, features) into float32 (rows, classes)."},
    {"margins", (PyCFunction)Forest_margins, METH_VARARGS,
     "margins(matrix, out): raw margins (base score plus leaves) into float32 (rows, classes)."},
    {"predict_start", (PyCFunction)Forest_predict_start, METH_VARARGS,
     "predict_start(matrix): a Scoring computing predict's probabilities of float32 (rows, features) on "
     "a thread of its own (the matrix is copied); collect them with its wait(out)."},
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

/* ---------------------------------------------------------------------------------------------------
 * Explainer: TreeSHAP of one class's trees (Lundberg, Erion & Lee 2018, "Consistent Individualized
 * Feature Attribution for Tree Ensembles", Algorithm 2), as XGBoost's `pred_contribs` computes it.
 *
 * Why here: an alert names the features that pushed its row towards its class. XGBoost's TreeSHAP
 * costs a fixed ~0.4 ms per call plus ~0.3 ms per row for one class's 120 trees. It works on the trees
 * as trained (not the perfect-binary layout above: SHAP weighs each branch by its cover, and a leaf
 * copied down would add splits that are not there).
 *
 * What makes it equal to XGBoost's values: the arithmetic is float32 throughout, in the published
 * algorithm's order, with the same rounding points XGBoost uses (measured against it bit for bit in
 * tests/unit/test_shap_native.py): a node's mean value is (mean(left) * cover(left) + mean(right) *
 * cover(right)) / cover(node); a branch's share of its parent is cover(child) / cover(parent); each
 * tree's contributions are summed from zero in the order its leaves are reached (the row's own branch
 * first), then added to the row's totals in tree order; the bias column is the sum of every tree's
 * root mean, then the class's base score. A missing (NaN) value takes the split's default branch; any
 * other value goes left when `value < threshold` (so +-inf simply compare).
 *
 * Why it is fast: a tree's contributions depend on the row only through the row's branch at each of
 * its splits (which child is "hot": that fixes the recursion's order and every path's one-fractions),
 * so the same float operations on the same inputs give the same bits. For a tree of at most 64
 * splits that bit vector keys a small table of the tree's per-feature sums (`TreeMemo`): a row seen
 * before in that respect costs one pass over the tree's splits and a few additions, not the O(leaves
 * x depth^2) recursion. Rows that alert look alike: on the benchmark replay 94 % of (row, tree) pairs
 * are hits, at most 78 keys per tree. A table grows from 16 slots to SHAP_TREE_SLOTS and is only read
 * once 3/4 full, so memory is bounded by the trees whatever the rows (~1.3 MB after the replay's 690
 * alerting rows; 17 MB with 3,000 random rows on all 13 classes, every table full). The tables are filled
 * while holding the GIL (every call shares them), so calls do not release it. A flush's explanations
 * find the trees and tables cold (its features and predict ran in between), so what a hit reads takes
 * few cache lines: each tree's split tests side by side (`SplitTest`), each key beside its sums (`MemoSlot`).
 *
 * Everything an index comes from is checked once at construction: children inside their tree, every
 * node reached once from the root (a tree, not a graph with cycles or shared children), depth at most
 * SHAP_MAX_DEPTH (the recursion and the path buffer are bounded by it), features inside a row.
 * ------------------------------------------------------------------------------------------------- */

#define SHAP_MAX_DEPTH 64
#define SHAP_TREE_SLOTS 128  /* the largest table of a tree; it stops taking keys at 3/4 of that (96) */

/* One slot of a tree's table: its key, then its sums beside it, so a lookup that hits reads one or two
   adjacent cache lines (a flush's explanations find the tables cold), not three scattered arrays. */
typedef struct {
    uint64_t key;    /* bit i set: the row goes left at the tree's i-th split (`splits` order) */
    uint32_t used;
    float sums[];    /* the tree's per-feature sums, in `features` order */
} MemoSlot;

/* A tree's contributions per branch vector: open addressing, `capacity` (a power of two) slots of
   `memo_stride(width)` bytes each, width being the tree's feature count. */
typedef struct {
    char *slots;
    int32_t capacity, count;
} TreeMemo;

typedef struct {
    int32_t left, right;   /* global node index of each child; left == -1 for a leaf */
    int32_t feature;       /* split feature (internal nodes) */
    int32_t default_left;  /* a missing value goes left */
    float threshold;       /* go left when value < threshold */
    float value;           /* leaf value (leaves) */
    float left_share;      /* cover(left) / cover(node): the fraction of training rows going left */
    float right_share;
} ShapNode;

/* One split as `branch_key` tests it: 8 bytes, each tree's splits side by side. A key tests every split
   of its tree, and a flush's explanations find these cold (the features and the predict ran in between):
   a quarter of the cache lines the 32-byte nodes themselves take, and no index to follow to them. */
typedef struct {
    int32_t feature_left;  /* the split feature << 1 | default_left (a missing value goes left) */
    float threshold;       /* go left when value < threshold */
} SplitTest;

/* One element of the path of unique features from the root to a node (Algorithm 2's m). */
typedef struct {
    int32_t feature;  /* -1 for the root's placeholder element */
    float zero;       /* fraction of the feature's "absent" paths flowing down here (cover ratio) */
    float one;        /* 1 when the row itself flows down here, else 0 */
    float weight;     /* permutation weight of subsets of this size */
} PathStep;

typedef struct {
    PyObject_HEAD
    ShapNode *nodes;
    int32_t *roots;          /* (n_trees,) global index of each tree's root */
    int32_t *features;       /* the distinct split features of each tree, tree after tree */
    int32_t *feature_start;  /* (n_trees + 1,) where each tree's features begin in `features` */
    SplitTest *splits;       /* each tree's split nodes' tests (feature, default, threshold), tree after tree */
    int32_t *split_start;    /* (n_trees + 1,) where each tree's splits begin in `splits` */
    TreeMemo *memos;         /* (n_trees,) per-tree tables; unused for a tree of more than 64 splits */
    float bias;              /* sum of the trees' root means (in tree order), then + base score */
    Py_ssize_t n_nodes, n_trees, n_features;
    int depth;               /* the deepest leaf */
    int ready;
} Explainer;

enum { S_LEFT, S_RIGHT, S_FEATURES, S_THRESHOLDS, S_DEFAULT_LEFT, S_VALUES, S_COVERS, S_SIZES, S_PARTS };

/* Algorithm 2's EXTEND: the path m[0..d-1] grows by one element (feature, zero, one) at m[d]. */
static void extend_path(PathStep *m, int d, float zero, float one, int32_t feature) {
    m[d].feature = feature, m[d].zero = zero, m[d].one = one, m[d].weight = d == 0 ? 1.0f : 0.0f;
    for (int i = d - 1; i >= 0; i--) {
        m[i + 1].weight += one * m[i].weight * (float)(i + 1) / (float)(d + 1);
        m[i].weight = zero * m[i].weight * (float)(d - i) / (float)(d + 1);
    }
}

/* Algorithm 2's UNWIND: the element k leaves the path m[0..d] (the weights are un-extended by it). */
static void unwind_path(PathStep *m, int d, int k) {
    const float one = m[k].one, zero = m[k].zero;
    float next = m[d].weight;
    for (int i = d - 1; i >= 0; i--) {
        if (one != 0.0f) {
            const float kept = m[i].weight;
            m[i].weight = next * (float)(d + 1) / ((float)(i + 1) * one);
            next = kept - m[i].weight * zero * (float)(d - i) / (float)(d + 1);
        } else {
            m[i].weight = m[i].weight * (float)(d + 1) / (zero * (float)(d - i));
        }
    }
    for (int i = k; i < d; i++)
        m[i].feature = m[i + 1].feature, m[i].zero = m[i + 1].zero, m[i].one = m[i + 1].one;
}

/* sum(UNWIND(m, k).w) without writing the path, for every k = 1..d at once: the weight of each element
   at a leaf, into totals[k]. Each k's float operations are those of unwinding it alone, in the same order
   (so the same bits); the d chains are only interleaved, step i of every k before step i - 1, so the CPU
   overlaps their multiply-divide latencies instead of waiting on one chain at a time. */
static void unwound_sums(const PathStep *m, int d, float *totals) {
    float next[SHAP_MAX_DEPTH + 2];
    for (int k = 1; k <= d; k++)
        next[k] = m[d].weight, totals[k] = 0.0f;
    for (int i = d - 1; i >= 0; i--) {
        for (int k = 1; k <= d; k++) {
            const float one = m[k].one, zero = m[k].zero;
            if (one != 0.0f) {
                const float w = next[k] * (float)(d + 1) / ((float)(i + 1) * one);
                totals[k] += w;
                next[k] = m[i].weight - w * zero * ((float)(d - i) / (float)(d + 1));
            } else if (zero != 0.0f) {
                totals[k] += (m[i].weight / zero) / ((float)(d - i) / (float)(d + 1));
            }  /* both fractions zero: every weight is zero, nothing to add */
        }
    }
}

/* Algorithm 2's RECURSE at `node`, the parent's path being parent[0..len-1]; the node's own path is
   written right after it (parent + len), so the parent's survives for its other child. */
static void shap_recurse(const Explainer *e, int32_t node, const float *row, float *phi, PathStep *parent,
                         int len, float zero, float one, int32_t feature) {
    PathStep *m = parent + len;
    memcpy(m, parent, (size_t)len * sizeof(PathStep));
    extend_path(m, len, zero, one, feature);
    int d = len;
    const ShapNode *n = &e->nodes[node];
    if (n->left < 0) {
        float totals[SHAP_MAX_DEPTH + 2];
        unwound_sums(m, d, totals);
        for (int i = 1; i <= d; i++)
            phi[m[i].feature] += totals[i] * (m[i].one - m[i].zero) * n->value;
        return;
    }
    const float v = row[n->feature];
    const int hot_left = isnan(v) ? n->default_left : v < n->threshold;
    float in_zero = 1.0f, in_one = 1.0f;
    for (int k = 0; k <= d; k++)
        if (m[k].feature == n->feature) {  /* split on before: undo it, to redo it with this node's shares */
            in_zero = m[k].zero, in_one = m[k].one;
            unwind_path(m, d, k);
            d--;
            break;
        }
    const int32_t hot = hot_left ? n->left : n->right, cold = hot_left ? n->right : n->left;
    const float hot_share = hot_left ? n->left_share : n->right_share;
    const float cold_share = hot_left ? n->right_share : n->left_share;
    shap_recurse(e, hot, row, phi, m, d + 1, hot_share * in_zero, in_one, n->feature);
    shap_recurse(e, cold, row, phi, m, d + 1, cold_share * in_zero, 0.0f, n->feature);
}

/* The row's branch at each split of tree `t` as bits (`splits` order): what its contributions depend on. */
static uint64_t branch_key(const Explainer *e, Py_ssize_t t, const float *row) {
    uint64_t key = 0;
    const SplitTest *split = e->splits + e->split_start[t];
    const int32_t count = e->split_start[t + 1] - e->split_start[t];
    for (int32_t bit = 0; bit < count; bit++) {
        const float v = row[split[bit].feature_left >> 1];
        key |= (uint64_t)(isnan(v) ? split[bit].feature_left & 1 : v < split[bit].threshold) << bit;
    }
    return key;
}

static inline size_t memo_slot(uint64_t key, int32_t capacity) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (size_t)(capacity - 1);
}

/* Bytes of one slot of a tree of `width` features (a multiple of 8: every key stays aligned). */
static inline size_t memo_stride(int32_t width) {
    return (offsetof(MemoSlot, sums) + (size_t)width * sizeof(float) + 7) & ~(size_t)7;
}

static inline MemoSlot *memo_at(const TreeMemo *m, size_t i, size_t stride) {
    return (MemoSlot *)(m->slots + i * stride);
}

/* The table's sums for `key`, or NULL. */
static const float *memo_find(const TreeMemo *m, uint64_t key, int32_t width) {
    if (m->capacity == 0)
        return NULL;
    const size_t stride = memo_stride(width);
    for (size_t i = memo_slot(key, m->capacity);; i = (i + 1) & (size_t)(m->capacity - 1)) {
        const MemoSlot *slot = memo_at(m, i, stride);
        if (!slot->used)
            return NULL;
        if (slot->key == key)
            return slot->sums;
    }
}

/* The slot `key` goes to in `m` (a free one: `key` is not there yet, and the table is not full). */
static MemoSlot *memo_free_slot(const TreeMemo *m, uint64_t key, size_t stride) {
    size_t i = memo_slot(key, m->capacity);
    while (memo_at(m, i, stride)->used)
        i = (i + 1) & (size_t)(m->capacity - 1);
    return memo_at(m, i, stride);
}

/* `m` moved to a table of `capacity` slots (0 on success; -1: no memory, `m` unchanged). */
static int memo_resize(TreeMemo *m, int32_t capacity, int32_t width) {
    const size_t stride = memo_stride(width);
    TreeMemo grown = {PyMem_Calloc((size_t)capacity, stride), capacity, m->count};
    if (grown.slots == NULL)
        return -1;
    for (int32_t j = 0; j < m->capacity; j++) {
        const MemoSlot *old = memo_at(m, (size_t)j, stride);
        if (old->used)
            memcpy(memo_free_slot(&grown, old->key, stride), old, stride);
    }
    PyMem_Free(m->slots);
    *m = grown;
    return 0;
}

/* Keep `sums` for `key` (not there yet) when the table has room or can grow; else nothing. */
static void memo_keep(TreeMemo *m, uint64_t key, const float *sums, int32_t width) {
    if (4 * (m->count + 1) > 3 * m->capacity) {
        if (m->capacity >= SHAP_TREE_SLOTS || memo_resize(m, m->capacity ? 2 * m->capacity : 16, width) < 0)
            return;
    }
    MemoSlot *slot = memo_free_slot(m, key, memo_stride(width));
    slot->key = key, slot->used = 1, m->count++;
    memcpy(slot->sums, sums, (size_t)width * sizeof(float));
}

/* One row: per tree, its contributions from zero (only its own features can be non-zero), added in:
   from the tree's table when the row's branches were seen before, else by walking it (then kept).
   Every tree's key is made first, asking for the line of the slot it hashes to, so the lookups find
   the lines on their way (a flush's explanations find the tables cold) instead of waiting for one
   tree's miss after another; the trees are then added in the same order as before. */
static void explain_row(Explainer *e, const float *row, float *out, float *phi, PathStep *path, float *scratch,
                        uint64_t *keys) {
    for (Py_ssize_t t = 0; t < e->n_trees; t++) {
        if (e->split_start[t + 1] - e->split_start[t] > 64)
            continue;
        const TreeMemo *m = &e->memos[t];
        keys[t] = branch_key(e, t, row);
        if (m->capacity > 0) {
            const int32_t width = e->feature_start[t + 1] - e->feature_start[t];
            __builtin_prefetch(memo_at(m, memo_slot(keys[t], m->capacity), memo_stride(width)));
        }
    }
    memset(out, 0, (size_t)e->n_features * sizeof(float));
    for (Py_ssize_t t = 0; t < e->n_trees; t++) {
        const int32_t *f = e->features + e->feature_start[t], *end = e->features + e->feature_start[t + 1];
        const int32_t width = (int32_t)(end - f);
        const int keyed = e->split_start[t + 1] - e->split_start[t] <= 64;
        const uint64_t key = keyed ? keys[t] : 0;
        const float *known = keyed ? memo_find(&e->memos[t], key, width) : NULL;
        if (known != NULL) {
            for (int32_t k = 0; k < width; k++)
                out[f[k]] += known[k];
            continue;
        }
        for (const int32_t *p = f; p < end; p++)
            phi[*p] = 0.0f;
        shap_recurse(e, e->roots[t], row, phi, path, 0, 1.0f, 1.0f, -1);
        for (int32_t k = 0; k < width; k++) {
            out[f[k]] += phi[f[k]];
            scratch[k] = phi[f[k]];
        }
        if (keyed)
            memo_keep(&e->memos[t], key, scratch, width);
    }
    out[e->n_features] = e->bias;
}

/* Mean value of the subtree at `node` (as XGBoost weighs it: by cover), and each child's share. */
static float node_mean(ShapNode *nodes, const float *covers, int32_t node) {
    ShapNode *n = &nodes[node];
    if (n->left < 0)
        return n->value;
    float mean = node_mean(nodes, covers, n->left) * covers[n->left];
    mean += node_mean(nodes, covers, n->right) * covers[n->right];
    n->left_share = covers[n->left] / covers[node];
    n->right_share = covers[n->right] / covers[node];
    return mean / covers[node];
}

/* Tree `t` (nodes first..first+size-1): a tree reached from its root, children and features in range.
   Fills its nodes (global indices), its distinct features and its splits; returns its depth or -1. */
static int check_tree(Explainer *self, Py_buffer *parts, Py_ssize_t first, Py_ssize_t size, char *seen,
                      int32_t *stack, int32_t *level, Py_ssize_t *n_used, char *feature_seen, Py_ssize_t *n_splits) {
    const int32_t *left = (int32_t *)parts[S_LEFT].buf + first, *right = (int32_t *)parts[S_RIGHT].buf + first;
    const int32_t *features = (int32_t *)parts[S_FEATURES].buf + first;
    const int32_t *dleft = (int32_t *)parts[S_DEFAULT_LEFT].buf + first;
    const float *thresholds = (float *)parts[S_THRESHOLDS].buf + first, *values = (float *)parts[S_VALUES].buf + first;
    int deepest = 0, top = 0;
    memset(seen, 0, (size_t)size);
    stack[top] = 0, level[top++] = 0, seen[0] = 1;
    while (top > 0) {
        const int32_t i = stack[--top];
        const int depth = level[top];
        ShapNode *n = &self->nodes[first + i];
        deepest = depth > deepest ? depth : deepest;
        n->value = values[i], n->threshold = thresholds[i], n->default_left = dleft[i] != 0;
        n->left = n->right = -1, n->feature = 0, n->left_share = n->right_share = 0.0f;
        if (left[i] == -1 && right[i] == -1)
            continue;
        if (left[i] < 1 || left[i] >= size || right[i] < 1 || right[i] >= size || seen[left[i]] || seen[right[i]] ||
            left[i] == right[i] || features[i] < 0 || features[i] >= self->n_features || depth >= SHAP_MAX_DEPTH) {
            PyErr_Format(PyExc_ValueError, "node %zd of %zd: children %d, %d or feature %d out of range, reached "
                         "twice, or deeper than %d", (Py_ssize_t)i, size, left[i], right[i], features[i],
                         SHAP_MAX_DEPTH);
            return -1;
        }
        n->left = (int32_t)first + left[i], n->right = (int32_t)first + right[i], n->feature = features[i];
        self->splits[(*n_splits)++] = (SplitTest){features[i] << 1 | n->default_left, n->threshold};
        if (!feature_seen[features[i]]) {
            feature_seen[features[i]] = 1;
            self->features[(*n_used)++] = features[i];
        }
        seen[left[i]] = seen[right[i]] = 1;
        stack[top] = left[i], level[top++] = depth + 1;
        stack[top] = right[i], level[top++] = depth + 1;
    }
    return deepest;
}

static int shap_build(Explainer *self, Py_buffer *parts, float base) {
    const Py_ssize_t n_nodes = parts[S_LEFT].len / 4, trees = parts[S_SIZES].len / 4;
    const int32_t *sizes = parts[S_SIZES].buf;
    for (int p = 0; p < S_SIZES; p++)
        if (parts[p].len / 4 != n_nodes) {
            PyErr_SetString(PyExc_ValueError, "node arrays of different lengths");
            return -1;
        }
    Py_ssize_t total = 0;
    for (Py_ssize_t t = 0; t < trees; t++) {
        if (sizes[t] < 1 || sizes[t] > n_nodes - total) {
            PyErr_Format(PyExc_ValueError, "tree %zd has %d nodes: sizes do not add up to the node arrays", t, sizes[t]);
            return -1;
        }
        total += sizes[t];
    }
    if (trees == 0 || total != n_nodes || n_nodes > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "tree sizes do not add up to the node arrays (or no tree)");
        return -1;
    }
    self->nodes = PyMem_Calloc((size_t)n_nodes, sizeof(ShapNode));
    self->roots = PyMem_Malloc((size_t)trees * sizeof(int32_t));
    self->features = PyMem_Malloc((size_t)n_nodes * sizeof(int32_t));
    self->feature_start = PyMem_Malloc(((size_t)trees + 1) * sizeof(int32_t));
    self->splits = PyMem_Malloc((size_t)n_nodes * sizeof(SplitTest));
    self->split_start = PyMem_Malloc(((size_t)trees + 1) * sizeof(int32_t));
    self->memos = PyMem_Calloc((size_t)trees, sizeof(TreeMemo));
    char *seen = PyMem_Malloc((size_t)n_nodes), *feature_seen = PyMem_Malloc((size_t)self->n_features);
    int32_t *stack = PyMem_Malloc((size_t)n_nodes * 2 * sizeof(int32_t));
    int rc = -1;
    if (!self->nodes || !self->roots || !self->features || !self->feature_start || !seen ||
        !feature_seen || !stack || !self->splits || !self->split_start || !self->memos) {
        PyErr_NoMemory();
        goto done;
    }
    self->n_nodes = n_nodes, self->n_trees = trees;
    const float *covers = parts[S_COVERS].buf;
    float bias = 0.0f;
    Py_ssize_t first = 0, n_used = 0, n_splits = 0;
    for (Py_ssize_t t = 0; t < trees; first += sizes[t++]) {
        self->feature_start[t] = (int32_t)n_used, self->split_start[t] = (int32_t)n_splits;
        memset(feature_seen, 0, (size_t)self->n_features);
        int depth = check_tree(self, parts, first, sizes[t], seen, stack, stack + n_nodes, &n_used, feature_seen,
                               &n_splits);
        if (depth < 0)
            goto done;
        self->depth = depth > self->depth ? depth : self->depth;
        self->roots[t] = (int32_t)first;
        bias += node_mean(self->nodes, covers, (int32_t)first);
    }
    self->feature_start[trees] = (int32_t)n_used, self->split_start[trees] = (int32_t)n_splits;
    self->bias = bias + base;
    rc = 0;
done:
    PyMem_Free(seen);
    PyMem_Free(feature_seen);
    PyMem_Free(stack);
    return rc;
}

static int Explainer_init(Explainer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"left", "right", "features", "thresholds", "default_left", "values", "covers",
                             "sizes", "base", "n_features", NULL};
    static const char *formats[S_PARTS] = {"i", "i", "i", "f", "i", "f", "f", "i"};
    PyObject *objs[S_PARTS];
    float base;
    Py_ssize_t n_features;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOfn", kwlist, &objs[0], &objs[1], &objs[2], &objs[3],
                                     &objs[4], &objs[5], &objs[6], &objs[7], &base, &n_features))
        return -1;
    if (self->nodes != NULL || self->roots != NULL) {  /* even a failed try */
        PyErr_SetString(PyExc_RuntimeError, "Explainer is already initialised");
        return -1;
    }
    if (n_features <= 0 || n_features > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "n_features must be positive");
        return -1;
    }
    self->n_features = n_features;
    Py_buffer parts[S_PARTS];
    int got = 0, rc = -1;
    for (; got < S_PARTS; got++)
        if (get_buffer(objs[got], &parts[got], formats[got], kwlist[got], 0) < 0)
            break;
    if (got == S_PARTS)
        rc = shap_build(self, parts, base);
    self->ready = rc == 0;
    while (got-- > 0)
        PyBuffer_Release(&parts[got]);
    return rc;
}

static void Explainer_dealloc(Explainer *self) {
    for (Py_ssize_t t = 0; self->memos != NULL && t < self->n_trees; t++)
        PyMem_Free(self->memos[t].slots);
    PyMem_Free(self->memos);
    PyMem_Free(self->splits);
    PyMem_Free(self->split_start);
    PyMem_Free(self->nodes);
    PyMem_Free(self->roots);
    PyMem_Free(self->features);
    PyMem_Free(self->feature_start);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Explainer_contributions(Explainer *self, PyObject *args) {
    PyObject *matrix_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &matrix_obj, &out_obj))
        return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Explainer is not initialised");
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
    const Py_ssize_t width = self->n_features, rows = matrix.len / 4 / width;
    if (rows * width * 4 != matrix.len || out.len % (4 * (width + 1)) != 0 || out.len / 4 / (width + 1) != rows) {
        PyErr_Format(PyExc_ValueError, "matrix of %zd bytes is not rows x %zd features, or out is not "
                     "rows x %zd (features + bias)", matrix.len, width, width + 1);
        goto done;
    }
    const size_t steps = ((size_t)self->depth + 2) * ((size_t)self->depth + 3) / 2;
    float *phi = PyMem_Calloc((size_t)width, sizeof(float));
    PathStep *path = PyMem_Malloc(steps * sizeof(PathStep));
    float *scratch = PyMem_Malloc((size_t)width * sizeof(float));  /* a tree's sums, for its table */
    uint64_t *keys = PyMem_Malloc((size_t)self->n_trees * sizeof(uint64_t));  /* a row's key per tree */
    if (phi == NULL || path == NULL || scratch == NULL || keys == NULL) {
        PyErr_NoMemory();
    } else {  /* with the GIL held: the trees' tables are shared by every call */
        const float *x = matrix.buf;
        float *o = out.buf;
        for (Py_ssize_t r = 0; r < rows; r++)
            explain_row(self, x + r * width, o + r * (width + 1), phi, path, scratch, keys);
        result = Py_None;
        Py_INCREF(result);
    }
    PyMem_Free(phi);
    PyMem_Free(path);
    PyMem_Free(scratch);
    PyMem_Free(keys);
done:
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *Explainer_trees(Explainer *self, void *closure) { return PyLong_FromSsize_t(self->n_trees); }

static PyObject *Explainer_bias(Explainer *self, void *closure) { return PyFloat_FromDouble(self->bias); }

static PyMethodDef Explainer_methods[] = {
    {"contributions", (PyCFunction)Explainer_contributions, METH_VARARGS,
     "contributions(matrix, out): TreeSHAP values of float32 (rows, features) into float32 (rows, features + 1), "
     "bias last."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Explainer_getset[] = {
    {"trees", (getter)Explainer_trees, NULL, "number of trees", NULL},
    {"bias", (getter)Explainer_bias, NULL, "the bias column: the trees' mean values plus the base score", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ExplainerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._ctrees.Explainer",
    .tp_doc = "Explainer(left, right, features, thresholds, default_left, values, covers, sizes, base, n_features): "
              "TreeSHAP of one class's trees (nodes of every tree one after another, `sizes` nodes each).",
    .tp_basicsize = sizeof(Explainer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Explainer_init,
    .tp_dealloc = (destructor)Explainer_dealloc,
    .tp_methods = Explainer_methods,
    .tp_getset = Explainer_getset,
};

/* --- the detector's per-flush glue: `scoring.classify` and `scoring.top_features_of_rows` ---------- */

/* A contiguous buffer of `itemsize`-byte items in `format`, `n` of them (TypeError / ValueError otherwise). */
static int get_items(PyObject *obj, Py_buffer *view, const char *format, Py_ssize_t itemsize, Py_ssize_t n,
                     const char *what, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *got = view->format != NULL ? view->format : "B";
    if (view->itemsize != itemsize || strcmp(got, format) != 0 || view->len != n * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd contiguous items of format '%s', got %zd bytes of '%s'",
                     what, n, format, view->len, got);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* numpy's argmax of n floats: the first maximum, or the first NaN (numpy's `!(v <= max)` rule). */
static Py_ssize_t arg_max(const float *v, Py_ssize_t n) {
    float best = v[0];
    Py_ssize_t at = 0;
    if (isnan(best))
        return 0;
    for (Py_ssize_t i = 1; i < n; i++)
        if (!(v[i] <= best)) {
            best = v[i];
            at = i;
            if (isnan(best))
                break;
        }
    return at;
}

/* classify(probabilities, per_class, cutoff, generic, dominance, malicious, flagged, best, named):
   `scoring.classify`'s arrays in one pass, every comparison in float32 as numpy makes it with a
   Python float (NEP 50: the scalar takes the array's dtype). */
static PyObject *module_classify(PyObject *mod, PyObject *args) {
    PyObject *p_obj, *c_obj, *m_obj, *f_obj, *b_obj, *n_obj;
    float cutoff, generic, dominance;
    Py_ssize_t rows, classes;
    if (!PyArg_ParseTuple(args, "OnnOfffOOOO", &p_obj, &rows, &classes, &c_obj, &cutoff, &generic, &dominance,
                          &m_obj, &f_obj, &b_obj, &n_obj))
        return NULL;
    if (rows < 0 || classes < 2 || rows > PY_SSIZE_T_MAX / 4 / classes) {
        PyErr_SetString(PyExc_ValueError, "classify: rows must be >= 0 and classes >= 2");
        return NULL;
    }
    Py_buffer p, c, m, f, b, n;
    Py_buffer *views[6] = {&p, &c, &m, &f, &b, &n};
    int got = 0;
    if (get_items(p_obj, &p, "f", 4, rows * classes, "probabilities", 0) == 0 && ++got &&
        get_items(c_obj, &c, "f", 4, classes, "per_class", 0) == 0 && ++got &&
        get_items(m_obj, &m, "f", 4, rows, "malicious", 1) == 0 && ++got &&
        get_items(f_obj, &f, "?", 1, rows, "flagged", 1) == 0 && ++got &&
        get_items(b_obj, &b, sizeof(long) == 8 ? "l" : "q", 8, rows, "best", 1) == 0 && ++got &&
        get_items(n_obj, &n, "?", 1, rows, "named", 1) == 0 && ++got) {
        const float *probs = p.buf, *per_class = c.buf;
        float *malicious = m.buf;
        uint8_t *flagged = f.buf, *named = n.buf;
        int64_t *best = b.buf;
        for (Py_ssize_t r = 0; r < rows; r++) {
            const float *row = probs + r * classes;
            const float mal = 1.0f - row[0];
            const Py_ssize_t at = arg_max(row + 1, classes - 1) + 1;
            const float top = row[at];
            const int is_named = top >= per_class[at] && top >= dominance * mal;
            malicious[r] = mal;
            best[r] = at;
            named[r] = (uint8_t)is_named;
            flagged[r] = (uint8_t)(mal >= cutoff && (is_named || mal >= generic));
        }
    }
    for (int i = 0; i < got; i++)
        PyBuffer_Release(views[i]);
    if (got < 6)
        return NULL;
    Py_RETURN_NONE;
}

/* The k largest positive weights of one row, largest first, the lower index first among equals
   (what a stable argsort of -weights keeps of its first k after dropping those not > 0: NaN,
   zeros and negatives sort after every positive weight). Returns how many were found. */
static Py_ssize_t top_of_row(const float *w, Py_ssize_t n, Py_ssize_t k, Py_ssize_t *at) {
    Py_ssize_t found = 0;
    for (Py_ssize_t i = 0; k > 0 && i < n; i++) {
        const float v = w[i];
        if (!(v > 0.0f) || (found == k && !(v > w[at[found - 1]])))
            continue;
        Py_ssize_t j = found < k ? found++ : k - 1;  /* the last slot is dropped when full */
        while (j > 0 && v > w[at[j - 1]]) {
            at[j] = at[j - 1];
            j--;
        }
        at[j] = i;
    }
    return found;
}

/* top_features(contributions, values, names, rows, k): `scoring.top_features_of_rows` — per row of float32
   values (rows, len(names)) and contributions (rows, len(names) + 1, bias last), a list of
   (name, value, contribution) of the k largest positive contributions. */
static PyObject *module_top_features(PyObject *mod, PyObject *args) {
    PyObject *c_obj, *v_obj, *names;
    Py_ssize_t rows, k;
    if (!PyArg_ParseTuple(args, "OOO!nn", &c_obj, &v_obj, &PyTuple_Type, &names, &rows, &k))
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (rows < 0 || k < 0 || n < 1 || rows > PY_SSIZE_T_MAX / 4 / (n + 1)) {
        PyErr_SetString(PyExc_ValueError, "top_features: rows and k must be >= 0 and names not empty");
        return NULL;
    }
    if (k > n)
        k = n;
    Py_buffer c, v;
    if (get_items(c_obj, &c, "f", 4, rows * (n + 1), "contributions", 0) < 0)
        return NULL;
    if (get_items(v_obj, &v, "f", 4, rows * n, "values", 0) < 0) {
        PyBuffer_Release(&c);
        return NULL;
    }
    Py_ssize_t *at = PyMem_Malloc((size_t)(k > 0 ? k : 1) * sizeof(Py_ssize_t));
    PyObject *out = at == NULL ? PyErr_NoMemory() : PyList_New(rows);
    for (Py_ssize_t r = 0; out != NULL && r < rows; r++) {
        const float *w = (const float *)c.buf + r * (n + 1), *x = (const float *)v.buf + r * n;
        const Py_ssize_t found = top_of_row(w, n, k, at);
        PyObject *row = PyList_New(found);
        for (Py_ssize_t j = 0; row != NULL && j < found; j++) {
            PyObject *item = Py_BuildValue("(Odd)", PyTuple_GET_ITEM(names, at[j]), (double)x[at[j]], (double)w[at[j]]);
            if (item == NULL)
                Py_CLEAR(row);
            else
                PyList_SET_ITEM(row, j, item);
        }
        if (row == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, r, row);
    }
    PyMem_Free(at);
    PyBuffer_Release(&c);
    PyBuffer_Release(&v);
    return out;
}

/* The scoring kernel every Forest uses (one per process): for tests and benchmarks, which compare them. */
static PyObject *module_use_kernel(PyObject *mod, PyObject *arg) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "use_kernel(name): name must be a str");
        return NULL;
    }
    for (int k = 0; k < N_KERNELS; k++)
        if (strcmp(name, kernel_names[k]) == 0) {
            if (!kernel_available(k)) {
                PyErr_Format(PyExc_ValueError, "kernel %s is not available on this CPU", name);
                return NULL;
            }
            const int previous = kernel;
            kernel = k;
            return PyUnicode_FromString(kernel_names[previous]);
        }
    PyErr_Format(PyExc_ValueError, "unknown kernel %R (row, block, avx2, avx512)", arg);
    return NULL;
}

static PyObject *module_kernels(PyObject *mod, PyObject *unused) {
    PyObject *names = PyList_New(0);
    for (int k = 0; names != NULL && k < N_KERNELS; k++)
        if (kernel_available(k)) {
            PyObject *name = PyUnicode_FromString(kernel_names[k]);
            if (name == NULL || PyList_Append(names, name) < 0)
                Py_CLEAR(names);
            Py_XDECREF(name);
        }
    return names;
}

static PyObject *module_kernel(PyObject *mod, PyObject *unused) { return PyUnicode_FromString(kernel_names[kernel]); }

static PyMethodDef module_methods[] = {
    {"use_kernel", (PyCFunction)module_use_kernel, METH_O,
     "use_kernel(name): score with 'row' (one row at a time), 'block' (8 rows per walk of the splits), 'avx2' or "
     "'avx512' (the same with SIMD, where the CPU has it); returns the previous name. Every kernel gives the same bits."},
    {"kernels", (PyCFunction)module_kernels, METH_NOARGS, "kernels(): the kernels this CPU can run."},
    {"kernel", (PyCFunction)module_kernel, METH_NOARGS, "kernel(): the kernel in use."},
    {"classify", (PyCFunction)module_classify, METH_VARARGS,
     "classify(probabilities, rows, classes, per_class, cutoff, generic, dominance, malicious, flagged, best, named): "
     "scoring.classify's arrays (float32, bool, int64, bool) filled in one pass."},
    {"top_features", (PyCFunction)module_top_features, METH_VARARGS,
     "top_features(contributions, values, names, rows, k): scoring.top_features_of_rows of float32 buffers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipeline._ctrees", "XGBoost-exact tree scoring and TreeSHAP in C (pipeline.compiled_model).",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__ctrees(void) {
    if (PyType_Ready(&ForestType) < 0 || PyType_Ready(&ExplainerType) < 0 || PyType_Ready(&ScoringType) < 0)
        return NULL;
    if (kernel < 0)
        kernel = kernel_available(KERNEL_AVX512) ? KERNEL_AVX512 : kernel_available(KERNEL_AVX2) ? KERNEL_AVX2 : KERNEL_ROW;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ForestType);
    if (PyModule_AddObject(m, "Forest", (PyObject *)&ForestType) < 0) {
        Py_DECREF(&ForestType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ExplainerType);
    if (PyModule_AddObject(m, "Explainer", (PyObject *)&ExplainerType) < 0) {
        Py_DECREF(&ExplainerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
