/* The fast path of sshvfs.execlist.parser: GNU find -printf records (see
 * sshvfs.execlist.commands.FIND_FORMAT) turned into (path, Entry) pairs in one pass over the bytes,
 * with no intermediate bytes object per field.
 *
 * parse(data, start, resolution, Entry, Attrs) -> (pairs, end) | None
 *
 * Parses the complete records of data[start:] and returns them with the offset just after
 * the last one. It stops early, without error, at a record that is incomplete (no NUL yet)
 * or whose path is empty (the framed end record). Anything else unusual -- a value this
 * code does not convert exactly (a time or number too large for 64 bits, a %T@ without
 * find 4.x's 10 fraction digits) as much as plain garbage -- returns None: the caller then
 * parses the same bytes with the Python parser, which is exact for every input and raises
 * the precise error. So this file only has to be right for what it accepts; the unit
 * tests compare the two parsers on the same inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NFIELDS 13
#define NS_PER_S 1000000000LL
/* the largest tv_sec whose nanoseconds (plus a fraction) still fit an int64 */
#define MAX_SECONDS 9223372035LL

enum {
    F_PATH, F_KIND, F_MODE, F_SIZE, F_MTIME, F_ATIME, F_CTIME, F_UID, F_GID, F_NLINK, F_INO,
    F_TARGET, F_MARKER
};

typedef struct {
    const char *p;
    Py_ssize_t n;
} field_t;

/* 1 to longest digits of base (8 or 10); 19 decimal digits always fit uint64. 0 on
 * anything else: no sign, no space, no underscore, no non-ASCII digit */
static int
parse_digits(field_t f, unsigned base, Py_ssize_t longest, unsigned long long *out)
{
    if (f.n < 1 || f.n > longest)
        return 0;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < f.n; i++) {
        unsigned c = (unsigned char)f.p[i] - (unsigned)'0';
        if (c >= base)
            return 0;
        v = v * base + c;
    }
    *out = v;
    return 1;
}

/* find 4.x's %T@: -?DIGITS "." 10 DIGITS, tv_sec then tv_nsec with one trailing digit.
 * The fraction is added to the signed seconds (as the Python parser does), digits past the
 * nanosecond are dropped, and the result is floored to a multiple of resolution. */
static int
parse_time(field_t f, long long resolution, long long *out)
{
    const char *p = f.p, *end = f.p + f.n;
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    const char *dot = memchr(p, '.', (size_t)(end - p));
    if (dot == NULL || dot == p || dot - p > 10 || end - dot != 11)
        return 0;
    long long seconds = 0;
    for (; p < dot; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        seconds = seconds * 10 + (*p - '0');
    }
    if (seconds > MAX_SECONDS)
        return 0;
    long long fraction = 0;
    for (p = dot + 1; p < end; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        if (p < end - 1)
            fraction = fraction * 10 + (*p - '0');
    }
    long long ns = (negative ? -seconds : seconds) * NS_PER_S + fraction;
    long long rest = ns % resolution;
    if (rest < 0)
        rest += resolution; /* floor, as Python's % and tv_sec do */
    *out = ns - rest;
    return 1;
}

static int
is_dot_part(const char *p, Py_ssize_t n)
{
    return (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.');
}

/* a clean relative path; sets *name_at to the offset of its last component */
static int
check_path(field_t f, Py_ssize_t *name_at)
{
    Py_ssize_t part = 0;
    for (Py_ssize_t i = 0; i <= f.n; i++) {
        if (i == f.n || f.p[i] == '/') {
            if (i == part || is_dot_part(f.p + part, i - part))
                return 0;
            if (i < f.n)
                part = i + 1;
        }
    }
    *name_at = part;
    return 1;
}

static long
type_bits(field_t f)
{
    if (f.n != 1)
        return -1;
    switch (f.p[0]) {
    case 'f': return 0100000; /* S_IFREG */
    case 'd': return 0040000; /* S_IFDIR */
    case 'l': return 0120000; /* S_IFLNK */
    case 'p': return 0010000; /* S_IFIFO */
    case 's': return 0140000; /* S_IFSOCK */
    case 'c': return 0020000; /* S_IFCHR */
    case 'b': return 0060000; /* S_IFBLK */
    case 'D': /* Solaris door */
    case 'U': return 0;       /* unknown */
    default: return -1;
    }
}

/* Consecutive records mostly repeat their mode, owner, link count and size: one object
 * for a run of equal values (a listing of 100,000 files then holds a handful of ints). */
typedef struct {
    unsigned long long value;
    PyObject *obj;
} last_t;

static PyObject *
unsigned_object(last_t *last, unsigned long long value)
{
    if (last->obj == NULL || last->value != value) {
        PyObject *obj = PyLong_FromUnsignedLongLong(value);
        if (obj == NULL)
            return NULL;
        Py_XDECREF(last->obj);
        last->obj = obj;
        last->value = value;
    }
    Py_INCREF(last->obj);
    return last->obj;
}

/* an instance of a NamedTuple class, from new references (stolen, also on failure) */
static PyObject *
named_tuple(PyTypeObject *type, PyObject **items, Py_ssize_t n)
{
    PyObject *obj = type->tp_alloc(type, n);
    if (obj == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(obj, i, items[i]);
    return obj;
}

static int
is_plain_tuple_subclass(PyObject *type)
{
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type))
        return 0;
    PyTypeObject *t = (PyTypeObject *)type;
    return t->tp_basicsize == PyTuple_Type.tp_basicsize
        && t->tp_itemsize == PyTuple_Type.tp_itemsize;
}

/* Attrs: mode, size, uid, gid, nlink, mtime_ns, atime_ns, ctime_ns, ino */
#define ATTRS_N 9

/* a new reference to have (whose value is had), or a new int of value; NULL on error */
static PyObject *
same_or_new(PyObject *have, long long had, long long value)
{
    if (have != NULL && had == value) {
        Py_INCREF(have);
        return have;
    }
    return PyLong_FromLongLong(value);
}

/* returns 1 (pair appended), 0 (unusual: give up), -1 (Python error set) */
static int
convert(field_t *f, long long resolution, PyTypeObject *entry_type, PyTypeObject *attrs_type,
        last_t *lasts, PyObject *out)
{
    long bits = type_bits(f[F_KIND]);
    unsigned long long perm, size, uid, gid, nlink, ino; /* perm: 4 octal digits, <= 0o7777 */
    long long mtime, atime, ctime;
    Py_ssize_t name_at;
    if (bits < 0 || !parse_digits(f[F_MODE], 8, 4, &perm) || !parse_digits(f[F_SIZE], 10, 19, &size)
        || !parse_digits(f[F_UID], 10, 19, &uid) || !parse_digits(f[F_GID], 10, 19, &gid)
        || !parse_digits(f[F_NLINK], 10, 19, &nlink) || !parse_time(f[F_MTIME], resolution, &mtime)
        || !parse_time(f[F_ATIME], resolution, &atime) || !parse_time(f[F_CTIME], resolution, &ctime)
        || !parse_digits(f[F_INO], 10, 19, &ino) || !check_path(f[F_PATH], &name_at))
        return 0;
    if (f[F_MARKER].n != 1 || f[F_MARKER].p[0] != '/')
        return 0;
    if (f[F_TARGET].n && f[F_KIND].p[0] != 'l')
        return 0;

    PyObject *attrs_items[ATTRS_N] = {
        unsigned_object(&lasts[0], (unsigned long long)bits | perm),
        unsigned_object(&lasts[1], size),
        unsigned_object(&lasts[2], uid),
        unsigned_object(&lasts[3], gid),
        unsigned_object(&lasts[4], nlink),
        PyLong_FromLongLong(mtime),
        NULL,
        NULL,
        PyLong_FromUnsignedLongLong(ino),
    };
    /* one object for equal times (a file written once has all three the same) */
    attrs_items[6] = same_or_new(attrs_items[5], mtime, atime);
    attrs_items[7] = ctime == atime ? same_or_new(attrs_items[6], atime, ctime)
                                    : same_or_new(attrs_items[5], mtime, ctime);
    PyObject *path = PyBytes_FromStringAndSize(f[F_PATH].p, f[F_PATH].n);
    PyObject *name = NULL;
    if (path != NULL) {
        if (name_at == 0) {
            Py_INCREF(path);
            name = path;
        }
        else {
            name = PyBytes_FromStringAndSize(f[F_PATH].p + name_at, f[F_PATH].n - name_at);
        }
    }
    PyObject *target;
    if (f[F_TARGET].n) {
        target = PyBytes_FromStringAndSize(f[F_TARGET].p, f[F_TARGET].n);
    }
    else {
        Py_INCREF(Py_None);
        target = Py_None;
    }
    int failed = path == NULL || name == NULL || target == NULL;
    for (int i = 0; i < ATTRS_N; i++)
        failed |= attrs_items[i] == NULL;
    if (failed) {
        for (int i = 0; i < ATTRS_N; i++)
            Py_XDECREF(attrs_items[i]);
        Py_XDECREF(path);
        Py_XDECREF(name);
        Py_XDECREF(target);
        return -1;
    }
    PyObject *attrs = named_tuple(attrs_type, attrs_items, ATTRS_N);
    if (attrs == NULL) {
        Py_DECREF(path);
        Py_DECREF(name);
        Py_DECREF(target);
        return -1;
    }
    PyObject *entry_items[3] = {name, attrs, target};
    PyObject *entry = named_tuple(entry_type, entry_items, 3);
    if (entry == NULL) {
        Py_DECREF(path);
        return -1;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(path);
        Py_DECREF(entry);
        return -1;
    }
    PyTuple_SET_ITEM(pair, 0, path);
    PyTuple_SET_ITEM(pair, 1, entry);
    int appended = PyList_Append(out, pair);
    Py_DECREF(pair);
    return appended < 0 ? -1 : 1;
}

static PyObject *
parse(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    Py_ssize_t start;
    long long resolution;
    PyObject *entry_type, *attrs_type;
    if (!PyArg_ParseTuple(args, "y*nLOO:parse", &data, &start, &resolution, &entry_type,
                          &attrs_type))
        return NULL;
    PyObject *result = NULL, *out = NULL;
    last_t lasts[5] = {{0, NULL}};
    if (resolution < 1 || start < 0 || start > data.len) {
        PyErr_SetString(PyExc_ValueError, "parse: bad start or resolution");
        goto done;
    }
    if (!is_plain_tuple_subclass(entry_type) || !is_plain_tuple_subclass(attrs_type)) {
        PyErr_SetString(PyExc_TypeError, "parse: Entry and Attrs must be NamedTuple classes");
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    const char *buf = data.buf, *end = buf + data.len, *pos = buf + start;
    for (;;) {
        field_t f[NFIELDS];
        const char *p = pos;
        int i;
        for (i = 0; i < NFIELDS; i++) {
            const char *nul = memchr(p, 0, (size_t)(end - p));
            if (nul == NULL)
                break;
            f[i].p = p;
            f[i].n = nul - p;
            p = nul + 1;
        }
        if (i < NFIELDS || f[F_PATH].n == 0)
            break; /* incomplete, or the end record: the caller's business */
        int done_one = convert(f, resolution, (PyTypeObject *)entry_type,
                               (PyTypeObject *)attrs_type, lasts, out);
        if (done_one < 0)
            goto done;
        if (done_one == 0) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto done;
        }
        pos = p;
    }
    result = Py_BuildValue("(On)", out, (Py_ssize_t)(pos - buf));
done:
    for (int i = 0; i < 5; i++)
        Py_XDECREF(lasts[i].obj);
    Py_XDECREF(out);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS,
     "parse(data, start, resolution, Entry, Attrs) -> (pairs, end) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_findrecords", "C fast path of sshvfs.execlist.parser", -1, methods,
};

PyMODINIT_FUNC
PyInit__findrecords(void)
{
    return PyModule_Create(&module);
}
