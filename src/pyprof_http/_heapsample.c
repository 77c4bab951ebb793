/* Sampling heap profiler hook for CPython's PYMEM_DOMAIN_MEM and PYMEM_DOMAIN_OBJ allocators.
 *
 * Go's heap profile, for Python: about one allocation per `rate` bytes is sampled (a Poisson
 * process over allocated bytes: the gaps are exponential with mean `rate`), its Python stack is
 * recorded, and it is remembered by address until it is freed, so "in use" is exact for the
 * sample and "allocated since start" is counted per stack. Each sample stands for
 * 1 / (1 - exp(-size / rate)) allocations of its size (Go's scaleHeapSample).
 *
 * Safety rules this file keeps (a crash here takes the application down):
 *  - Every call is passed to the allocator that was installed before ours (tracemalloc, memray,
 *    debug hooks keep working); we only look at the result.
 *  - The MEM and OBJ domains are only called with the GIL held (GIL builds; free-threaded builds
 *    are refused at start), so all state here is protected by the GIL: no lock of our own, so
 *    nothing a fork could inherit half-held.
 *  - The fast path (no sample due) is a subtraction and a compare; a free is one probe of the
 *    live table when it is not empty.
 *  - The slow path allocates nothing through Python: the stack is read from the thread's frame
 *    chain the way tracemalloc reads it (no frame objects are materialised, so no allocation, no
 *    garbage collection, no Python code can run inside an allocator call); the tables use the
 *    C library's malloc, which is not hooked.
 *  - Frames keep a strong reference to their code object (taken with Py_INCREF only), so a
 *    stack never points to a freed code object; references are dropped only from functions
 *    called by Python, after the tables were detached from the globals.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#else
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define COLD __attribute__((noinline, cold))
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define COLD
#define UNLIKELY(x) (x)
#define LIKELY(x) (x)
#endif

#define MAX_DEPTH_LIMIT 256
#define DEFAULT_MAX_STACKS 16384

typedef struct {
    PyObject *code; /* strong reference */
    int lasti;      /* byte offset of the instruction; the line is computed when read */
} FrameRef;

typedef struct {
    uint64_t hash;
    uint32_t depth;
    uint64_t samples;
    double alloc_objects; /* scaled estimates */
    double alloc_bytes;
    FrameRef frames[]; /* innermost first */
} Stack;

typedef struct {
    uintptr_t ptr; /* 0: empty slot */
    uint32_t stack;
    float scale;
    uint64_t size;
} Live;

typedef struct {
    PyMemAllocatorEx prev;
    PyMemAllocatorDomain domain;
} Hook;

static Hook g_hook_mem = {.domain = PYMEM_DOMAIN_MEM};
static Hook g_hook_obj = {.domain = PYMEM_DOMAIN_OBJ};

static int g_installed; /* our hooks are (or were put) in the chain and never taken out */
static int g_active;    /* sampling and tracking frees */
static int g_busy;      /* inside our own slow path */
static int64_t g_countdown = INT64_MAX;
static int64_t g_rate;
static int g_max_depth = 64;
static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static PyInterpreterState *g_main_interp; /* the only interpreter whose allocations we track */

static Stack **g_stacks;      /* id -> stack; id 0 is the "table full" stack */
static uint32_t g_nstacks, g_stacks_cap, g_max_stacks = DEFAULT_MAX_STACKS;
static uint32_t *g_stack_index; /* open addressing: id + 1, 0 empty */
static uint32_t g_index_cap;
static size_t g_stack_bytes;

/* A free from another interpreter (3.12+: maybe under its own GIL, at the same time) reads
 * the home slot before it knows it is not ours to touch, so a live table is never freed: a
 * grown table retires the old one (kept: at most the size of the current one), and stop clears
 * the table in place. ``g_live`` is published before ``g_live_cap`` grows (release / acquire),
 * so a reader that sees a capacity reads a table at least that large. */
static Live *g_live;
static size_t g_live_cap, g_live_count;

static uint64_t g_samples_total, g_dropped, g_overflowed;

static FrameRef g_frame_buf[MAX_DEPTH_LIMIT];

/* --- randomness ------------------------------------------------------------------------- */

static inline uint64_t next_random(void) {
    /* xorshift64* */
    uint64_t x = g_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int64_t next_gap(void) {
    if (g_rate <= 0) return INT64_MAX;
    /* u in (0, 1]: -log(u) is exponential with mean 1 */
    double u = ((double)((next_random() >> 11) + 1)) * (1.0 / 9007199254740992.0);
    double gap = -log(u) * (double)g_rate;
    if (gap < 1.0) return 1;
    if (gap > 4.0e18) return INT64_MAX;
    return (int64_t)gap;
}

static void seed_from_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_rng ^= ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
    if (g_rng == 0) g_rng = 0x9E3779B97F4A7C15ULL;
}

static void after_fork_child(void) {
    /* the child must not draw the same gaps as its parent; only an integer is touched */
    g_rng ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL;
    if (g_rng == 0) g_rng = 1;
}

/* --- the live table: sampled address -> (stack, size, scale) ---------------------------- */

static inline size_t ptr_slot(uintptr_t p, size_t mask) {
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 17) & mask;
}

static int live_grow(void) {
    size_t cap = g_live_cap ? g_live_cap * 2 : 1024;
    Live *table = calloc(cap, sizeof(Live));
    if (table == NULL) return -1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < g_live_cap; i++) {
        if (g_live[i].ptr) {
            size_t j = ptr_slot(g_live[i].ptr, mask);
            while (table[j].ptr) j = (j + 1) & mask;
            table[j] = g_live[i];
        }
    }
    /* the old table is retired, never freed (see above); its entries stay as they were */
    g_live = table;
    __atomic_store_n(&g_live_cap, cap, __ATOMIC_RELEASE);
    return 0;
}

static int live_insert(uintptr_t p, uint32_t stack, uint64_t size, float scale) {
    if ((g_live_count + 1) * 4 > g_live_cap && live_grow() < 0) return -1;
    size_t mask = g_live_cap - 1, i = ptr_slot(p, mask);
    while (g_live[i].ptr && g_live[i].ptr != p) i = (i + 1) & mask;
    if (!g_live[i].ptr) g_live_count++;
    g_live[i].ptr = p;
    g_live[i].stack = stack;
    g_live[i].size = size;
    g_live[i].scale = scale;
    return 0;
}

static void live_remove(uintptr_t p) {
    size_t mask = g_live_cap - 1, i = ptr_slot(p, mask);
    for (;;) {
        if (g_live[i].ptr == 0) return;
        if (g_live[i].ptr == p) break;
        i = (i + 1) & mask;
    }
    /* backward-shift deletion: no tombstones, probes stay short */
    size_t j = i;
    for (;;) {
        g_live[i].ptr = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (g_live[j].ptr == 0) {
                g_live_count--;
                return;
            }
            size_t k = ptr_slot(g_live[j].ptr, mask);
            /* move j to i unless its home k lies cyclically in (i, j] */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
            break;
        }
        g_live[i] = g_live[j];
        i = j;
    }
}

/* --- the stack table -------------------------------------------------------------------- */

static uint64_t hash_frames(const FrameRef *frames, uint32_t depth) {
    uint64_t h = 0xCBF29CE484222325ULL ^ depth;
    for (uint32_t i = 0; i < depth; i++) {
        h ^= (uint64_t)(uintptr_t)frames[i].code;
        h *= 0x100000001B3ULL;
        h ^= (uint64_t)(uint32_t)frames[i].lasti;
        h *= 0x100000001B3ULL;
        h ^= h >> 29;
    }
    return h;
}

static Stack *new_stack(const FrameRef *frames, uint32_t depth, uint64_t hash) {
    size_t bytes = sizeof(Stack) + (size_t)depth * sizeof(FrameRef);
    Stack *s = calloc(1, bytes);
    if (s == NULL) return NULL;
    s->hash = hash;
    s->depth = depth;
    for (uint32_t i = 0; i < depth; i++) {
        s->frames[i] = frames[i];
        Py_INCREF(frames[i].code);
    }
    g_stack_bytes += bytes;
    return s;
}

static int index_rebuild(uint32_t cap) {
    uint32_t *index = calloc(cap, sizeof(uint32_t));
    if (index == NULL) return -1;
    for (uint32_t id = 1; id < g_nstacks; id++) {
        uint32_t j = (uint32_t)(g_stacks[id]->hash) & (cap - 1);
        while (index[j]) j = (j + 1) & (cap - 1);
        index[j] = id + 1;
    }
    free(g_stack_index);
    g_stack_index = index;
    g_index_cap = cap;
    return 0;
}

static int stacks_init(void) {
    if (g_stacks != NULL) return 0;
    g_stacks_cap = 256;
    g_stacks = calloc(g_stacks_cap, sizeof(Stack *));
    if (g_stacks == NULL) return -1;
    g_stacks[0] = new_stack(NULL, 0, 0); /* the overflow stack */
    if (g_stacks[0] == NULL) {
        free(g_stacks);
        g_stacks = NULL;
        return -1;
    }
    g_nstacks = 1;
    if (index_rebuild(512) < 0) {
        free(g_stacks[0]);
        free(g_stacks);
        g_stacks = NULL;
        g_nstacks = 0;
        return -1;
    }
    return 0;
}

/* The id of this stack (interned), 0 when the table is full or memory ran out. */
static uint32_t intern_stack(const FrameRef *frames, uint32_t depth) {
    uint64_t hash = hash_frames(frames, depth);
    uint32_t mask = g_index_cap - 1, j = (uint32_t)hash & mask;
    while (g_stack_index[j]) {
        Stack *s = g_stacks[g_stack_index[j] - 1];
        if (s->hash == hash && s->depth == depth &&
            memcmp(s->frames, frames, depth * sizeof(FrameRef)) == 0)
            return g_stack_index[j] - 1;
        j = (j + 1) & mask;
    }
    if (g_nstacks >= g_max_stacks) return 0;
    if (g_nstacks == g_stacks_cap) {
        uint32_t cap = g_stacks_cap * 2;
        Stack **grown = realloc(g_stacks, cap * sizeof(Stack *));
        if (grown == NULL) return 0;
        g_stacks = grown;
        g_stacks_cap = cap;
    }
    Stack *s = new_stack(frames, depth, hash);
    if (s == NULL) return 0;
    uint32_t id = g_nstacks++;
    g_stacks[id] = s;
    if ((uint64_t)g_nstacks * 2 > g_index_cap) {
        if (index_rebuild(g_index_cap * 2) < 0) {
            /* keep the old index: this stack is simply not findable; find-or-insert again
             * would add a duplicate, which only splits a row (harmless) */
        }
        return id;
    }
    g_stack_index[j] = id + 1;
    return id;
}

/* --- reading the current thread's Python stack without allocating ----------------------- */

static uint32_t read_stack(FrameRef *out, int max_depth) {
    PyThreadState *tstate = _PyThreadState_UncheckedGet();
    uint32_t n = 0;
    if (tstate == NULL) return 0;
#if PY_VERSION_HEX < 0x030B0000
    PyFrameObject *f = tstate->frame;
    while (f != NULL && n < (uint32_t)max_depth) {
        PyCodeObject *code = f->f_code;
        if (code != NULL) {
            out[n].code = (PyObject *)code;
            out[n].lasti = f->f_lasti * (int)sizeof(_Py_CODEUNIT);
            n++;
        }
        f = f->f_back;
    }
#else
#if PY_VERSION_HEX < 0x030D0000
    _PyInterpreterFrame *f = tstate->cframe->current_frame;
#else
    _PyInterpreterFrame *f = tstate->current_frame;
#endif
    while (f != NULL && n < (uint32_t)max_depth) {
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner == FRAME_OWNED_BY_CSTACK) {
            f = f->previous;
            continue;
        }
#endif
#if PY_VERSION_HEX < 0x030D0000
        PyObject *code = (PyObject *)f->f_code;
#else
        PyObject *code = f->f_executable;
#endif
        if (code != NULL && PyCode_Check(code) && !_PyFrame_IsIncomplete(f)) {
            out[n].code = code;
            out[n].lasti = _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
            n++;
        }
        f = f->previous;
    }
#endif
    return n;
}

/* --- the hooks -------------------------------------------------------------------------- */

/* The allocator hooks are process-wide, but the GIL is per interpreter since 3.12: a
 * subinterpreter with its own GIL runs its allocations through our hooks at the same time as
 * the main interpreter. The tables are only ever touched from the main interpreter (whose GIL
 * protects them); a subinterpreter's code objects would also outlive their interpreter. */
static inline int in_main_interp(void) {
    PyThreadState *tstate = _PyThreadState_UncheckedGet();
    return tstate != NULL && tstate->interp == g_main_interp;
}

#if PY_VERSION_HEX >= 0x030C0000
#define FREE_FROM_MAIN_INTERP() in_main_interp()
#else
/* 3.10/3.11: one GIL for every interpreter, so a free from a subinterpreter cannot race */
#define FREE_FROM_MAIN_INTERP() 1
#endif

static void record(void *ptr, size_t size) {
    uint32_t depth = read_stack(g_frame_buf, g_max_depth);
    uint32_t id = intern_stack(g_frame_buf, depth);
    if (id == 0) g_overflowed++;
    double scale = 1.0 / (1.0 - exp(-(double)size / (double)g_rate));
    Stack *s = g_stacks[id];
    s->samples++;
    s->alloc_objects += scale;
    s->alloc_bytes += scale * (double)size;
    g_samples_total++;
    if (live_insert((uintptr_t)ptr, id, (uint64_t)size, (float)scale) < 0) g_dropped++;
}

static void COLD sample(void *ptr, size_t size) {
    if (!in_main_interp()) {
        /* another interpreter (maybe under its own GIL): a plain store, no table touched */
        g_countdown = g_active && g_rate > 0 ? g_rate : INT64_MAX;
        return;
    }
    if (!g_active || g_busy) {
        g_countdown = g_active ? next_gap() : INT64_MAX;
        return;
    }
    g_busy = 1;
    record(ptr, size);
    g_countdown = next_gap();
    g_busy = 0;
}

static inline void counted(void *ptr, size_t size) {
    g_countdown -= (int64_t)size;
    if (UNLIKELY(g_countdown <= 0)) sample(ptr, size);
}

/* Whether ``ptr`` may be a sampled block: its home slot is taken. Most frees end here (the
 * table is kept at most a quarter full), without a call. */
static inline int maybe_sampled(void *ptr) {
    if (__atomic_load_n(&g_live_count, __ATOMIC_RELAXED) == 0) return 0;
    size_t cap = __atomic_load_n(&g_live_cap, __ATOMIC_ACQUIRE); /* >= 1024 once counted */
    Live *table = __atomic_load_n(&g_live, __ATOMIC_RELAXED);
    uintptr_t home = __atomic_load_n(&table[ptr_slot((uintptr_t)ptr, cap - 1)].ptr,
                                     __ATOMIC_RELAXED);
    /* only then, rarely (the table is kept at most a quarter full), whose free this is */
    return home != 0 && FREE_FROM_MAIN_INTERP();
}

static void *hs_malloc(void *ctx, size_t size) {
    Hook *h = (Hook *)ctx;
    void *ptr = h->prev.malloc(h->prev.ctx, size);
    if (ptr != NULL) counted(ptr, size);
    return ptr;
}

static void *hs_calloc(void *ctx, size_t nelem, size_t elsize) {
    Hook *h = (Hook *)ctx;
    void *ptr = h->prev.calloc(h->prev.ctx, nelem, elsize);
    if (ptr != NULL) counted(ptr, nelem * elsize);
    return ptr;
}

static void *hs_realloc(void *ctx, void *old, size_t size) {
    Hook *h = (Hook *)ctx;
    void *ptr = h->prev.realloc(h->prev.ctx, old, size);
    if (ptr == NULL) return NULL; /* the old block is untouched */
    /* a realloc is the old block's free and a new block's allocation, as tracemalloc counts it */
    if (UNLIKELY(maybe_sampled(old))) live_remove((uintptr_t)old);
    counted(ptr, size);
    return ptr;
}

static void hs_free(void *ctx, void *ptr) {
    Hook *h = (Hook *)ctx;
    if (UNLIKELY(maybe_sampled(ptr))) live_remove((uintptr_t)ptr);
    h->prev.free(h->prev.ctx, ptr);
}

static int ours_on_top(Hook *hook) {
    PyMemAllocatorEx current;
    PyMem_GetAllocator(hook->domain, &current);
    return current.malloc == hs_malloc && current.ctx == hook;
}

static void install_hook(Hook *hook) {
    PyMemAllocatorEx ours = {hook, hs_malloc, hs_calloc, hs_realloc, hs_free};
    PyMem_GetAllocator(hook->domain, &hook->prev);
    PyMem_SetAllocator(hook->domain, &ours);
}

/* --- detaching and freeing the tables (only from functions Python calls) ---------------- */

typedef struct {
    Stack **stacks;
    uint32_t nstacks;
    uint32_t *index;
} Detached;

static Detached detach_tables(void) {
    Detached d = {g_stacks, g_nstacks, g_stack_index};
    g_stacks = NULL;
    g_nstacks = g_stacks_cap = 0;
    g_stack_index = NULL;
    g_index_cap = 0;
    /* the live table is cleared in place, never freed (a free from another interpreter may
     * be reading it): the next start reuses it */
    if (g_live != NULL) memset(g_live, 0, g_live_cap * sizeof(Live));
    g_live_count = 0;
    g_stack_bytes = 0;
    g_samples_total = g_dropped = g_overflowed = 0;
    return d;
}

static void free_detached(Detached d) {
    /* decrefs may free code objects (and run weakref callbacks): the globals are clean */
    for (uint32_t id = 0; id < d.nstacks; id++) {
        Stack *s = d.stacks[id];
        for (uint32_t i = 0; i < s->depth; i++) Py_DECREF(s->frames[i].code);
        free(s);
    }
    free(d.stacks);
    free(d.index);
}

/* --- the module ------------------------------------------------------------------------- */

static PyObject *hs_start(PyObject *self, PyObject *args) {
    long long rate;
    int max_depth;
    if (!PyArg_ParseTuple(args, "Li:start", &rate, &max_depth)) return NULL;
#ifdef Py_GIL_DISABLED
    PyErr_SetString(PyExc_RuntimeError, "the heap sampler needs the GIL (free-threaded build)");
    return NULL;
#endif
    if (rate <= 0 || max_depth < 1) {
        PyErr_SetString(PyExc_ValueError, "rate and max_depth must be positive");
        return NULL;
    }
    if (max_depth > MAX_DEPTH_LIMIT) max_depth = MAX_DEPTH_LIMIT;
    if (stacks_init() < 0) return PyErr_NoMemory();
    if (g_live == NULL && live_grow() < 0) return PyErr_NoMemory();
    g_rate = rate;
    g_max_depth = max_depth;
    g_countdown = next_gap();
    g_active = 1;
    if (!g_installed) {
        install_hook(&g_hook_mem);
        install_hook(&g_hook_obj);
        g_installed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *hs_stop(PyObject *self, PyObject *unused) {
    const char *how = "not running";
    if (g_installed) {
        g_active = 0;
        g_countdown = INT64_MAX;
        if (ours_on_top(&g_hook_mem) && ours_on_top(&g_hook_obj)) {
            PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &g_hook_mem.prev);
            PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &g_hook_obj.prev);
            g_installed = 0;
            how = "uninstalled";
        } else {
            /* another hook chained onto ours: it calls ours, which now only passes through */
            how = "passing through";
        }
    }
    free_detached(detach_tables());
    return PyUnicode_FromString(how);
}

static PyObject *hs_snapshot(PyObject *self, PyObject *unused) {
    /* 1: copy what is needed into private memory, touching no Python object but INCREFs
     *    (building Python objects can run the garbage collector, hence other threads, which
     *    may sample, free or stop the sampler meanwhile) */
    uint32_t n = g_nstacks;
    int64_t rate = g_rate;
    double *inuse = NULL, *alloc = NULL;
    uint64_t *samples = NULL;
    uint32_t *depth = NULL;
    size_t *offset = NULL, total_frames = 0;
    FrameRef *frames = NULL;
    if (n) {
        inuse = calloc((size_t)n * 2, sizeof(double));
        alloc = calloc((size_t)n * 2, sizeof(double));
        samples = calloc(n, sizeof(uint64_t));
        depth = calloc(n, sizeof(uint32_t));
        offset = calloc(n, sizeof(size_t));
        for (uint32_t id = 0; id < n; id++) total_frames += g_stacks[id]->depth;
        frames = calloc(total_frames ? total_frames : 1, sizeof(FrameRef));
        if (!inuse || !alloc || !samples || !depth || !offset || !frames) {
            free(inuse); free(alloc); free(samples); free(depth); free(offset); free(frames);
            return PyErr_NoMemory();
        }
        size_t at = 0;
        for (uint32_t id = 0; id < n; id++) {
            Stack *s = g_stacks[id];
            alloc[2 * id] = s->alloc_objects;
            alloc[2 * id + 1] = s->alloc_bytes;
            samples[id] = s->samples;
            depth[id] = s->depth;
            offset[id] = at;
            for (uint32_t i = 0; i < s->depth; i++) {
                frames[at] = s->frames[i];
                Py_INCREF(frames[at].code);
                at++;
            }
        }
        for (size_t i = 0; i < g_live_cap; i++) {
            Live *e = &g_live[i];
            if (e->ptr && e->stack < n) {
                inuse[2 * e->stack] += e->scale;
                inuse[2 * e->stack + 1] += (double)e->scale * (double)e->size;
            }
        }
    }
    /* 2: build the answer from the private copy */
    PyObject *rows = PyList_New(0);
    for (uint32_t id = 0; rows != NULL && id < n; id++) {
        if (samples[id] == 0) continue;
        PyObject *stack = PyTuple_New(depth[id]);
        if (stack == NULL) { Py_CLEAR(rows); break; }
        for (uint32_t i = 0; i < depth[id]; i++) {
            FrameRef *f = &frames[offset[id] + i];
            int line = PyCode_Addr2Line((PyCodeObject *)f->code, f->lasti);
            PyObject *pair = Py_BuildValue("(Oi)", f->code, line < 0 ? 0 : line);
            if (pair == NULL) { Py_CLEAR(stack); break; }
            PyTuple_SET_ITEM(stack, i, pair);
        }
        if (stack == NULL) { Py_CLEAR(rows); break; }
        PyObject *row = Py_BuildValue("(INLLLLK)", id, stack,
                                      (long long)alloc[2 * id], (long long)alloc[2 * id + 1],
                                      (long long)inuse[2 * id], (long long)inuse[2 * id + 1],
                                      (unsigned long long)samples[id]);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            Py_CLEAR(rows);
            break;
        }
        Py_DECREF(row);
    }
    for (size_t i = 0; i < total_frames; i++) Py_DECREF(frames[i].code);
    free(inuse); free(alloc); free(samples); free(depth); free(offset); free(frames);
    if (rows == NULL) return NULL;
    return Py_BuildValue("(LN)", (long long)rate, rows);
}

static PyObject *hs_stats(PyObject *self, PyObject *unused) {
    double inuse_bytes = 0.0, inuse_objects = 0.0;
    for (size_t i = 0; i < g_live_cap; i++) {
        if (g_live[i].ptr) {
            inuse_objects += g_live[i].scale;
            inuse_bytes += (double)g_live[i].scale * (double)g_live[i].size;
        }
    }
    size_t bytes = g_stack_bytes + (size_t)g_stacks_cap * sizeof(Stack *) +
                   (size_t)g_index_cap * sizeof(uint32_t) + g_live_cap * sizeof(Live);
    return Py_BuildValue(
        "{s:O,s:O,s:L,s:i,s:I,s:I,s:n,s:n,s:K,s:K,s:K,s:L,s:L}",
        "installed", g_installed ? Py_True : Py_False, "active", g_active ? Py_True : Py_False,
        "rate", (long long)g_rate, "max_depth", g_max_depth, "stacks", g_nstacks,
        "max_stacks", g_max_stacks, "live_samples", (Py_ssize_t)g_live_count,
        "memory_bytes", (Py_ssize_t)bytes, "samples_total", (unsigned long long)g_samples_total,
        "dropped", (unsigned long long)g_dropped, "overflowed", (unsigned long long)g_overflowed,
        "inuse_objects", (long long)inuse_objects, "inuse_bytes", (long long)inuse_bytes);
}

static PyObject *hs_seed(PyObject *self, PyObject *arg) {
    unsigned long long seed = PyLong_AsUnsignedLongLongMask(arg);
    if (seed == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    g_rng = seed ? (uint64_t)seed : 1;
    if (g_active) g_countdown = next_gap();
    Py_RETURN_NONE;
}

static PyObject *hs_set_max_stacks(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 2 || n > 1 << 22) {
        PyErr_SetString(PyExc_ValueError, "max_stacks must be from 2 to 4194304");
        return NULL;
    }
    g_max_stacks = (uint32_t)n;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", hs_start, METH_VARARGS,
     "start(rate, max_depth): sample one allocation per `rate` bytes on average from now on."},
    {"stop", hs_stop, METH_NOARGS,
     "stop() -> how: uninstall the hook if ours is still on top (else only pass through) and "
     "drop every sample."},
    {"snapshot", hs_snapshot, METH_NOARGS,
     "snapshot() -> (rate, [(stack_id, ((code, line), ...), alloc_objects, alloc_space, inuse_objects, "
     "inuse_space, samples)]): scaled estimates per stack, innermost frame first."},
    {"stats", hs_stats, METH_NOARGS, "stats() -> dict: the sampler's state and its own memory."},
    {"seed", hs_seed, METH_O, "seed(n): make the sampling gaps deterministic (tests)."},
    {"set_max_stacks", hs_set_max_stacks, METH_O,
     "set_max_stacks(n): distinct stacks kept; later ones count under one overflow stack."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_heapsample",
    "Sampling allocator hook (pyprof_http's always-on heap profile).", -1, methods,
};

PyMODINIT_FUNC PyInit__heapsample(void) {
    static int once;
    if (!once) {
        once = 1;
        seed_from_clock();
        g_main_interp = PyInterpreterState_Main();
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    return PyModule_Create(&module);
}
