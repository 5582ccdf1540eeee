/* The low-latency polyphase resampler's filter, evaluated directly.
 *
 * For out/in = L/M (reduced) and a linear-phase FIR h of n = T·L taps, output sample j is
 *
 *     y[j] = Σ_{k<T} h[p + k·L] · x[b − k],   p = j·M mod L,  b = ⌊j·M / L⌋,
 *
 * rounded to the nearest integer (half to even) and saturated to int16. It needs input up to
 * sample b only, so after n inputs every output j < ⌈n·L/M⌉ is computable and comes out.
 *
 * Why any summation order gives the same double: the taps are integer multiples of 2^-Q
 * (stages/resample.py quantises them), the inputs are integers below 2^15 in magnitude, and
 * Σ|taps| of every phase is small enough that 2^15 · Σ|taps| · 2^Q < 2^53. Every product and
 * every partial sum is then an integer times 2^-Q held exactly in a double, so the loop below
 * (several independent accumulators, vectorised, fused multiply-add or not) returns exactly
 * the value BLAS's block product returns in the numpy engine, and rint() rounds it the same.
 *
 * Layout: each phase's taps are stored reversed and padded at the front with zeros to a
 * multiple of W (so the dot product has no tail loop): row p holds h[p + (T−1)·L], ...,
 * h[p + L], h[p] after W·⌈T/W⌉ − T zeros. The input history is kept as doubles (converted
 * from int16 once per input sample): the last Tp − 1 samples (Tp the padded width) sit at the
 * front of the buffer, a call's new samples after them; output j reads the Tp samples ending
 * at x[b]. After the call the last Tp − 1 samples move to the front.
 *
 * All stream state lives in the Polyphase object (history, counts, next output's phase and
 * base); the module has no mutable globals.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The padded width of a phase: 8 doubles, two AVX vectors or four SSE2 ones. */
#define W 8

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
/* One build for every x86-64 Linux machine: the loader picks the widest vectors the CPU has.
 * The results are the same on each (the sums are exact). Elsewhere the portable C below. */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif

typedef struct {
    PyObject_HEAD
    int64_t up, down;       /* L, M */
    Py_ssize_t width;       /* Tp: taps per phase, padded to a multiple of W */
    Py_ssize_t taps_per_phase; /* T */
    double *streams;        /* decimation: a call's samples dealt into `down` streams */
    Py_ssize_t streams_cap; /* capacity of streams, in samples */
    double *taps;           /* up × width, reversed and padded (see above) */
    double *buf;            /* width − 1 samples of history, then a call's input */
    Py_ssize_t cap;         /* capacity of buf, in samples */
    long long n_in;         /* input samples since the start of the stream */
    long long n_out;        /* output samples released */
    long long base;         /* b of the next output (absolute input index) */
    int64_t phase;          /* p of the next output */
} Polyphase;

/* One output's sum, rounded half to even and saturated, stored as little-endian pcm16. */
static inline void
store(unsigned char *out, double sum)
{
    double y = rint(sum);
    long v = y < -32768.0 ? -32768 : y > 32767.0 ? 32767 : (long)y;
    out[0] = (unsigned char)(v & 0xff);
    out[1] = (unsigned char)((v >> 8) & 0xff);
}

#if defined(__GNUC__) && !defined(CRESAMPLE_PORTABLE)
/* gcc and clang: vectors of eight doubles, whatever the target's width (the compiler splits them
 * into what the target has). A load from an unaligned address that may alias doubles: */
#define VECTORS 1
typedef double vec __attribute__((vector_size(W * sizeof(double))));
typedef double uvec __attribute__((vector_size(W * sizeof(double)), aligned(8), may_alias));
#define load(p) (*(const uvec *)(p))
#define total(t) ((((t)[0] + (t)[1]) + ((t)[2] + (t)[3])) + (((t)[4] + (t)[5]) + ((t)[6] + (t)[7])))
/* Four outputs' sums: four independent chains of vector additions (one output's alone would
 * be one chain, which the adder's latency would hold back). */
static inline void
sums4(const double *const *h, const double *const *x, Py_ssize_t width, double *y)
{
    vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (Py_ssize_t k = 0; k < width; k += W) {
        a0 += load(h[0] + k) * load(x[0] + k);
        a1 += load(h[1] + k) * load(x[1] + k);
        a2 += load(h[2] + k) * load(x[2] + k);
        a3 += load(h[3] + k) * load(x[3] + k);
    }
    y[0] = total(a0);
    y[1] = total(a1);
    y[2] = total(a2);
    y[3] = total(a3);
}
#else /* portable C: the same sums, eight scalar accumulators per output */
static inline void
sums4(const double *const *h, const double *const *x, Py_ssize_t width, double *y)
{
    for (int i = 0; i < 4; i++) {
        double a[W] = {0};
        for (Py_ssize_t k = 0; k < width; k += W)
            for (int u = 0; u < W; u++)
                a[u] += h[i][k + u] * x[i][k + u];
        y[i] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
}
#endif

/* Up-sampling by L (M = 1): output b·L + p is phase p at base b, so a call's outputs are every
 * phase at each new base. Vectors run across bases, not taps: for a block of B consecutive
 * bases and one phase, each tap (a scalar) multiplies B consecutive input samples (one vector
 * load) into B sums, no horizontal additions, B / 8 independent chains. */
#define B 32
CLONES static void
run_up(const double *restrict taps, const double *restrict buf, Py_ssize_t width, Py_ssize_t T,
       int64_t up, Py_ssize_t n, unsigned char *restrict out)
{
    const Py_ssize_t pad = width - T;
    for (Py_ssize_t b0 = 0; b0 < n; b0 += B) {
        Py_ssize_t nb = n - b0 < B ? n - b0 : B;
        for (int64_t p = 0; p < up; p++) {
            const double *h = taps + p * width + pad;
            const double *x = buf + b0 + pad;
            double y[B];
#ifdef VECTORS
            vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (Py_ssize_t k = 0; k < T; k++) {
                const double t = h[k];
                a0 += t * load(x + k);
                a1 += t * load(x + k + W);
                a2 += t * load(x + k + 2 * W);
                a3 += t * load(x + k + 3 * W);
            }
            memcpy(y, &a0, sizeof a0);
            memcpy(y + W, &a1, sizeof a1);
            memcpy(y + 2 * W, &a2, sizeof a2);
            memcpy(y + 3 * W, &a3, sizeof a3);
#else
            for (int e = 0; e < B; e++)
                y[e] = 0.0;
            for (Py_ssize_t k = 0; k < T; k++)
                for (int e = 0; e < B; e++)
                    y[e] += h[k] * x[k + e];
#endif
            for (Py_ssize_t e = 0; e < nb; e++)
                store(out + 2 * ((b0 + e) * up + p), y[e]);
        }
    }
}

/* Any L/M with M > 1, when each phase has many outputs in a call: outputs j and j + L have the
 * same phase and bases M apart, so the call's outputs fall into L groups (one per phase) whose
 * windows start M samples apart. The call's samples are first dealt into M streams, stream r
 * holding buf[r], buf[M + r], buf[2M + r], ...; then tap i of a group's consecutive outputs
 * reads consecutive samples of stream (o + i) mod M (o: where the group's first window starts),
 * and the sums run across a group's outputs as in run_up. */
CLONES static void
run_groups(const double *restrict taps, const double *restrict buf, Py_ssize_t len,
           double *restrict streams, Py_ssize_t stride, Py_ssize_t width, Py_ssize_t T,
           int64_t up, int64_t down, long long n_in, long long base, int64_t phase,
           Py_ssize_t count, unsigned char *restrict out)
{
    for (int64_t r = 0; r < down; r++) {
        double *d = streams + r * stride;
        for (Py_ssize_t m = 0, i = r; i < len; m++, i += down)
            d[m] = buf[i];
    }
    const Py_ssize_t pad = width - T;
    const int64_t step_b = down / up, step_p = down % up;
    for (Py_ssize_t g = 0; g < up && g < count; g++) {
        const double *h = taps + phase * width + pad;
        const Py_ssize_t o = (Py_ssize_t)(base - n_in) + pad, n_group = (count - g - 1) / up + 1;
        for (Py_ssize_t e0 = 0; e0 < n_group; e0 += B) {
            Py_ssize_t nb = n_group - e0 < B ? n_group - e0 : B;
            double y[B];
            Py_ssize_t q = o / down, r = o % down;
#ifdef VECTORS
            vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (Py_ssize_t k = 0; k < T; k++) {
                const double t = h[k];
                const double *x = streams + r * stride + q + e0;
                a0 += t * load(x);
                a1 += t * load(x + W);
                a2 += t * load(x + 2 * W);
                a3 += t * load(x + 3 * W);
                if (++r == down) {
                    r = 0;
                    q++;
                }
            }
            memcpy(y, &a0, sizeof a0);
            memcpy(y + W, &a1, sizeof a1);
            memcpy(y + 2 * W, &a2, sizeof a2);
            memcpy(y + 3 * W, &a3, sizeof a3);
#else
            for (int e = 0; e < B; e++)
                y[e] = 0.0;
            for (Py_ssize_t k = 0; k < T; k++) {
                const double *x = streams + r * stride + q + e0;
                for (int e = 0; e < B; e++)
                    y[e] += h[k] * x[e];
                if (++r == down) {
                    r = 0;
                    q++;
                }
            }
#endif
            for (Py_ssize_t e = 0; e < nb; e++)
                store(out + 2 * (g + (e0 + e) * up), y[e]);
        }
        base += step_b; /* the next group's first output */
        phase += step_p;
        if (phase >= up) {
            phase -= up;
            base += 1;
        }
    }
}

/* Outputs from the samples in buf: the one with base b reads buf[b − n_in .. b − n_in + Tp − 1]
 * (the caller guarantees b − n_in ≥ 0 for the first and b ≤ n_in + n − 1 for the last), four
 * at a time. */
CLONES static void
run(const double *restrict taps, const double *restrict buf, Py_ssize_t width, int64_t up,
    int64_t down, long long n_in, long long base, int64_t phase, Py_ssize_t count,
    unsigned char *restrict out)
{
    const int64_t step_b = down / up, step_p = down % up;
    const double *h[4], *x[4];
    double y[4];
    Py_ssize_t j = 0;
    while (j < count) {
        int g = count - j < 4 ? (int)(count - j) : 4;
        for (int i = 0; i < 4; i++) {
            /* past the last output (a short group) the last one is summed again, unused */
            h[i] = taps + phase * width;
            x[i] = buf + (base - n_in);
            if (i + 1 < g) {
                base += step_b;
                phase += step_p;
                if (phase >= up) {
                    phase -= up;
                    base += 1;
                }
            }
        }
        sums4(h, x, width, y);
        for (int i = 0; i < g; i++)
            store(out + 2 * (j + i), y[i]);
        j += g;
        base += step_b; /* on to the output after the group's last */
        phase += step_p;
        if (phase >= up) {
            phase -= up;
            base += 1;
        }
    }
}

static void
clear_stream(Polyphase *self)
{
    memset(self->buf, 0, (size_t)(self->width - 1) * sizeof(double));
    self->n_in = self->n_out = self->base = 0;
    self->phase = 0;
}

static PyObject *
Polyphase_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"taps", "up", "down", NULL};
    Py_buffer view;
    long long up, down;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*LL:Polyphase", kwlist, &view, &up, &down))
        return NULL;
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(double);
    if (up <= 0 || down <= 0 || up > (1LL << 30) || down > (1LL << 30)) {
        PyErr_Format(PyExc_ValueError,
                     "Polyphase: up %lld and down %lld must be in 1 .. 2**30 (the reduced "
                     "ratio out/in)", up, down);
        PyBuffer_Release(&view);
        return NULL;
    }
    if (view.len % (Py_ssize_t)sizeof(double) || n == 0 || n % up) {
        PyErr_Format(PyExc_ValueError,
                     "Polyphase: taps are %zd bytes; they must be float64 taps, a non-zero "
                     "multiple of up = %lld of them", view.len, up);
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t T = n / (Py_ssize_t)up;
    Py_ssize_t width = (T + W - 1) / W * W;
    Polyphase *self = (Polyphase *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->up = up;
    self->down = down;
    self->width = width;
    self->taps_per_phase = T;
    self->cap = width - 1 + 4096;
    self->taps = PyMem_Calloc((size_t)up * (size_t)width, sizeof(double));
    self->buf = PyMem_Calloc((size_t)self->cap, sizeof(double));
    if (self->taps == NULL || self->buf == NULL) {
        PyBuffer_Release(&view);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    const double *h = (const double *)view.buf;
    Py_ssize_t pad = width - T;
    for (Py_ssize_t p = 0; p < up; p++) {
        for (Py_ssize_t i = 0; i < T; i++) {
            double t;
            memcpy(&t, h + p + (T - 1 - i) * up, sizeof t); /* the buffer may be unaligned */
            if (!isfinite(t)) {
                PyErr_Format(PyExc_ValueError, "Polyphase: tap %zd is not finite",
                             p + (T - 1 - i) * up);
                PyBuffer_Release(&view);
                Py_DECREF(self);
                return NULL;
            }
            self->taps[p * width + pad + i] = t;
        }
    }
    PyBuffer_Release(&view);
    clear_stream(self);
    return (PyObject *)self;
}

static void
Polyphase_dealloc(Polyphase *self)
{
    PyMem_Free(self->taps);
    PyMem_Free(self->buf);
    PyMem_Free(self->streams);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* process() and process_bytearray(): the result as bytes, or as a bytearray (which numpy can
 * wrap as a writable array without a copy) */
static PyObject *
filter(Polyphase *self, PyObject *const *args, Py_ssize_t nargs, int as_bytearray)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes 1 argument (pcm16 bytes), got %zd",
                     as_bytearray ? "process_bytearray" : "process", nargs);
        return NULL;
    }
    Py_buffer view;
    const unsigned char *src;
    Py_ssize_t len;
    int bytes = PyBytes_CheckExact(args[0]);
    if (bytes) {
        src = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        len = PyBytes_GET_SIZE(args[0]);
    }
    else {
        if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS) < 0)
            return NULL;
        src = (const unsigned char *)view.buf;
        len = view.len;
    }
    PyObject *result = NULL;
    if (len & 1) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of pcm16: not a whole number of 2-byte samples",
                     len);
        goto done;
    }
    Py_ssize_t n = len >> 1, hist = self->width - 1;
    if (hist + n + B > self->cap) { /* (run_up reads up to B samples past the input) */
        Py_ssize_t cap = 2 * (hist + n + B);
        double *grown = PyMem_Realloc(self->buf, (size_t)cap * sizeof(double));
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memset(grown + self->cap, 0, (size_t)(cap - self->cap) * sizeof(double));
        self->buf = grown;
        self->cap = cap;
    }
    double *x = self->buf + hist;
    for (Py_ssize_t i = 0; i < n; i++)
        x[i] = (double)(int16_t)(uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
    /* outputs j ≥ n_out with ⌊j·M/L⌋ ≤ total − 1, i.e. j·M < total·L: the next one sits at
     * base·L + phase = n_out·M, each one after it M further on */
    long long total = self->n_in + n, count = 0;
    if (self->base < total)
        count = ((total - self->base) * self->up - self->phase - 1) / self->down + 1;
    result = as_bytearray ? PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(2 * count))
                          : PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 * count));
    if (result == NULL)
        goto done;
    unsigned char *dst = (unsigned char *)(as_bytearray ? PyByteArray_AS_STRING(result)
                                                        : PyBytes_AS_STRING(result));
    if (count) {
        if (self->down == 1) /* then base = n_in, phase = 0, count = n·L */
            run_up(self->taps, self->buf, self->width, self->taps_per_phase, self->up, n,
                   dst);
        else if (count >= 16 * self->up) { /* at least half a block per group */
            /* each stream: the call's samples (len / M + 1), then what a block of B outputs
             * reads past them (the last block's unused lanes): B + width / M + 1 more */
            Py_ssize_t len = hist + n, stride = len / self->down + B + self->width / self->down + 2;
            if (self->down * stride > self->streams_cap) {
                Py_ssize_t cap = 2 * self->down * stride;
                double *grown = PyMem_Realloc(self->streams, (size_t)cap * sizeof(double));
                if (grown == NULL) {
                    Py_CLEAR(result);
                    PyErr_NoMemory();
                    goto done;
                }
                /* (unused lanes read what is there: keep it finite) */
                memset(grown + self->streams_cap, 0, (size_t)(cap - self->streams_cap) * sizeof(double));
                self->streams = grown;
                self->streams_cap = cap;
            }
            run_groups(self->taps, self->buf, len, self->streams, stride, self->width,
                       self->taps_per_phase, self->up, self->down, self->n_in, self->base,
                       self->phase, (Py_ssize_t)count, dst);
        }
        else
            run(self->taps, self->buf, self->width, self->up, self->down, self->n_in,
                self->base, self->phase, (Py_ssize_t)count, dst);
        long long adv = self->phase + count * self->down;
        self->base += adv / self->up;
        self->phase = adv % self->up;
        self->n_out += count;
    }
    memmove(self->buf, self->buf + n, (size_t)hist * sizeof(double));
    self->n_in = total;
done:
    if (!bytes)
        PyBuffer_Release(&view);
    return result;
}

static PyObject *
Polyphase_process(Polyphase *self, PyObject *const *args, Py_ssize_t nargs)
{
    return filter(self, args, nargs, 0);
}

static PyObject *
Polyphase_process_bytearray(Polyphase *self, PyObject *const *args, Py_ssize_t nargs)
{
    return filter(self, args, nargs, 1);
}

static PyObject *
Polyphase_reset(Polyphase *self, PyObject *Py_UNUSED(ignored))
{
    clear_stream(self);
    Py_RETURN_NONE;
}

static PyObject *
Polyphase_get_samples_in(Polyphase *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->n_in);
}

static PyObject *
Polyphase_get_samples_out(Polyphase *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->n_out);
}

static PyMethodDef Polyphase_methods[] = {
    {"process", (PyCFunction)(void (*)(void))Polyphase_process, METH_FASTCALL,
     "process(data) -> bytes: pcm16 in, every output it makes computable out (pcm16)"},
    {"process_bytearray", (PyCFunction)(void (*)(void))Polyphase_process_bytearray,
     METH_FASTCALL, "process_bytearray(data) -> bytearray: process() into a new bytearray"},
    {"reset", (PyCFunction)Polyphase_reset, METH_NOARGS,
     "reset(): forget the history; the next sample starts a new stream"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Polyphase_getset[] = {
    {"samples_in", (getter)Polyphase_get_samples_in, NULL, "input samples since the start",
     NULL},
    {"samples_out", (getter)Polyphase_get_samples_out, NULL, "output samples released", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PolyphaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stages._cresample.Polyphase",
    .tp_basicsize = sizeof(Polyphase),
    .tp_dealloc = (destructor)Polyphase_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Polyphase(taps, up, down): a streaming polyphase FIR for pcm16 at out/in = "
              "up/down, taps (float64, up × taps per phase of them) with DC gain up.",
    .tp_methods = Polyphase_methods,
    .tp_getset = Polyphase_getset,
    .tp_new = Polyphase_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cresample",
    "The low-latency resampler's polyphase filter in C (see stages/resample.py).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__cresample(void)
{
    if (PyType_Ready(&PolyphaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PolyphaseType);
    if (PyModule_AddObject(m, "Polyphase", (PyObject *)&PolyphaseType) < 0) {
        Py_DECREF(&PolyphaseType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
