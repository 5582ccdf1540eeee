/* G.711 mu-law and A-law on 16-bit little-endian PCM, bit-exact with CPython's audioop.
 *
 * Algorithm. audioop (lin2ulaw/ulaw2lin/lin2alaw/alaw2lin, width 2) implements the ITU-T G.711
 * segment coder: mu-law keeps the top 14 bits of a sample (sample >> 2, rounding toward minus
 * infinity), adds the bias 33, finds the segment (the first of 0x3F, 0x7F, ..., 0x1FFF the
 * magnitude does not exceed), keeps 4 mantissa bits and inverts the code; A-law keeps the top
 * 13 bits (sample >> 3), takes the one's-complement magnitude of negative values, finds the
 * segment among 0x1F ... 0xFFF, keeps 4 mantissa bits and inverts the even bits (xor 0x55).
 *
 * Because a code depends on the top 14 (mu-law) or 13 (A-law) bits only, encoding is one table
 * lookup per sample: 16,384 and 8,192 entries indexed by the sample's uint16 bits shifted right
 * by 2 and 3 (the low bits of an arithmetic and a logical shift agree). Decoding is a 256-entry
 * table of int16 samples, stored as their little-endian byte patterns so that the output is
 * little-endian on any host. The tables are computed once per module object, when it is
 * executed, by the same segment search audioop runs (st_14linear2ulaw, st_linear2alaw,
 * st_ulaw2linear16, st_alaw2linear16), and live in the module's state: no global variables.
 *
 * The pure twins are the numpy tables in stages/g711.py (numpy_encode_ulaw and friends): the
 * same bytes for every input, and the same UsageError for pcm16 of an odd byte count.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ULAW_ENTRIES 16384 /* 14-bit values */
/* Inputs of at least this many samples are converted with the GIL released (a whole recording,
 * say); a 20 ms frame is far below it, where releasing would cost more than the loop. The input
 * cannot change meanwhile: bytes are immutable, other buffers are held exported. */
#define RELEASE_GIL_SAMPLES 65536
#define ALAW_ENTRIES 8192  /* 13-bit values */

typedef struct {
    uint8_t ulaw_enc[ULAW_ENTRIES];
    uint8_t alaw_enc[ALAW_ENTRIES];
    uint16_t ulaw_dec[256]; /* little-endian byte pattern of the int16 sample */
    uint16_t alaw_dec[256];
    PyObject *usage_error; /* pipeline.errors.UsageError */
    PyObject *pcmu;        /* the interned encoding names */
    PyObject *pcma;
} g711_state;

static inline g711_state *
state_of(PyObject *module)
{
    return (g711_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ the tables (audioop's) */

static const int seg_uend[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
static const int seg_aend[8] = {0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};

static int
search(int val, const int *table, int size)
{
    for (int i = 0; i < size; i++) {
        if (val <= table[i])
            return i;
    }
    return size;
}

static uint8_t
ulaw_from_14bit(int v)
{
    int mask;
    if (v < 0) {
        v = -v;
        mask = 0x7F;
    }
    else {
        mask = 0xFF;
    }
    if (v > 32635) /* audioop's CLIP; a 14-bit magnitude never reaches it */
        v = 32635;
    v += 0x84 >> 2;
    int seg = search(v, seg_uend, 8);
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    return (uint8_t)(((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask);
}

static uint8_t
alaw_from_13bit(int v)
{
    int mask;
    if (v >= 0) {
        mask = 0xD5;
    }
    else {
        mask = 0x55;
        v = -v - 1;
    }
    int seg = search(v, seg_aend, 8);
    if (seg >= 8)
        return (uint8_t)(0x7F ^ mask);
    int aval = seg << 4;
    aval |= (seg < 2 ? (v >> 1) : (v >> seg)) & 0xF;
    return (uint8_t)(aval ^ mask);
}

static int
ulaw_to_linear(uint8_t code)
{
    int u = ~code & 0xFF;
    int t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4);
    return (u & 0x80) ? (0x84 - t) : (t - 0x84);
}

static int
alaw_to_linear(uint8_t code)
{
    int a = code ^ 0x55;
    int t = (a & 0xF) << 4;
    int seg = (a & 0x70) >> 4;
    if (seg == 0)
        t += 8;
    else
        t = (t + 0x108) << (seg - 1);
    return (a & 0x80) ? t : -t;
}

/* The in-memory pattern of a uint16 whose bytes are lo, hi: what memcpy of it writes. */
static uint16_t
little_endian(int sample)
{
    uint8_t bytes[2] = {(uint8_t)(sample & 0xFF), (uint8_t)((sample >> 8) & 0xFF)};
    uint16_t out;
    memcpy(&out, bytes, 2);
    return out;
}

static void
fill_tables(g711_state *st)
{
    for (int i = 0; i < ULAW_ENTRIES; i++)
        st->ulaw_enc[i] = ulaw_from_14bit(i >= ULAW_ENTRIES / 2 ? i - ULAW_ENTRIES : i);
    for (int i = 0; i < ALAW_ENTRIES; i++)
        st->alaw_enc[i] = alaw_from_13bit(i >= ALAW_ENTRIES / 2 ? i - ALAW_ENTRIES : i);
    for (int c = 0; c < 256; c++) {
        st->ulaw_dec[c] = little_endian(ulaw_to_linear((uint8_t)c));
        st->alaw_dec[c] = little_endian(alaw_to_linear((uint8_t)c));
    }
}

/* ------------------------------------------------------------------ the loops */

static void
encode_loop(const uint8_t *table, int shift, const unsigned char *in, unsigned char *out,
            Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned int bits = (unsigned int)in[2 * i] | ((unsigned int)in[2 * i + 1] << 8);
        out[i] = table[bits >> shift];
    }
}

static void
decode_loop(const uint16_t *table, const unsigned char *in, unsigned char *out, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        memcpy(out + 2 * i, &table[in[i]], 2);
}

/* The bytes of ``obj``: straight from a bytes object, else through the buffer protocol (the
 * caller releases ``view`` when ``*owned``). */
static int
get_bytes(PyObject *obj, Py_buffer *view, int *owned, const unsigned char **data, Py_ssize_t *len)
{
    if (PyBytes_CheckExact(obj)) {
        *owned = 0;
        *data = (const unsigned char *)PyBytes_AS_STRING(obj);
        *len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    *owned = 1;
    *data = (const unsigned char *)view->buf;
    *len = view->len;
    return 0;
}

static PyObject *
encode_with(g711_state *st, const uint8_t *table, int shift, PyObject *pcm)
{
    Py_buffer view;
    int owned;
    const unsigned char *in;
    Py_ssize_t len;
    if (get_bytes(pcm, &view, &owned, &in, &len) < 0)
        return NULL;
    PyObject *out = NULL;
    if (len & 1) {
        PyErr_Format(st->usage_error,
                     "pcm16 audio must be a whole number of 2-byte samples, got %zd", len);
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, len / 2);
        if (out != NULL) {
            unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
            if (len / 2 >= RELEASE_GIL_SAMPLES) {
                Py_BEGIN_ALLOW_THREADS
                encode_loop(table, shift, in, dst, len / 2);
                Py_END_ALLOW_THREADS
            }
            else {
                encode_loop(table, shift, in, dst, len / 2);
            }
        }
    }
    if (owned)
        PyBuffer_Release(&view);
    return out;
}

static PyObject *
decode_with(const uint16_t *table, PyObject *codes)
{
    Py_buffer view;
    int owned;
    const unsigned char *in;
    Py_ssize_t len;
    if (get_bytes(codes, &view, &owned, &in, &len) < 0)
        return NULL;
    PyObject *out = NULL;
    if (len > PY_SSIZE_T_MAX / 2) {
        PyErr_Format(PyExc_OverflowError,
                     "%zd G.711 codes decode to more bytes than a bytes object holds; decode "
                     "them in smaller pieces", len);
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, 2 * len);
        if (out != NULL) {
            unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
            if (len >= RELEASE_GIL_SAMPLES) {
                Py_BEGIN_ALLOW_THREADS
                decode_loop(table, in, dst, len);
                Py_END_ALLOW_THREADS
            }
            else {
                decode_loop(table, in, dst, len);
            }
        }
    }
    if (owned)
        PyBuffer_Release(&view);
    return out;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd argument%s (%zd given)", name,
                 expected, expected == 1 ? "" : "s", nargs);
    return -1;
}

/* 1 for "pcmu", 2 for "pcma", 0 for anything else (as ``==`` in the pure twin decides). */
static int
which_law(g711_state *st, PyObject *encoding)
{
    if (encoding == st->pcmu)
        return 1;
    if (encoding == st->pcma)
        return 2;
    if (!PyUnicode_CheckExact(encoding))
        return 0; /* a str subclass or another type: compared the slow way below */
    if (PyUnicode_GET_LENGTH(encoding) != 4)
        return 0;
    if (PyUnicode_Compare(encoding, st->pcmu) == 0)
        return 1;
    if (PyUnicode_Compare(encoding, st->pcma) == 0)
        return 2;
    return 0;
}

/* The general case of which_law for objects that are not exact str: their own ``==``. */
static int
which_law_slow(g711_state *st, PyObject *encoding)
{
    int eq = PyObject_RichCompareBool(encoding, st->pcmu, Py_EQ);
    if (eq != 0)
        return eq < 0 ? -1 : 1;
    eq = PyObject_RichCompareBool(encoding, st->pcma, Py_EQ);
    if (eq != 0)
        return eq < 0 ? -1 : 2;
    return 0;
}

static int
law_of(g711_state *st, PyObject *encoding)
{
    int law = which_law(st, encoding);
    if (law == 0 && !PyUnicode_CheckExact(encoding))
        law = which_law_slow(st, encoding);
    return law;
}

/* ------------------------------------------------------------------ the functions */

static PyObject *
encode_ulaw(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("encode_ulaw", nargs, 1) < 0)
        return NULL;
    g711_state *st = state_of(module);
    return encode_with(st, st->ulaw_enc, 2, args[0]);
}

static PyObject *
encode_alaw(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("encode_alaw", nargs, 1) < 0)
        return NULL;
    g711_state *st = state_of(module);
    return encode_with(st, st->alaw_enc, 3, args[0]);
}

static PyObject *
decode_ulaw(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("decode_ulaw", nargs, 1) < 0)
        return NULL;
    return decode_with(state_of(module)->ulaw_dec, args[0]);
}

static PyObject *
decode_alaw(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("decode_alaw", nargs, 1) < 0)
        return NULL;
    return decode_with(state_of(module)->alaw_dec, args[0]);
}

static PyObject *
encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("encode", nargs, 2) < 0)
        return NULL;
    g711_state *st = state_of(module);
    switch (law_of(st, args[1])) {
    case 1:
        return encode_with(st, st->ulaw_enc, 2, args[0]);
    case 2:
        return encode_with(st, st->alaw_enc, 3, args[0]);
    case 0:
        return Py_NewRef(args[0]);
    default:
        return NULL;
    }
}

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("decode", nargs, 2) < 0)
        return NULL;
    g711_state *st = state_of(module);
    switch (law_of(st, args[1])) {
    case 1:
        return decode_with(st->ulaw_dec, args[0]);
    case 2:
        return decode_with(st->alaw_dec, args[0]);
    case 0:
        return Py_NewRef(args[0]);
    default:
        return NULL;
    }
}

#define FASTCALL(fn) (PyCFunction)(void (*)(void))(fn), METH_FASTCALL

static PyMethodDef methods[] = {
    {"encode_ulaw", FASTCALL(encode_ulaw),
     "encode_ulaw(pcm) -> bytes: mu-law codes for little-endian int16 samples"},
    {"encode_alaw", FASTCALL(encode_alaw),
     "encode_alaw(pcm) -> bytes: A-law codes for little-endian int16 samples"},
    {"decode_ulaw", FASTCALL(decode_ulaw),
     "decode_ulaw(codes) -> bytes: little-endian int16 samples for mu-law codes"},
    {"decode_alaw", FASTCALL(decode_alaw),
     "decode_alaw(codes) -> bytes: little-endian int16 samples for A-law codes"},
    {"encode", FASTCALL(encode),
     "encode(pcm, encoding) -> bytes: pcm16 in 'pcmu' or 'pcma'; any other encoding returns "
     "pcm itself"},
    {"decode", FASTCALL(decode),
     "decode(data, encoding) -> bytes: pcm16 for 'pcmu' or 'pcma' data; any other encoding "
     "returns data itself"},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ the module */

static int
module_exec(PyObject *module)
{
    g711_state *st = state_of(module);
    fill_tables(st);
    PyObject *errors = PyImport_ImportModule("pipeline.errors");
    if (errors == NULL)
        return -1;
    st->usage_error = PyObject_GetAttrString(errors, "UsageError");
    Py_DECREF(errors);
    if (st->usage_error == NULL)
        return -1;
    st->pcmu = PyUnicode_InternFromString("pcmu");
    st->pcma = PyUnicode_InternFromString("pcma");
    if (st->pcmu == NULL || st->pcma == NULL)
        return -1;
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    g711_state *st = state_of(module);
    if (st != NULL) {
        Py_VISIT(st->usage_error);
        Py_VISIT(st->pcmu);
        Py_VISIT(st->pcma);
    }
    return 0;
}

static int
module_clear(PyObject *module)
{
    g711_state *st = state_of(module);
    if (st != NULL) {
        Py_CLEAR(st->usage_error);
        Py_CLEAR(st->pcmu);
        Py_CLEAR(st->pcma);
    }
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_cg711",
    "G.711 mu-law and A-law codecs, bit-exact with audioop (see stages/g711.py).",
    sizeof(g711_state),
    methods,
    slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC
PyInit__cg711(void)
{
    return PyModuleDef_Init(&module_def);
}
