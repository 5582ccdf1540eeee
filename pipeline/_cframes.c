/* Building Audio frames without the Python-level __init__.
 *
 * Audio is a frozen, slotted dataclass: its generated __init__ sets five slots through
 * object.__setattr__, about 0.4 us a frame. make_audio(data, encoding, rate, channels, pts)
 * allocates the same object and stores the five references straight into its slots (the
 * offsets its member descriptors name), about 0.05 us. bind(cls, names) is called once, at
 * import, with the class and its slot names in argument order; it checks that each name is a
 * plain object slot of that class.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

#define N_FIELDS 5

static PyTypeObject *audio_type = NULL;
static Py_ssize_t offsets[N_FIELDS];

static PyObject *
bind(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!:bind", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    if (PyTuple_GET_SIZE(names) != N_FIELDS) {
        PyErr_Format(PyExc_ValueError, "bind: %d slot names expected, got %zd", N_FIELDS,
                     PyTuple_GET_SIZE(names));
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t found[N_FIELDS];
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *descr = PyDict_GetItemWithError(type->tp_dict, name);
        if (descr == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "bind: %R has no slot %R", cls, name);
            return NULL;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "bind: %R.%U is not a slot", cls, name);
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != Py_T_OBJECT_EX || member->offset <= 0 ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "bind: %R.%U is not an object slot", cls, name);
            return NULL;
        }
        found[i] = member->offset;
    }
    for (Py_ssize_t i = 0; i < N_FIELDS; i++)
        offsets[i] = found[i];
    Py_INCREF(cls);
    Py_XSETREF(audio_type, type);
    Py_RETURN_NONE;
}

static PyObject *
make_audio(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != N_FIELDS) {
        PyErr_Format(PyExc_TypeError,
                     "make_audio() takes 5 arguments (data, encoding, rate, channels, pts), "
                     "got %zd", nargs);
        return NULL;
    }
    if (audio_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_audio: bind() was not called");
        return NULL;
    }
    PyObject *obj = audio_type->tp_alloc(audio_type, 0);
    if (obj == NULL)
        return NULL;
    char *base = (char *)obj;
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) {
        Py_INCREF(args[i]);
        *(PyObject **)(base + offsets[i]) = args[i];
    }
    return obj;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(cls, names): the class make_audio builds, its slots."},
    {"make_audio", (PyCFunction)(void (*)(void))make_audio, METH_FASTCALL,
     "make_audio(data, encoding, rate, channels, pts) -> Audio"},
    {NULL, NULL, 0, NULL},
};

static int
module_clear(PyObject *m)
{
    (void)m;
    Py_CLEAR(audio_type);
    return 0;
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cframes", "Audio frames built without their Python __init__.", -1,
    methods, NULL, NULL, module_clear, NULL,
};

PyMODINIT_FUNC
PyInit__cframes(void)
{
    return PyModule_Create(&module);
}
