/* The task factory of pyprof_http.loops, in C: every asyncio task a served loop creates passes
 * through it, so its cost is paid per task (the server's task per request included).
 *
 * It keeps exactly what the pure-Python factory in loops.py keeps, in the same shape, so the
 * readers (dumps, /goroutineleak, leak checks) cannot tell the two apart:
 *
 *   records[id(task)] = [weakref(task), next(counter),
 *                        (created_at, (code, lasti, ...), parent_record | None,
 *                         parent_name | None, request, hops)]
 *
 * and sweeps dead records through the owner's ``_sweep()`` when the table reaches its
 * ``_sweep_at``. Written in C because the Python factory cost ~12,000 instructions per task
 * (a Python call from C, a method call, the frame walk, a weak reference, a list, a tuple);
 * this costs a few hundred. Only public C API is used. Why each field exists is said in
 * loops.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#endif

#define MAX_FRAMES 5

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *previous;    /* the factory ours was chained in front of, or None */
    PyObject *owner;       /* the TaskOrigins: _sweep_at, _sweep() */
    PyObject *records;     /* its dict id(task) -> record */
    PyObject *counter;     /* its itertools.count */
    PyObject *current;     /* asyncio's running task per loop */
    PyObject *request_var; /* CURRENT_REQUEST */
    PyObject *request_of;  /* request_of(task): a parent's request read from its context */
    PyObject *task_type;   /* asyncio.Task */
    long max_hops;
} Factory;

static PyObject *s_get_name, *s_hops, *s_sweep_at, *s_sweep, *s_loop;

static int lasti_of(PyFrameObject *f) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(f);
#else
    return f->f_lasti < 0 ? -1 : f->f_lasti * (int)sizeof(_Py_CODEUNIT);
#endif
}

/* (code, lasti, ...) of the creating frame and up to MAX_FRAMES - 1 frames outside it. */
static PyObject *raw_frames(void) {
    PyObject *items[2 * MAX_FRAMES];
    Py_ssize_t n = 0;
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(f);
    while (f != NULL && n < 2 * MAX_FRAMES) {
        PyObject *lasti = PyLong_FromLong(lasti_of(f));
        if (lasti == NULL) {
            Py_DECREF(f);
            goto error;
        }
        items[n++] = (PyObject *)PyFrame_GetCode(f); /* new reference */
        items[n++] = lasti;
        PyFrameObject *back = PyFrame_GetBack(f); /* new reference or NULL */
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) goto error;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(tuple, i, items[i]); /* steals */
    return tuple;
error:
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(items[i]);
    return NULL;
}

static PyObject *monotonic(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

/* The live object a weak reference points to (new reference), or NULL (no error) if dead. */
static PyObject *deref(PyObject *ref) {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref);
    if (obj == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (obj == Py_None) return NULL;
    Py_INCREF(obj);
    return obj;
#endif
}

/* parent record (or None), parent name (or None) and hops, for a task made while parent_task
 * ran; all three new references. */
static int chain(Factory *self, PyObject *parent_task, PyObject **parent, PyObject **name,
                 long *hops) {
    *parent = Py_NewRef(Py_None);
    *name = PyObject_CallMethodNoArgs(parent_task, s_get_name);
    *hops = 0;
    if (*name == NULL) return -1;
    PyObject *key = PyLong_FromVoidPtr(parent_task);
    if (key == NULL) return -1;
    PyObject *record = PyDict_GetItemWithError(self->records, key); /* borrowed */
    Py_DECREF(key);
    if (record == NULL) return PyErr_Occurred() ? -1 : 0; /* made before the factory */
    if (!PyList_Check(record) || PyList_GET_SIZE(record) != 3) return 0;
    PyObject *origin = PyList_GET_ITEM(record, 2);
    if (origin == Py_None) return 0;
    PyObject *alive = deref(PyList_GET_ITEM(record, 0));
    Py_XDECREF(alive);
    if (alive != parent_task) return 0; /* a record of another task at a reused address */
    long parent_hops;
    if (PyTuple_Check(origin) && PyTuple_GET_SIZE(origin) == 6) {
        parent_hops = PyLong_AsLong(PyTuple_GET_ITEM(origin, 5));
    } else { /* already turned into a TaskOrigin by a reader */
        PyObject *value = PyObject_GetAttr(origin, s_hops);
        if (value == NULL) return -1;
        parent_hops = PyLong_AsLong(value);
        Py_DECREF(value);
    }
    if (parent_hops == -1 && PyErr_Occurred()) return -1;
    if (parent_hops + 1 > self->max_hops) return 0; /* keep the chain short */
    *hops = parent_hops + 1;
    Py_SETREF(*parent, Py_NewRef(record));
    return 0;
}

static int store(Factory *self, PyObject *task, PyObject *raw) {
    PyObject *ref = PyWeakref_NewRef(task, NULL);
    if (ref == NULL) return -1;
    PyObject *number = PyIter_Next(self->counter);
    if (number == NULL) {
        Py_DECREF(ref);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "task counter ended");
        return -1;
    }
    PyObject *record = PyList_New(3);
    if (record == NULL) {
        Py_DECREF(ref);
        Py_DECREF(number);
        return -1;
    }
    PyList_SET_ITEM(record, 0, ref);
    PyList_SET_ITEM(record, 1, number);
    PyList_SET_ITEM(record, 2, Py_NewRef(raw));
    PyObject *key = PyLong_FromVoidPtr(task);
    int failed = key == NULL || PyDict_SetItem(self->records, key, record) < 0;
    Py_XDECREF(key);
    Py_DECREF(record);
    if (failed) return -1;
    PyObject *sweep_at = PyObject_GetAttr(self->owner, s_sweep_at);
    if (sweep_at == NULL) return -1;
    Py_ssize_t limit = PyLong_AsSsize_t(sweep_at);
    Py_DECREF(sweep_at);
    if (limit == -1 && PyErr_Occurred()) return -1;
    if (PyDict_GET_SIZE(self->records) >= limit) {
        PyObject *done = PyObject_CallMethodNoArgs(self->owner, s_sweep);
        if (done == NULL) return -1;
        Py_DECREF(done);
    }
    return 0;
}

static int record(Factory *self, PyObject *task, PyObject *loop) {
    PyObject *frames = raw_frames();
    if (frames == NULL) return -1;
    PyObject *parent = NULL, *name = NULL, *request = NULL, *created = NULL, *raw = NULL;
    long hops = 0;
    int result = -1;
    PyObject *parent_task = PyDict_GetItemWithError(self->current, loop); /* borrowed */
    if (parent_task == NULL && PyErr_Occurred()) goto done;
    Py_XINCREF(parent_task);
    if (parent_task != NULL && chain(self, parent_task, &parent, &name, &hops) < 0) goto done;
    if (PyContextVar_Get(self->request_var, Py_None, &request) < 0) goto done;
    if (request == Py_None && parent_task != NULL) { /* made in a context of its own */
        Py_SETREF(request, PyObject_CallOneArg(self->request_of, parent_task));
        if (request == NULL) goto done;
    }
    created = monotonic();
    if (created == NULL) goto done;
    PyObject *hops_number = PyLong_FromLong(hops);
    if (hops_number == NULL) goto done;
    raw = PyTuple_Pack(6, created, frames, parent ? parent : Py_None, name ? name : Py_None,
                       request, hops_number);
    Py_DECREF(hops_number);
    if (raw == NULL) goto done;
    result = store(self, task, raw);
done:
    Py_XDECREF(parent_task);
    Py_DECREF(frames);
    Py_XDECREF(parent);
    Py_XDECREF(name);
    Py_XDECREF(request);
    Py_XDECREF(created);
    Py_XDECREF(raw);
    return result;
}

/* factory(loop, coro, /, **kwargs) */
static PyObject *factory_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    Factory *self = (Factory *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "task factory takes 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *loop = args[0];
    PyObject *task;
    if (self->previous != Py_None) {
        task = PyObject_Vectorcall(self->previous, args, nargsf, kwnames);
    } else { /* asyncio.Task(coro, loop=loop, **kwargs) */
        Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
        PyObject *stack[16];
        if (nkw > 14) {
            PyErr_SetString(PyExc_TypeError, "too many keyword arguments for a task");
            return NULL;
        }
        PyObject *names = PyTuple_New(nkw + 1);
        if (names == NULL) return NULL;
        stack[0] = args[1];
        stack[1] = loop;
        PyTuple_SET_ITEM(names, 0, Py_NewRef(s_loop));
        for (Py_ssize_t i = 0; i < nkw; i++) {
            stack[2 + i] = args[2 + i];
            PyTuple_SET_ITEM(names, i + 1, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
        }
        task = PyObject_Vectorcall(self->task_type, stack, 1, names);
        Py_DECREF(names);
    }
    if (task == NULL) return NULL;
    if (record(self, task, loop) < 0) {
        Py_DECREF(task);
        return NULL;
    }
    return task;
}

static PyObject *factory_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"previous", "owner", "records", "counter", "current_tasks",
                            "request_var", "request_of", "task_type", "max_hops", NULL};
    PyObject *previous, *owner, *records, *counter, *current, *request_var, *request_of,
        *task_type;
    long max_hops;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!OO!OOOl:TaskFactory", names, &previous,
                                     &owner, &PyDict_Type, &records, &counter, &PyDict_Type,
                                     &current, &request_var, &request_of, &task_type,
                                     &max_hops))
        return NULL;
    if (!PyContextVar_CheckExact(request_var)) {
        PyErr_SetString(PyExc_TypeError, "request_var must be a ContextVar");
        return NULL;
    }
    Factory *self = (Factory *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = factory_vectorcall;
    self->previous = Py_NewRef(previous);
    self->owner = Py_NewRef(owner);
    self->records = Py_NewRef(records);
    self->counter = Py_NewRef(counter);
    self->current = Py_NewRef(current);
    self->request_var = Py_NewRef(request_var);
    self->request_of = Py_NewRef(request_of);
    self->task_type = Py_NewRef(task_type);
    self->max_hops = max_hops;
    return (PyObject *)self;
}

static int factory_traverse(Factory *self, visitproc visit, void *arg) {
    Py_VISIT(self->previous);
    Py_VISIT(self->owner);
    Py_VISIT(self->records);
    Py_VISIT(self->counter);
    Py_VISIT(self->current);
    Py_VISIT(self->request_var);
    Py_VISIT(self->request_of);
    Py_VISIT(self->task_type);
    return 0;
}

static int factory_clear(Factory *self) {
    Py_CLEAR(self->previous);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->records);
    Py_CLEAR(self->counter);
    Py_CLEAR(self->current);
    Py_CLEAR(self->request_var);
    Py_CLEAR(self->request_of);
    Py_CLEAR(self->task_type);
    return 0;
}

static void factory_dealloc(Factory *self) {
    PyObject_GC_UnTrack(self);
    factory_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *factory_is_ours(PyObject *self, void *closure) {
    (void)self;
    (void)closure;
    Py_RETURN_TRUE;
}

static PyObject *factory_previous(Factory *self, void *closure) {
    (void)closure;
    return Py_NewRef(self->previous ? self->previous : Py_None);
}

static PyGetSetDef factory_getset[] = {
    {"_pyprof_http", factory_is_ours, NULL, "Marks pyprof_http's factory (chained once).", NULL},
    {"_pyprof_previous", (getter)factory_previous, NULL,
     "The factory to put back when ours is taken off.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FactoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyprof_http._taskfactory.TaskFactory",
    .tp_basicsize = sizeof(Factory),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "pyprof_http's task factory: records each task's creation (see loops.py).",
    .tp_new = factory_new,
    .tp_traverse = (traverseproc)factory_traverse,
    .tp_clear = (inquiry)factory_clear,
    .tp_dealloc = (destructor)factory_dealloc,
    .tp_vectorcall_offset = offsetof(Factory, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getset = factory_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_taskfactory",
    "pyprof_http's task factory in C (the per-task cost of creation records).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__taskfactory(void) {
    if (PyType_Ready(&FactoryType) < 0) return NULL;
    s_get_name = PyUnicode_InternFromString("get_name");
    s_hops = PyUnicode_InternFromString("hops");
    s_sweep_at = PyUnicode_InternFromString("_sweep_at");
    s_sweep = PyUnicode_InternFromString("_sweep");
    s_loop = PyUnicode_InternFromString("loop");
    if (!s_get_name || !s_hops || !s_sweep_at || !s_sweep || !s_loop) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&FactoryType);
    if (PyModule_AddObject(m, "TaskFactory", (PyObject *)&FactoryType) < 0) {
        Py_DECREF(&FactoryType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
