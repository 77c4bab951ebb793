/* The common HTTP request through the lifecycle middleware, in C: its id, its labels, the echo.
 *
 * Every request of an installed app pays for this, profiled or not, so it is written in C: in
 * Python the same steps cost ~40,000 instructions a request (the header scan, a Request object
 * and its context variable, a closure and two calls for the echo), here a few thousand. The
 * middleware (lifecycle.py) keeps its own coroutine and takes this path only when nothing
 * unusual is asked: no ``X-Pprof-Profile`` header, no /trace window, headers as ASGI says
 * (a list or tuple of pairs of bytes). Anything else, and every server where this could not be
 * built, goes through the Python path in lifecycle.py / request_cycle.py, which does the same
 * (the tests run both).
 *
 *   cycles = Cycles(Request, CURRENT_REQUEST, by_task or None, current_tasks, id_prefix,
 *                   id_counter)
 *   cycle = cycles.begin(scope, loop, send)   # None: take the Python path
 *   await app(scope, receive, cycle)          # cycle is the send that echoes the id
 *   duration_ns = cycle.end()                 # request_labels.leave(), and how long it took
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MAX_REQUEST_ID 128
static const char ID_HEADER[] = "x-request-id";       /* 12 */
static const char PROFILE_HEADER[] = "x-pprof-profile"; /* 15 */

static PyObject *s_headers, *s_path, *s_root_path, *s_type, *s_status, *s_start_type;
static PyObject *s_route_attr_key;
static PyObject *s_empty, *s_id_header_name;
static unsigned char g_id_chars[256];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic_ns()'s clock */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Request's __slots__ written and read where Python keeps them (the member descriptors'
 * offsets, read once per Cycles): through setattr each cost ~190 instructions, 8 a request.
 * An offset of -1 (a Request whose attribute is not a plain slot) takes the attribute path. */
enum { SLOT_SCOPE, SLOT_LIVE, SLOT_REQUEST_ID, SLOT_ROUTE, SLOT_TOKEN, SLOT_KEY, SLOTS };
static PyObject *s_slot_names[SLOTS];

static int set_slot(PyObject *obj, const Py_ssize_t *offsets, int which, PyObject *value) {
    Py_ssize_t offset = offsets[which];
    if (offset < 0) return PyObject_SetAttr(obj, s_slot_names[which], value);
    PyObject **slot = (PyObject **)((char *)obj + offset);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

static PyObject *get_slot(PyObject *obj, const Py_ssize_t *offsets, int which) {
    Py_ssize_t offset = offsets[which];
    if (offset < 0) return PyObject_GetAttr(obj, s_slot_names[which]);
    PyObject *value = *(PyObject **)((char *)obj + offset);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, s_slot_names[which]);
        return NULL;
    }
    return Py_NewRef(value);
}

static void find_slots(PyObject *type, Py_ssize_t *offsets) {
    for (int i = 0; i < SLOTS; i++) {
        offsets[i] = -1;
        PyObject *descr = PyObject_GetAttr(type, s_slot_names[i]);
        if (descr == NULL) {
            PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX && !(member->flags & READONLY))
                offsets[i] = member->offset;
        }
        Py_DECREF(descr);
    }
}

/* What one middleware's requests share: made once, read by each request's Cycle. */
typedef struct {
    PyObject_HEAD
    PyObject *request_type, *request_var, *by_task, *current_tasks, *id_prefix, *id_counter;
    Py_ssize_t offsets[SLOTS];
} Cycles;

/* --- Cycle: one request, and the send that echoes its id ------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *send;       /* the server's send */
    PyObject *request;    /* request_labels.Request */
    PyObject *request_id; /* str */
    PyObject *id_header;  /* bytes */
    PyObject *status;     /* the response's status once started, else None */
    PyObject *path, *root_path; /* as the request arrived (routing changes the scope) */
    Cycles *owner;         /* the context variable, the per-task map, the slot offsets */
    PyObject *key, *token; /* what end() undoes */
    long long start;
    int ended;
} Cycle;

static PyTypeObject CycleType;

/* A copy of ``message`` whose headers end with the request id, unless the app set its own. */
static PyObject *with_id(Cycle *self, PyObject *message) {
    PyObject *status = PyDict_GetItemWithError(message, s_status);
    if (status == NULL && PyErr_Occurred()) return NULL;
    Py_XSETREF(self->status, Py_NewRef(status != NULL ? status : Py_None));
    PyObject *given = PyDict_GetItemWithError(message, s_headers);
    if (given == NULL && PyErr_Occurred()) return NULL;
    PyObject *headers = given != NULL ? PySequence_List(given) : PyList_New(0); /* a copy */
    if (headers == NULL) return NULL;
    int found = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers) && !found; i++) {
        PyObject *pair = PySequence_Fast(PyList_GET_ITEM(headers, i), "header must be a pair");
        if (pair == NULL) goto error;
        if (PySequence_Fast_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_ValueError, "a response header must be a (name, value) pair");
            goto error;
        }
        PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
        found = PyBytes_Check(name) && PyBytes_GET_SIZE(name) == 12 &&
                memcmp(PyBytes_AS_STRING(name), ID_HEADER, 12) == 0;
        Py_DECREF(pair);
    }
    if (!found) {
        PyObject *pair = PyTuple_Pack(2, s_id_header_name, self->id_header);
        if (pair == NULL) goto error;
        int failed = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (failed) goto error;
    }
    PyObject *copy = PyDict_Copy(message);
    if (copy == NULL) goto error;
    if (PyDict_SetItem(copy, s_headers, headers) < 0) {
        Py_DECREF(copy);
        goto error;
    }
    Py_DECREF(headers);
    return copy;
error:
    Py_DECREF(headers);
    return NULL;
}

/* send(message): the server's send, called with the id added to the response's start; its
 * awaitable is returned as it is (no coroutine of our own per message). */
static PyObject *cycle_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    Cycle *self = (Cycle *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "send takes one message");
        return NULL;
    }
    PyObject *message = args[0];
    if (PyDict_Check(message)) {
        PyObject *type = PyDict_GetItemWithError(message, s_type);
        if (type == NULL && PyErr_Occurred()) return NULL;
        if (type != NULL && PyUnicode_Check(type)) {
            int start = PyUnicode_Compare(type, s_start_type);
            if (start == -1 && PyErr_Occurred()) return NULL;
            if (start == 0) {
                PyObject *copy = with_id(self, message);
                if (copy == NULL) return NULL;
                PyObject *result = PyObject_CallOneArg(self->send, copy);
                Py_DECREF(copy);
                return result;
            }
        }
    }
    return PyObject_CallOneArg(self->send, message);
}

/* request_labels.leave(): the request has ended. Returns its duration in nanoseconds. */
static PyObject *cycle_end(Cycle *self, PyObject *unused) {
    (void)unused;
    long long duration = now_ns() - self->start;
    if (self->ended) return PyLong_FromLongLong(duration);
    self->ended = 1;
    Cycles *owner = self->owner;
    if (set_slot(self->request, owner->offsets, SLOT_LIVE, Py_False) < 0) return NULL;
    if (self->token != NULL && PyContextVar_Reset(owner->request_var, self->token) < 0)
        return NULL;
    if (self->key != NULL && owner->by_task != Py_None) {
        if (PyDict_DelItem(owner->by_task, self->key) < 0) { /* pop(key, None) */
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) return NULL;
            PyErr_Clear();
        }
    }
    /* Something else still holds the ended request (a task it spawned copied its context, the
     * server's keep-alive timer did): let it keep only what it can still be asked. The scope
     * is the dict begin() was given (it takes no other). */
    if (Py_REFCNT(self->request) > 1) { /* request_labels._shrink(), its id being known */
        PyObject *scope = get_slot(self->request, owner->offsets, SLOT_SCOPE);
        if (scope == NULL) return NULL;
        if (!PyDict_Check(scope)) { /* replaced since by someone else: theirs to keep */
            Py_DECREF(scope);
            return PyLong_FromLongLong(duration);
        }
        PyObject *kept = NULL;
        PyObject *route = PyDict_GetItemWithError(scope, s_route_attr_key);
        PyObject *path = route != NULL || !PyErr_Occurred()
                             ? PyDict_GetItemWithError(scope, s_path) : NULL;
        if (!PyErr_Occurred() && (kept = PyDict_New()) != NULL &&
            (PyDict_SetItem(kept, s_route_attr_key, route != NULL ? route : Py_None) < 0 ||
             PyDict_SetItem(kept, s_path, path != NULL ? path : s_empty) < 0))
            Py_CLEAR(kept);
        Py_DECREF(scope);
        if (kept == NULL) return NULL;
        int failed = set_slot(self->request, owner->offsets, SLOT_SCOPE, kept) < 0;
        Py_DECREF(kept);
        if (failed) return NULL;
    }
    return PyLong_FromLongLong(duration);
}

static int cycle_traverse(Cycle *self, visitproc visit, void *arg) {
    Py_VISIT(self->send);
    Py_VISIT(self->request);
    Py_VISIT(self->request_id);
    Py_VISIT(self->id_header);
    Py_VISIT(self->status);
    Py_VISIT(self->path);
    Py_VISIT(self->root_path);
    Py_VISIT(self->owner);
    Py_VISIT(self->key);
    Py_VISIT(self->token);
    return 0;
}

static int cycle_clear(Cycle *self) {
    Py_CLEAR(self->send);
    Py_CLEAR(self->request);
    Py_CLEAR(self->request_id);
    Py_CLEAR(self->id_header);
    Py_CLEAR(self->status);
    Py_CLEAR(self->path);
    Py_CLEAR(self->root_path);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->key);
    Py_CLEAR(self->token);
    return 0;
}

static void cycle_dealloc(Cycle *self) {
    PyObject_GC_UnTrack(self);
    cycle_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef cycle_methods[] = {
    {"end", (PyCFunction)cycle_end, METH_NOARGS,
     "The request has ended: undo its labels; its duration in nanoseconds."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cycle_members[] = {
    {"request", T_OBJECT, offsetof(Cycle, request), READONLY, NULL},
    {"request_id", T_OBJECT, offsetof(Cycle, request_id), READONLY, NULL},
    {"status", T_OBJECT, offsetof(Cycle, status), READONLY, NULL},
    {"path", T_OBJECT, offsetof(Cycle, path), READONLY, NULL},
    {"root_path", T_OBJECT, offsetof(Cycle, root_path), READONLY, NULL},
    {"start", T_LONGLONG, offsetof(Cycle, start), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CycleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyprof_http._requestcycle.Cycle",
    .tp_basicsize = sizeof(Cycle),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One request: the send that echoes its id, and end() (see lifecycle.py).",
    .tp_traverse = (traverseproc)cycle_traverse,
    .tp_clear = (inquiry)cycle_clear,
    .tp_dealloc = (destructor)cycle_dealloc,
    .tp_vectorcall_offset = offsetof(Cycle, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_methods = cycle_methods,
    .tp_members = cycle_members,
};

/* --- Cycles: what a middleware's requests share ---------------------------------------- */

/* The client's id if it is a sane one (1-128 of the characters request_labels.valid_id
 * allows), else NULL without an error. */
static PyObject *client_id(PyObject *raw) {
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(raw);
    if (n < 1 || n > MAX_REQUEST_ID) return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!g_id_chars[s[i]]) return NULL;
    return PyUnicode_DecodeASCII((const char *)s, n, NULL);
}

static PyObject *new_id(Cycles *self) {
    if (!PyList_Check(self->id_prefix) || PyList_GET_SIZE(self->id_prefix) < 1) {
        PyErr_SetString(PyExc_RuntimeError, "request id prefix missing");
        return NULL;
    }
    PyObject *number = PyIter_Next(self->id_counter);
    if (number == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "request id counter ended");
        return NULL;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(number);
    Py_DECREF(number);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *prefix = PyList_GET_ITEM(self->id_prefix, 0);
    if (!PyUnicode_Check(prefix) || !PyUnicode_IS_ASCII(prefix)) {
        PyErr_SetString(PyExc_RuntimeError, "request id prefix must be an ASCII str");
        return NULL;
    }
    char hex[16]; /* f"{prefix}-{n:x}", written out: the formatting calls cost ~1,900 */
    int digits = 0;
    do {
        hex[digits++] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    Py_ssize_t length = PyUnicode_GET_LENGTH(prefix);
    PyObject *text = PyUnicode_New(length + 1 + digits, 127);
    if (text == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    memcpy(out, PyUnicode_1BYTE_DATA(prefix), (size_t)length);
    out[length] = '-';
    for (int i = 0; i < digits; i++) out[length + 1 + i] = (Py_UCS1)hex[digits - 1 - i];
    return text;
}

static PyObject *scope_get(PyObject *scope, PyObject *key, PyObject *otherwise) {
    PyObject *value = PyDict_GetItemWithError(scope, key);
    if (value == NULL && PyErr_Occurred()) return NULL;
    return Py_NewRef(value != NULL ? value : otherwise);
}

/* begin(scope, loop, send) -> Cycle, or None when the Python path must take the request. */
static PyObject *cycles_begin(Cycles *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "begin(scope, loop, send)");
        return NULL;
    }
    PyObject *scope = args[0], *loop = args[1], *send = args[2];
    if (!PyDict_Check(scope)) Py_RETURN_NONE;
    PyObject *headers = PyDict_GetItemWithError(scope, s_headers);
    if (headers == NULL && PyErr_Occurred()) return NULL;
    PyObject *raw_id = NULL; /* borrowed from the headers */
    if (headers != NULL) {
        if (!PyList_Check(headers) && !PyTuple_Check(headers)) Py_RETURN_NONE;
        Py_ssize_t count = PySequence_Fast_GET_SIZE(headers);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(headers, i);
            if (!PyTuple_Check(pair) && !PyList_Check(pair)) Py_RETURN_NONE;
            if (PySequence_Fast_GET_SIZE(pair) != 2) Py_RETURN_NONE;
            PyObject *name = PySequence_Fast_GET_ITEM(pair, 0);
            if (!PyBytes_Check(name)) Py_RETURN_NONE;
            Py_ssize_t size = PyBytes_GET_SIZE(name);
            const char *text = PyBytes_AS_STRING(name);
            if (size == 12 && memcmp(text, ID_HEADER, 12) == 0) {
                raw_id = PySequence_Fast_GET_ITEM(pair, 1);
                if (!PyBytes_Check(raw_id)) Py_RETURN_NONE;
            } else if (size == 15 && memcmp(text, PROFILE_HEADER, 15) == 0) {
                Py_RETURN_NONE; /* asked for its profile: the Python path checks who asks */
            }
        }
    }
    Cycle *cycle = PyObject_GC_New(Cycle, &CycleType);
    if (cycle == NULL) return NULL;
    cycle->vectorcall = cycle_vectorcall;
    cycle->send = Py_NewRef(send);
    cycle->request = cycle->request_id = cycle->id_header = cycle->path = cycle->root_path =
        cycle->key = cycle->token = NULL;
    cycle->status = Py_NewRef(Py_None);
    cycle->owner = (Cycles *)Py_NewRef(self);
    cycle->ended = 0;
    cycle->start = 0;
    PyObject_GC_Track(cycle);

    if (raw_id != NULL) {
        cycle->request_id = client_id(raw_id);
        if (cycle->request_id == NULL && PyErr_Occurred()) goto error;
        if (cycle->request_id != NULL) cycle->id_header = Py_NewRef(raw_id);
    }
    if (cycle->request_id == NULL) {
        cycle->request_id = new_id(self);
        if (cycle->request_id == NULL) goto error;
        cycle->id_header = PyUnicode_AsASCIIString(cycle->request_id);
        if (cycle->id_header == NULL) goto error;
    }
    cycle->path = scope_get(scope, s_path, s_empty);
    if (cycle->path == NULL) goto error;
    cycle->root_path = scope_get(scope, s_root_path, s_empty);
    if (cycle->root_path == NULL) goto error;
    /* request_labels.enter(): a Request with every slot set here, as its __init__ would (a
     * call of the class runs that __init__ as Python: ~4,500 instructions of a request) */
    cycle->request = ((PyTypeObject *)self->request_type)->tp_alloc(
        (PyTypeObject *)self->request_type, 0);
    if (cycle->request == NULL) goto error;
    const Py_ssize_t *slots = self->offsets;
    if (set_slot(cycle->request, slots, SLOT_SCOPE, scope) < 0 ||
        set_slot(cycle->request, slots, SLOT_LIVE, Py_True) < 0 ||
        set_slot(cycle->request, slots, SLOT_REQUEST_ID, cycle->request_id) < 0 ||
        set_slot(cycle->request, slots, SLOT_ROUTE, Py_None) < 0 ||
        set_slot(cycle->request, slots, SLOT_TOKEN, Py_None) < 0 ||
        set_slot(cycle->request, slots, SLOT_KEY, Py_None) < 0)
        goto error;
    if (self->by_task != Py_None) { /* before 3.12: keyed by the running task */
        PyObject *task = PyDict_GetItemWithError(self->current_tasks, loop);
        if (task == NULL && PyErr_Occurred()) goto error;
        if (task != NULL) {
            cycle->key = PyLong_FromVoidPtr(task);
            if (cycle->key == NULL) goto error;
            if (set_slot(cycle->request, slots, SLOT_KEY, cycle->key) < 0) goto error;
        }
    }
    cycle->token = PyContextVar_Set(self->request_var, cycle->request);
    if (cycle->token == NULL) goto error;
    if (set_slot(cycle->request, slots, SLOT_TOKEN, cycle->token) < 0 ||
        (cycle->key != NULL && PyDict_SetItem(self->by_task, cycle->key, cycle->request) < 0)) {
        /* undo the label before failing: no request outlives a start that failed */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyContextVar_Reset(self->request_var, cycle->token) < 0) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
        goto error;
    }
    cycle->start = now_ns();
    return (PyObject *)cycle;
error:
    Py_DECREF(cycle);
    return NULL;
}

static PyObject *cycles_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"request_type", "request_var", "by_task", "current_tasks",
                            "id_prefix", "id_counter", NULL};
    PyObject *request_type, *request_var, *by_task, *current_tasks, *id_prefix, *id_counter;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO!O!O:Cycles", names, &request_type,
                                     &request_var, &by_task, &PyDict_Type, &current_tasks,
                                     &PyList_Type, &id_prefix, &id_counter))
        return NULL;
    if (!PyContextVar_CheckExact(request_var)) {
        PyErr_SetString(PyExc_TypeError, "request_var must be a ContextVar");
        return NULL;
    }
    if (!PyType_Check(request_type)) {
        PyErr_SetString(PyExc_TypeError, "request_type must be a class");
        return NULL;
    }
    if (by_task != Py_None && !PyDict_Check(by_task)) {
        PyErr_SetString(PyExc_TypeError, "by_task must be a dict or None");
        return NULL;
    }
    Cycles *self = (Cycles *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->request_type = Py_NewRef(request_type);
    self->request_var = Py_NewRef(request_var);
    self->by_task = Py_NewRef(by_task);
    self->current_tasks = Py_NewRef(current_tasks);
    self->id_prefix = Py_NewRef(id_prefix);
    self->id_counter = Py_NewRef(id_counter);
    find_slots(request_type, self->offsets);
    return (PyObject *)self;
}

static int cycles_traverse(Cycles *self, visitproc visit, void *arg) {
    Py_VISIT(self->request_type);
    Py_VISIT(self->request_var);
    Py_VISIT(self->by_task);
    Py_VISIT(self->current_tasks);
    Py_VISIT(self->id_prefix);
    Py_VISIT(self->id_counter);
    return 0;
}

static int cycles_clear(Cycles *self) {
    Py_CLEAR(self->request_type);
    Py_CLEAR(self->request_var);
    Py_CLEAR(self->by_task);
    Py_CLEAR(self->current_tasks);
    Py_CLEAR(self->id_prefix);
    Py_CLEAR(self->id_counter);
    return 0;
}

static void cycles_dealloc(Cycles *self) {
    PyObject_GC_UnTrack(self);
    cycles_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef cycles_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))cycles_begin, METH_FASTCALL,
     "begin(scope, loop, send) -> Cycle, or None: the Python path takes this request."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CyclesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyprof_http._requestcycle.Cycles",
    .tp_basicsize = sizeof(Cycles),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What one middleware's requests share (see lifecycle.py).",
    .tp_new = cycles_new,
    .tp_traverse = (traverseproc)cycles_traverse,
    .tp_clear = (inquiry)cycles_clear,
    .tp_dealloc = (destructor)cycles_dealloc,
    .tp_methods = cycles_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_requestcycle",
    "The common HTTP request through pyprof_http's middleware, in C (see lifecycle.py).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

static PyObject *intern(const char *text) { return PyUnicode_InternFromString(text); }

PyMODINIT_FUNC PyInit__requestcycle(void) {
    const char *allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                          "-_.:+=/@";
    for (const char *c = allowed; *c; c++) g_id_chars[(unsigned char)*c] = 1;
    if (PyType_Ready(&CycleType) < 0 || PyType_Ready(&CyclesType) < 0) return NULL;
    s_headers = intern("headers");
    s_path = intern("path");
    s_root_path = intern("root_path");
    s_type = intern("type");
    s_status = intern("status");
    s_start_type = intern("http.response.start");
    s_slot_names[SLOT_SCOPE] = intern("scope");
    s_slot_names[SLOT_LIVE] = intern("live");
    s_slot_names[SLOT_REQUEST_ID] = intern("_request_id");
    s_slot_names[SLOT_ROUTE] = intern("_route");
    s_slot_names[SLOT_TOKEN] = intern("_token");
    s_slot_names[SLOT_KEY] = intern("_key");
    for (int i = 0; i < SLOTS; i++)
        if (s_slot_names[i] == NULL) return NULL;
    s_route_attr_key = intern("route");
    s_empty = intern("");
    s_id_header_name = PyBytes_FromStringAndSize(ID_HEADER, 12);
    if (!s_headers || !s_path || !s_root_path || !s_type || !s_status || !s_start_type ||
        !s_empty || !s_route_attr_key ||
        !s_id_header_name)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CyclesType);
    if (PyModule_AddObject(m, "Cycles", (PyObject *)&CyclesType) < 0) {
        Py_DECREF(&CyclesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
