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
    double *taps;           /* up × width, reversed and padded (see above) */
    double *buf;            /* width − 1 samples of history, then a call's input */
    Py_ssize_t cap;         /* capacity of buf, in samples */
    long long n_in;         /* input samples since the start of the stream */
    long long n_out;        /* output samples released */
    long long base;         /* b of the next output (absolute input index) */
    int64_t phase;          /* p of the next output */
} Polyphase;

/* Outputs from the samples in buf: the one with base b reads buf[b − n_in .. b − n_in + Tp − 1]
 * (the caller guarantees b − n_in ≥ 0 for the first and b ≤ n_in + n − 1 for the last). */
CLONES static void
run(const double *restrict taps, const double *restrict buf, Py_ssize_t width, int64_t up,
    int64_t down, long long n_in, long long base, int64_t phase, Py_ssize_t count,
    unsigned char *restrict out)
{
    const int64_t step_b = down / up, step_p = down % up;
    for (Py_ssize_t j = 0; j < count; j++) {
        const double *h = taps + phase * width;
        const double *x = buf + (base - n_in);
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (Py_ssize_t k = 0; k < width; k += W) {
            a0 += h[k] * x[k];
            a1 += h[k + 1] * x[k + 1];
            a2 += h[k + 2] * x[k + 2];
            a3 += h[k + 3] * x[k + 3];
            a4 += h[k + 4] * x[k + 4];
            a5 += h[k + 5] * x[k + 5];
            a6 += h[k + 6] * x[k + 6];
            a7 += h[k + 7] * x[k + 7];
        }
        double y = rint(((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)));
        long v = y < -32768.0 ? -32768 : y > 32767.0 ? 32767 : (long)y;
        out[2 * j] = (unsigned char)(v & 0xff); /* little-endian pcm16 on any host */
        out[2 * j + 1] = (unsigned char)((v >> 8) & 0xff);
        base += step_b;
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
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Polyphase_process(Polyphase *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "process() takes 1 argument (pcm16 bytes), got %zd",
                     nargs);
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
    if (hist + n > self->cap) {
        Py_ssize_t cap = 2 * (hist + n);
        double *grown = PyMem_Realloc(self->buf, (size_t)cap * sizeof(double));
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done;
        }
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
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(2 * count));
    if (result == NULL)
        goto done;
    if (count) {
        run(self->taps, self->buf, self->width, self->up, self->down, self->n_in, self->base,
            self->phase, (Py_ssize_t)count, (unsigned char *)PyBytes_AS_STRING(result));
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
