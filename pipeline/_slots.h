/*
 * pipeline/_slots.h: attribute reads and writes of slotted objects from C, shared by the pipeline's C
 * extensions (pipeline/_cforest.c, pipeline/_cfeatures.c). Header-only: each extension that includes it
 * gets its own static cache, so the extensions stay independent shared objects.
 *
 * Needs <Python.h>, <stdint.h> and <structmember.h> included before it.
 */
#ifndef RINGFENCE_SLOTS_H
#define RINGFENCE_SLOTS_H

#ifndef RINGFENCE_SLOTS_SMALL_LL_ONLY
/* Attribute reads and writes of slotted objects (ProcessNode, the msgspec events) without the type
   lookup: a small cache (type, name) -> the slot's offset, filled from the type's own member
   descriptor, used only for types with the default getattr/setattr. A class's plain value read through
   an instance that has no __dict__ (a msgspec payload's tag, `kind`) is remembered too, and used only
   while the type's version tag is the one it was read under (any change to the class or its bases moves
   the tag on, as CPython's own attribute cache relies on). Anything else (a property, a __dict__
   attribute, an unset slot) goes through PyObject_GetAttr/SetAttr. */
#define CACHE_SIZE 512  /* a few dozen (type, name) pairs are in use: open addressing stays sparse */
#define CACHE_PROBES 4
#define CLASS_VALUE (-2)  /* SlotCache.offset of a class's plain value: `value`, while the tag is `version` */
typedef struct {
    PyTypeObject *type;  /* strong reference while cached */
    PyObject *name;      /* interned, immortal for the module's life */
    Py_ssize_t offset;   /* >= 0: a plain object slot of this type; CLASS_VALUE; -1: neither */
    int writable;
    PyObject *value;     /* CLASS_VALUE: borrowed from the class's dict, read only under `version` */
    unsigned int version;
} SlotCache;
static SlotCache slot_cache[CACHE_SIZE];

/* The slot of `name` in objects of `tp`, as a copy: releasing the type an entry replaces can run code
   (finalisers of its attributes) that calls back in and overwrites that entry, so the caller never
   holds a pointer into the cache. A member descriptor is used only when `tp` is its own type or a
   subtype: a class can carry another class's descriptor as an attribute (`x = Other.__dict__["y"]`),
   which Python refuses with a TypeError and whose offset is not inside this object. */
static inline SlotCache slot_of(PyTypeObject *tp, PyObject *name) {
    const uint64_t hash = ((uint64_t)(uintptr_t)tp ^ ((uint64_t)(uintptr_t)name << 1)) * 0x9E3779B97F4A7C15ull;
    const size_t first = (size_t)(hash >> 55);  /* 9 bits: CACHE_SIZE */
    SlotCache *c = NULL;
    for (size_t probe = 0; probe < CACHE_PROBES; probe++) {
        SlotCache *at = &slot_cache[(first + probe) % CACHE_SIZE];
        if (at->type == tp && at->name == name)
            return *at;
        if (c == NULL && at->type == NULL)
            c = at;
    }
    if (c == NULL)
        c = &slot_cache[first];  /* all probes taken: replace the first */
    PyTypeObject *old = c->type;
    c->type = NULL, c->name = name, c->offset = -1, c->writable = 0, c->value = NULL, c->version = 0;
    PyObject *descr = tp->tp_getattro == PyObject_GenericGetAttr ? _PyType_Lookup(tp, name) : NULL;
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&  /* borrowed */
        PyType_IsSubtype(tp, PyDescr_TYPE(descr))) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && member->offset > 0) {
            c->offset = member->offset;
            c->writable = !(member->flags & READONLY) && tp->tp_setattro == PyObject_GenericSetAttr;
        }
    } else if (descr != NULL && Py_TYPE(descr)->tp_descr_get == NULL && Py_TYPE(descr)->tp_descr_set == NULL &&
               tp->tp_dictoffset == 0 && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        /* no descriptor and no instance dict to shadow it: the generic getattr returns it as it is */
        c->offset = CLASS_VALUE, c->value = descr, c->version = tp->tp_version_tag;
    }
    Py_INCREF(tp);
    c->type = tp;
    SlotCache found = *c;
    Py_XDECREF(old);  /* last: freeing a type may run code that looks up (and refills) this cache */
    return found;
}

/* obj.name as a new reference (NULL with an exception set on failure). */
static inline PyObject *get_attr(PyObject *obj, PyObject *name) {
    const SlotCache c = slot_of(Py_TYPE(obj), name);
    if (c.offset >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + c.offset);
        if (value != NULL) {
            Py_INCREF(value);
            return value;
        }
    } else if (c.offset == CLASS_VALUE && Py_TYPE(obj)->tp_version_tag == c.version &&
               (Py_TYPE(obj)->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        return Py_NewRef(c.value);  /* the class unchanged since: its dict still holds this value */
    }
    return PyObject_GetAttr(obj, name);
}

static inline int set_attr(PyObject *obj, PyObject *name, PyObject *value) {
    const SlotCache c = slot_of(Py_TYPE(obj), name);
    if (c.offset < 0 || !c.writable)
        return PyObject_SetAttr(obj, name, value);
    PyObject **slot = (PyObject **)((char *)obj + c.offset);
    Py_INCREF(value);
    Py_XSETREF(*slot, value);
    return 0;
}

#endif /* RINGFENCE_SLOTS_SMALL_LL_ONLY */

/* An exact int of at most two 30-bit digits (times in ms, seqs, counts, evidence records) read from its
   digits as `PyLong_AsLongLongAndOverflow` reads it, minus the call and its checks; 0 for anything else,
   which the caller then reads the general way. CPython 3.11's int layout (3.12 changed it: there this
   always answers 0). Shared by `_cforest`, `_cfeatures` and `_cstate` (which defines
   RINGFENCE_SLOTS_SMALL_LL_ONLY: it reads no attributes, so it takes only this). */
static inline int small_ll(PyObject *value, long long *out) {
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    if (!PyLong_CheckExact(value))
        return 0;
    const digit *d = ((PyLongObject *)value)->ob_digit;
    switch (Py_SIZE(value)) {
    case 0: *out = 0; return 1;
    case 1: *out = (long long)d[0]; return 1;
    case -1: *out = -(long long)d[0]; return 1;
    case 2: *out = (long long)d[1] << PyLong_SHIFT | d[0]; return 1;
    case -2: *out = -((long long)d[1] << PyLong_SHIFT | d[0]); return 1;
    default: return 0;
    }
#else
    (void)value, (void)out;
    return 0;
#endif
}

#endif /* RINGFENCE_SLOTS_H */
