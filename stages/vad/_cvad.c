/* The webrtc VAD engine's per-frame work: pre-emphasis, analysis windows, the decisions.
 *
 * Windows(size, a, decide, handle, rate) takes native-order int16 audio in pieces of any
 * length (process(data)) and cuts it into windows of `size` samples. Every sample is
 * pre-emphasised as it arrives,
 *
 *     y[n] = x[n] + floor(-a * x[n-1])      saturated to int16, x[-1] = 0 at the start,
 *
 * the arithmetic of audioop.add(x, audioop.mul(x shifted by one sample, 2, -a), 2): the product
 * in double, rounded towards minus infinity (clamped to int16 first, as audioop's fbound does,
 * which never changes a value for 0 <= a < 1), the sum saturated. Since y[n] needs only x[n-1],
 * emphasising on arrival gives the same samples as emphasising each window once it is complete,
 * as the pure-Python twin (stages/vad/engines.py, PureWindows) does.
 *
 * The window being filled is a bytes object this module has just made and shares with nobody;
 * when it is full it is handed to decide(handle, rate, window, size) through the vectorcall
 * protocol (webrtcvad's _webrtcvad.process, or any callable), and process() returns one score
 * per window completed by its data, 1.0 where decide's answer is true, 0.0 where it is false.
 * A partial window waits for the next call, with x[n-1] carried over. process_g711(codes, table)
 * does the same for G.711 codes (a byte a sample), each decoded through the codec's table of 256
 * int16 samples on its way in: one call for a telephony frame, no decoded copy.
 *
 * If decide raises, process() raises the same exception after consuming all its data, as the
 * pure twin does: the windows after the failing one in that call go unanalysed, and a partial
 * window at the end is kept.
 *
 * All state is per stream, in the Windows object: no global mutable state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *decide;  /* decide(handle, rate, window, samples) -> truthy */
    PyObject *handle;
    PyObject *rate;    /* int */
    PyObject *samples; /* int: samples per window */
    PyObject *pending; /* the window being filled (bytes, ours alone), or NULL */
    double minus_a;    /* -a */
    int emphasize;     /* a != 0 */
    int prev;          /* x[-1]: the last sample received */
    Py_ssize_t size;   /* samples per window */
    Py_ssize_t filled; /* samples of `pending` filled so far */
} Windows;

/* y[k] = x[k] + floor(-a x[k-1]) saturated, for k in [from, n), on aligned int16 arrays where
 * in[k - 1] is x[k-1] (the caller handles k = 0). audioop clamps the product to int16 before the
 * floor; for 0 <= a < 1 the product lies in (-32767, 32768), where that clamp and the floor
 * agree (only -32768 * a may pass 32767, and both make it 32767), so the floor alone is exact. */
static void
emphasize_scalar(int16_t *restrict out, const int16_t *restrict in, Py_ssize_t from,
                 Py_ssize_t n, double minus_a)
{
    for (Py_ssize_t k = from; k < n; k++) {
        double v = (double)in[k - 1] * minus_a;
        int t = (int)v; /* towards zero; one less where that rounded a negative product up */
        t -= (double)t > v;
        int y = in[k] + t;
        y = y > 32767 ? 32767 : y;
        y = y < -32768 ? -32768 : y;
        out[k] = (int16_t)y;
    }
}

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define HAVE_SSE2 1

/* floor(d * c) for the 2 doubles of d, as 2 int32 in the low half: the scalar steps above */
static inline __m128i
floor_product2(__m128d d, __m128d c)
{
    __m128d v = _mm_mul_pd(d, c);
    __m128i t = _mm_cvttpd_epi32(v);
    __m128d back = _mm_cvtepi32_pd(t);
    /* all ones (-1 as int32, from the low 32 bits of each 64-bit mask) where t > v */
    __m128i over = _mm_shuffle_epi32(_mm_castpd_si128(_mm_cmpgt_pd(back, v)), 0x08);
    return _mm_add_epi32(t, over);
}

/* 4 int16 as 4 int32 (sign-extended) */
static inline __m128i
widen4(const int16_t *p)
{
    __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)p);
    return _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16);
}

static inline __m128i
floor_product4(const int16_t *p, __m128d c)
{
    __m128i x = widen4(p);
    __m128i lo = floor_product2(_mm_cvtepi32_pd(x), c);
    __m128i hi = floor_product2(_mm_cvtepi32_pd(_mm_shuffle_epi32(x, 0xEE)), c);
    return _mm_unpacklo_epi64(lo, hi);
}
#endif

/* y[k] = x[k] + floor(-a x[k-1]) saturated, x[-1] = prev, on aligned int16 arrays: SSE2 on
 * x86-64 (the same IEEE double product, truncation and comparison, 8 samples a step; the int16
 * pack saturates as the scalar clamp does), the scalar loop elsewhere and for the tail. */
static void
emphasize_aligned(int16_t *restrict out, const int16_t *restrict in, Py_ssize_t n, int prev,
                  double minus_a)
{
    if (n <= 0)
        return;
    {
        double v = (double)prev * minus_a;
        int t = (int)v;
        t -= (double)t > v;
        int y = in[0] + t;
        out[0] = (int16_t)(y > 32767 ? 32767 : y < -32768 ? -32768 : y);
    }
    Py_ssize_t k = 1;
#ifdef HAVE_SSE2
    const __m128d c = _mm_set1_pd(minus_a);
    for (; k + 8 <= n; k += 8) {
        __m128i lo = _mm_add_epi32(widen4(in + k), floor_product4(in + k - 1, c));
        __m128i hi = _mm_add_epi32(widen4(in + k + 4), floor_product4(in + k + 3, c));
        _mm_storeu_si128((__m128i *)(void *)(out + k), _mm_packs_epi32(lo, hi));
    }
#endif
    emphasize_scalar(out, in, k, n, minus_a);
}

/* the same from a buffer of any alignment (a memoryview slice may start at an odd address) */
static void
emphasize_into(char *out, const char *in, Py_ssize_t n, int prev, double minus_a)
{
    if (((uintptr_t)in & 1) == 0) {
        emphasize_aligned((int16_t *)out, (const int16_t *)in, n, prev, minus_a);
        return;
    }
    int16_t tmp[256];
    while (n > 0) {
        Py_ssize_t m = n < 256 ? n : 256;
        memcpy(tmp, in, (size_t)(2 * m));
        emphasize_aligned((int16_t *)out, tmp, m, prev, minus_a);
        prev = tmp[m - 1];
        in += 2 * m;
        out += 2 * m;
        n -= m;
    }
}

static int
windows_traverse(Windows *self, visitproc visit, void *arg)
{
    Py_VISIT(self->decide);
    Py_VISIT(self->handle);
    return 0;
}

static int
windows_clear(Windows *self)
{
    Py_CLEAR(self->decide);
    Py_CLEAR(self->handle);
    Py_CLEAR(self->rate);
    Py_CLEAR(self->samples);
    Py_CLEAR(self->pending);
    return 0;
}

static void
windows_dealloc(Windows *self)
{
    PyObject_GC_UnTrack(self);
    windows_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
windows_init(Windows *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"size", "a", "decide", "handle", "rate", NULL};
    Py_ssize_t size;
    double a;
    PyObject *decide, *handle, *rate;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ndOOO!:Windows", names, &size, &a, &decide,
                                     &handle, &PyLong_Type, &rate))
        return -1;
    /* a window of a 48 kHz, 30 ms webrtc frame is 1440 samples; the bound only keeps the byte
     * count far from overflowing */
    if (size < 1 || size > (1 << 24)) {
        PyErr_Format(PyExc_ValueError,
                     "a VAD window of %zd samples; give 1 to %d samples (the engine's rate x "
                     "frame_ms / 1000)",
                     size, 1 << 24);
        return -1;
    }
    if (!(a >= 0.0 && a < 1.0)) {
        PyObject *value = PyFloat_FromDouble(a);
        if (value != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "pre-emphasis %R is out of range; give 0 (off) up to below 1", value);
            Py_DECREF(value);
        }
        return -1;
    }
    if (!PyCallable_Check(decide)) {
        PyErr_Format(PyExc_TypeError,
                     "decide must be callable as decide(handle, rate, window, samples), got %R",
                     decide);
        return -1;
    }
    PyObject *samples = PyLong_FromSsize_t(size);
    if (samples == NULL)
        return -1;
    Py_INCREF(decide);
    Py_INCREF(handle);
    Py_INCREF(rate);
    Py_XSETREF(self->decide, decide);
    Py_XSETREF(self->handle, handle);
    Py_XSETREF(self->rate, rate);
    Py_XSETREF(self->samples, samples);
    Py_CLEAR(self->pending);
    self->size = size;
    self->minus_a = -a;
    self->emphasize = a != 0.0;
    self->prev = 0;
    self->filled = 0;
    return 0;
}

/* consume n samples at in, deciding every window they complete into scores from item *done on
 * (scores has room for every window); after a failure (*failed set, an exception set) the
 * samples are still consumed but no window is decided */
static int
windows_feed(Windows *self, const char *in, Py_ssize_t n, PyObject *scores, Py_ssize_t *done,
             int *failed)
{
    Py_ssize_t i = 0;
    const Py_ssize_t size = self->size;
    while (i < n) {
        if (self->pending == NULL) {
            self->pending = PyBytes_FromStringAndSize(NULL, 2 * size);
            if (self->pending == NULL) {
                *failed = 1;
                return -1;
            }
            self->filled = 0;
        }
        char *w = PyBytes_AS_STRING(self->pending) + 2 * self->filled;
        Py_ssize_t take = size - self->filled;
        if (take > n - i)
            take = n - i;
        if (self->emphasize)
            emphasize_into(w, in + 2 * i, take, self->prev, self->minus_a);
        else
            memcpy(w, in + 2 * i, (size_t)(2 * take));
        int16_t last;
        memcpy(&last, in + 2 * (i + take - 1), 2);
        self->prev = last;
        i += take;
        self->filled += take;
        if (self->filled < size)
            break;
        PyObject *window = self->pending;
        self->pending = NULL;
        self->filled = 0;
        if (*failed) { /* consumed, not analysed: see the top of the file */
            Py_DECREF(window);
            continue;
        }
        PyObject *call[4] = {self->handle, self->rate, window, self->samples};
        PyObject *answer = PyObject_Vectorcall(self->decide, call, 4, NULL);
        Py_DECREF(window);
        int yes = answer == NULL ? -1 : PyObject_IsTrue(answer);
        Py_XDECREF(answer);
        if (yes < 0) {
            *failed = 1;
            continue;
        }
        PyObject *score = PyFloat_FromDouble(yes ? 1.0 : 0.0);
        if (score == NULL) {
            *failed = 1;
            continue;
        }
        PyList_SET_ITEM(scores, *done, score);
        (*done)++;
    }
    return *failed ? -1 : 0;
}

static PyObject *
windows_process(Windows *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "process() takes 1 argument (data), got %zd", nargs);
        return NULL;
    }
    if (self->decide == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Windows.__init__ was not called");
        return NULL;
    }
    PyObject *data = args[0];
    Py_buffer view;
    const char *in;
    Py_ssize_t nbytes;
    int bytes = PyBytes_CheckExact(data);
    if (bytes) {
        in = PyBytes_AS_STRING(data);
        nbytes = PyBytes_GET_SIZE(data);
    }
    else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        in = view.buf;
        nbytes = view.len;
    }
    PyObject *scores = NULL;
    if (nbytes & 1) {
        PyErr_Format(PyExc_ValueError,
                     "VAD audio of %zd bytes: int16 samples are 2 bytes each; pass whole samples",
                     nbytes);
        goto done;
    }
    Py_ssize_t n = nbytes / 2;
    scores = PyList_New((self->filled + n) / self->size);
    if (scores == NULL)
        goto done;
    Py_ssize_t done = 0;
    int failed = 0;
    if (windows_feed(self, in, n, scores, &done, &failed) < 0)
        Py_CLEAR(scores);
done:
    if (!bytes)
        PyBuffer_Release(&view);
    return scores;
}

static PyObject *
windows_process_g711(Windows *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "process_g711() takes 2 arguments (codes, table), got %zd",
                     nargs);
        return NULL;
    }
    if (self->decide == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Windows.__init__ was not called");
        return NULL;
    }
    PyObject *table = args[1];
    if (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) != 512) {
        PyErr_Format(PyExc_ValueError,
                     "a G.711 decode table is 256 native int16 samples (512 bytes), got %R; "
                     "pass the codec's table as bytes",
                     table);
        return NULL;
    }
    int16_t lut[256];
    memcpy(lut, PyBytes_AS_STRING(table), sizeof lut);
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *codes = view.buf;
    Py_ssize_t n = view.len;
    PyObject *scores = PyList_New((self->filled + n) / self->size);
    if (scores != NULL) {
        int16_t pcm[256]; /* decoded a block at a time, aligned for the pre-emphasis */
        Py_ssize_t done = 0;
        int failed = 0;
        for (Py_ssize_t at = 0; at < n; at += 256) {
            Py_ssize_t m = n - at < 256 ? n - at : 256;
            for (Py_ssize_t k = 0; k < m; k++)
                pcm[k] = lut[codes[at + k]];
            windows_feed(self, (const char *)pcm, m, scores, &done, &failed);
        }
        if (failed)
            Py_CLEAR(scores);
    }
    PyBuffer_Release(&view);
    return scores;
}

static PyObject *
windows_reset(Windows *self, PyObject *Py_UNUSED(unused))
{
    Py_CLEAR(self->pending);
    self->filled = 0;
    self->prev = 0;
    Py_RETURN_NONE;
}

static PyObject *
windows_get_pending(Windows *self, void *Py_UNUSED(closure))
{
    if (self->pending == NULL || self->filled == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->pending), 2 * self->filled);
}

static PyObject *
windows_get_prev(Windows *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->prev);
}

static PyMethodDef windows_methods[] = {
    {"process", (PyCFunction)(void (*)(void))windows_process, METH_FASTCALL,
     "process(data) -> list[float]: a score per window completed by these int16 samples."},
    {"process_g711", (PyCFunction)(void (*)(void))windows_process_g711, METH_FASTCALL,
     "process_g711(codes, table) -> list[float]: process() for G.711 codes, decoded through "
     "table (256 native int16 samples as bytes)."},
    {"reset", (PyCFunction)windows_reset, METH_NOARGS,
     "reset(): forget the partial window and the carried sample."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef windows_getset[] = {
    {"pending", (getter)windows_get_pending, NULL,
     "the partial window so far, pre-emphasised (bytes)", NULL},
    {"prev", (getter)windows_get_prev, NULL, "x[-1]: the last sample received", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WindowsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stages.vad._cvad.Windows",
    .tp_basicsize = sizeof(Windows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Windows(size, a, decide, handle, rate): pre-emphasised VAD windows, decided.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)windows_init,
    .tp_dealloc = (destructor)windows_dealloc,
    .tp_traverse = (traverseproc)windows_traverse,
    .tp_clear = (inquiry)windows_clear,
    .tp_methods = windows_methods,
    .tp_getset = windows_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cvad",
    "The webrtc VAD engine's pre-emphasis and windows, deciding each window through webrtcvad.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__cvad(void)
{
    if (PyType_Ready(&WindowsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WindowsType);
    if (PyModule_AddObject(m, "Windows", (PyObject *)&WindowsType) < 0) {
        Py_DECREF(&WindowsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
