/* The realtime wire's two per-frame messages, without the JSON library's objects.
 *
 * Every 20 ms of a call the client sends one input_audio_buffer.append and reads one audio
 * delta from the model. In Python each costs a dict, a JSON pass and a base64 string besides
 * the message; here each is one pass over the bytes.
 *
 * append(audio, event_id) -> str | None
 *     The message {"type":"input_audio_buffer.append","event_id":"<id>","audio":"<base64>"}
 *     written straight into one ASCII str: the same characters orjson.dumps gives for that dict
 *     (the base64 alphabet needs no JSON escaping). None when the id is not a str of plain
 *     printable ASCII without '"' or '\' (JSON may escape it), or the audio is not
 *     bytes-like: then the caller's general path (stages/realtime/wire/client.py,
 *     encode_append) writes the message or raises its own error.
 *
 * audio_delta(message, names) -> (audio, response_id, item_id) | None
 *     The decoded audio and ids of an audio delta in the shape the servers send it: one flat
 *     JSON object whose "type" is one of the strings in the tuple `names`, with a "delta"
 *     string of canonical base64 and "response_id" / "item_id" strings (or null, or absent:
 *     ""). It answers only when the answer is certain to be the one the checked path gives
 *     (orjson.loads, then the strict base64 decode and the handler's str(... or "")); on
 *     anything else it returns None and the checked path reads the message, errors included:
 *       - the text is not ASCII, or not one JSON object of members whose values are strings
 *         without escapes or control characters, integers of at most 18 digits, true, false or
 *         null (nesting, fractions, exponents, escapes: None);
 *       - a key holds an escape, or one of the four keys above appears twice;
 *       - "type" is missing or not one of `names`, "delta" is missing or not a string, an id
 *         is neither a string nor null;
 *       - the base64 is not canonical: a length not a multiple of 4, a character outside the
 *         standard alphabet, padding other than one or two '=' at the end, or non-zero bits in
 *         the last character before the padding.
 *     Values of other keys are checked for their JSON syntax only (the checked path ignores
 *     them too).
 *
 * DeltaReader(cls, fields, names).read(message) -> cls | None
 *     audio_delta(message, names) as the event itself: an instance of the slotted class cls
 *     (the frozen dataclass AudioDeltaEvent) with its slots `fields` (audio, response_id,
 *     item_id, discarded) stored directly, discarded False, as its __init__ stores them, with
 *     no tuple in between. The reader, a Python-owned object, keeps the class, the slots'
 *     offsets (checked when it is made) and the names.
 *
 * Base64 is the standard alphabet, three bytes to four characters and back, by table lookups:
 * encoding looks up two characters per 12 bits (six bytes, eight characters, one store a step);
 * decoding ORs one table per position of a quad into the three bytes and a flag byte that marks
 * a character outside the alphabet (one 4-byte store per quad). The tables are constants,
 * filled when the module loads for the machine's byte order; plain C, no intrinsics. Nothing
 * here keeps state between calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#include <stdint.h>
#include <string.h>

static const char B64[65] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/* character -> its 6-bit value, 0x80 for a character outside the alphabet (filled once) */
static unsigned char DEC[256];
/* Decoding four characters at a time: DQ[k][c] is character c's bits in position k of a quad,
 * laid out so that the OR of the four, stored as 4 bytes, is the 3 decoded bytes then a byte
 * that is BAD_BYTE (0x80) for a character outside the alphabet (filled once, for the
 * machine's byte order). */
static uint32_t DQ[4][256];
/* Encoding three bytes at a time: ENC2[v] is the two characters of the 12 bits v, in memory
 * order (filled once). */
static uint16_t ENC2[4096];

static const char APPEND_HEAD[] = "{\"type\":\"input_audio_buffer.append\",\"event_id\":\"";
static const char APPEND_MID[] = "\",\"audio\":\"";
static const char APPEND_TAIL[] = "\"}";

static void
b64_encode(const unsigned char *src, Py_ssize_t n, unsigned char *out)
{
    Py_ssize_t i = 0;
    /* six bytes to eight characters a step (independent lookups, one store), then threes */
    for (; i + 6 <= n; i += 6) {
        uint32_t v = ((uint32_t)src[i] << 16) | ((uint32_t)src[i + 1] << 8) | src[i + 2];
        uint32_t w = ((uint32_t)src[i + 3] << 16) | ((uint32_t)src[i + 4] << 8) | src[i + 5];
        uint16_t q[4] = {ENC2[v >> 12], ENC2[v & 4095], ENC2[w >> 12], ENC2[w & 4095]};
        memcpy(out, q, 8);
        out += 8;
    }
    for (; i + 3 <= n; i += 3) {
        unsigned v = ((unsigned)src[i] << 16) | ((unsigned)src[i + 1] << 8) | src[i + 2];
        memcpy(out, &ENC2[v >> 12], 2);
        memcpy(out + 2, &ENC2[v & 4095], 2);
        out += 4;
    }
    if (n - i == 1) {
        unsigned v = (unsigned)src[i] << 16;
        out[0] = (unsigned char)B64[v >> 18];
        out[1] = (unsigned char)B64[(v >> 12) & 63];
        out[2] = '=';
        out[3] = '=';
    }
    else if (n - i == 2) {
        unsigned v = ((unsigned)src[i] << 16) | ((unsigned)src[i + 1] << 8);
        out[0] = (unsigned char)B64[v >> 18];
        out[1] = (unsigned char)B64[(v >> 12) & 63];
        out[2] = (unsigned char)B64[(v >> 6) & 63];
        out[3] = '=';
    }
}

/* The bytes of canonical base64 `s` (length n), or NULL with no exception set when it is not
 * canonical (or NULL with MemoryError). */
static PyObject *
b64_decode(const unsigned char *s, Py_ssize_t n)
{
    if (n % 4)
        return NULL;
    Py_ssize_t pad = 0;
    if (n && s[n - 1] == '=')
        pad = (n >= 2 && s[n - 2] == '=') ? 2 : 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n / 4 * 3 - pad);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t full = pad ? n - 4 : n; /* the quads with no padding */
    unsigned bad = 0;
    Py_ssize_t i = 0;
    /* four bytes stored per quad (the fourth overwritten by the next): all quads but the
     * last full one this way, that one byte by byte (the bytes object has no spare byte) */
    uint32_t badq = 0;
    for (; i + 4 < full; i += 4) {
        uint32_t x = DQ[0][s[i]] | DQ[1][s[i + 1]] | DQ[2][s[i + 2]] | DQ[3][s[i + 3]];
        badq |= x;
        memcpy(o, &x, 4);
        o += 3;
    }
    {
        unsigned char tmp[4];
        memcpy(tmp, &badq, 4);
        bad |= tmp[3];
    }
    for (; i < full; i += 4) {
        unsigned a = DEC[s[i]], b = DEC[s[i + 1]], c = DEC[s[i + 2]], d = DEC[s[i + 3]];
        bad |= a | b | c | d;
        unsigned v = (a << 18) | (b << 12) | (c << 6) | d;
        o[0] = (unsigned char)(v >> 16);
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
        o += 3;
    }
    if (pad) {
        unsigned a = DEC[s[i]], b = DEC[s[i + 1]];
        unsigned c = pad == 1 ? DEC[s[i + 2]] : 0;
        bad |= a | b | c;
        /* the bits past the last whole byte must be zero (else the text is not canonical) */
        if (pad == 2 && (b & 15))
            bad |= 0x80;
        if (pad == 1 && (c & 3))
            bad |= 0x80;
        unsigned v = (a << 18) | (b << 12) | (c << 6);
        o[0] = (unsigned char)(v >> 16);
        if (pad == 1)
            o[1] = (unsigned char)(v >> 8);
    }
    if (bad & 0x80) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------------------ append */

static PyObject *
append(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "append() takes 2 arguments (audio, event_id), got %zd", nargs);
        return NULL;
    }
    PyObject *id = args[1];
    if (!PyUnicode_Check(id) || !PyUnicode_IS_ASCII(id))
        Py_RETURN_NONE; /* the general path writes it, or refuses it with its own error */
    Py_ssize_t id_len = PyUnicode_GET_LENGTH(id);
    const unsigned char *id_s = PyUnicode_1BYTE_DATA(id);
    for (Py_ssize_t i = 0; i < id_len; i++) {
        unsigned char c = id_s[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            Py_RETURN_NONE; /* JSON escapes it (or the general path refuses it) */
    }
    Py_buffer view;
    if (!PyObject_CheckBuffer(args[0]))
        Py_RETURN_NONE; /* not bytes-like: the general path's error */
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = view.len;
    if (n > (PY_SSIZE_T_MAX - 256 - id_len) / 4 * 3) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_OverflowError,
                     "append(): %zd bytes of audio do not fit in one message; send it in "
                     "pieces of 20-100 ms", n);
        return NULL;
    }
    Py_ssize_t b64_len = (n + 2) / 3 * 4;
    Py_ssize_t head = (Py_ssize_t)sizeof(APPEND_HEAD) - 1;
    Py_ssize_t mid = (Py_ssize_t)sizeof(APPEND_MID) - 1;
    Py_ssize_t tail = (Py_ssize_t)sizeof(APPEND_TAIL) - 1;
    PyObject *out = PyUnicode_New(head + id_len + mid + b64_len + tail, 127);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *o = PyUnicode_1BYTE_DATA(out);
    memcpy(o, APPEND_HEAD, (size_t)head);
    o += head;
    memcpy(o, id_s, (size_t)id_len);
    o += id_len;
    memcpy(o, APPEND_MID, (size_t)mid);
    o += mid;
    b64_encode((const unsigned char *)view.buf, n, o);
    o += b64_len;
    memcpy(o, APPEND_TAIL, (size_t)tail);
    PyBuffer_Release(&view);
    return out;
}

/* ------------------------------------------------------------------------------ audio_delta */

typedef struct {
    const unsigned char *p; /* start of the string's characters (after the quote) */
    Py_ssize_t len;
    int set;  /* the key was seen */
    int null; /* its value was null */
} Field;

static inline const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* A string without escapes or control characters from p (at the opening quote): its end (past
 * the closing quote), or NULL. ASCII is checked by the caller for the whole text. */
static inline const unsigned char *
scan_string(const unsigned char *p, const unsigned char *end)
{
    if (p >= end || *p != '"')
        return NULL;
    p++;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\' || c < 0x20)
            return NULL;
        p++;
    }
    return NULL;
}

/* A value other than a string (an integer of at most 18 digits, true, false, null): its end,
 * or NULL. `is_null` is set for null. */
static inline const unsigned char *
scan_scalar(const unsigned char *p, const unsigned char *end, int *is_null)
{
    *is_null = 0;
    if (p >= end)
        return NULL;
    if (*p == 't')
        return (end - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
    if (*p == 'f')
        return (end - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
    if (*p == 'n') {
        *is_null = 1;
        return (end - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
    }
    if (*p == '-')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    const unsigned char *digits = p;
    if (*p == '0')
        p++;
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    if (p - digits > 18)
        return NULL;
    if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))
        return NULL; /* a leading zero, a fraction, an exponent: the checked path decides */
    return p;
}

#define KEY_IS(k, klen, lit) ((klen) == (Py_ssize_t)sizeof(lit) - 1 && memcmp((k), lit, (klen)) == 0)

static PyObject *
field_str(const Field *f)
{
    if (!f->set || f->null)
        return PyUnicode_New(0, 0);
    PyObject *s = PyUnicode_New(f->len, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), f->p, (size_t)f->len);
    return s;
}

/* The parts of an audio delta (see the top of the file): 1 with out[0..2] set to new
 * references, 0 when the checked path must read the message, -1 with an exception set. */
static int
read_delta(PyObject *message, PyObject *names, PyObject **out)
{
    const unsigned char *p, *end;
    if (PyUnicode_Check(message)) {
        if (!PyUnicode_IS_ASCII(message))
            return 0;
        p = PyUnicode_1BYTE_DATA(message);
        end = p + PyUnicode_GET_LENGTH(message);
    }
    else if (PyBytes_Check(message)) {
        p = (const unsigned char *)PyBytes_AS_STRING(message);
        end = p + PyBytes_GET_SIZE(message);
        for (const unsigned char *q = p; q < end; q++)
            if (*q >= 0x80)
                return 0;
    }
    else
        return 0;

    Field type = {0}, delta = {0}, rid = {0}, item = {0};
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return 0; /* no type */
    for (;;) {
        const unsigned char *key = p + 1;
        const unsigned char *q = scan_string(p, end);
        if (q == NULL)
            return 0;
        Py_ssize_t klen = q - 1 - key;
        p = skip_ws(q, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        if (p >= end)
            return 0;
        Field *f = NULL;
        if (KEY_IS(key, klen, "type"))
            f = &type;
        else if (KEY_IS(key, klen, "delta"))
            f = &delta;
        else if (KEY_IS(key, klen, "response_id"))
            f = &rid;
        else if (KEY_IS(key, klen, "item_id"))
            f = &item;
        if (f != NULL) {
            if (f->set)
                return 0; /* twice: the checked path takes the last one */
            f->set = 1;
        }
        if (*p == '"' && f == &delta) {
            /* the audio: up to the next quote; every character in between is checked by the
             * base64 decode (no escape, no control character is in its alphabet) */
            q = memchr(p + 1, '"', (size_t)(end - p - 1));
            if (q == NULL)
                return 0;
            q++;
            f->p = p + 1;
            f->len = q - 1 - (p + 1);
        }
        else if (*p == '"') {
            q = scan_string(p, end);
            if (q == NULL)
                return 0;
            if (f != NULL) {
                f->p = p + 1;
                f->len = q - 1 - (p + 1);
            }
        }
        else {
            int is_null;
            q = scan_scalar(p, end, &is_null);
            if (q == NULL)
                return 0;
            /* only the ids may be null; any other value of the four keys: the checked path */
            if (f != NULL && !(is_null && (f == &rid || f == &item)))
                return 0;
            if (f != NULL)
                f->null = 1;
        }
        p = skip_ws(q, end);
        if (p >= end)
            return 0;
        if (*p == '}')
            break;
        if (*p != ',')
            return 0;
        p = skip_ws(p + 1, end);
    }
    if (skip_ws(p + 1, end) != end)
        return 0;
    if (!type.set || !delta.set)
        return 0;
    int known = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i); /* (checked: ASCII str) */
        if (PyUnicode_GET_LENGTH(name) == type.len &&
            memcmp(PyUnicode_1BYTE_DATA(name), type.p, (size_t)type.len) == 0) {
            known = 1;
            break;
        }
    }
    if (!known)
        return 0;
    PyObject *data = b64_decode(delta.p, delta.len);
    if (data == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *r = field_str(&rid);
    PyObject *it = r ? field_str(&item) : NULL;
    if (it == NULL) {
        Py_DECREF(data);
        Py_XDECREF(r);
        return -1;
    }
    out[0] = data;
    out[1] = r;
    out[2] = it;
    return 1;
}

static int
check_names(PyObject *names, const char *who)
{
    if (!PyTuple_Check(names)) {
        PyErr_Format(PyExc_TypeError, "%s: names must be a tuple of ASCII str, not %.100s", who,
                     Py_TYPE(names)->tp_name);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name)) {
            PyErr_Format(PyExc_TypeError, "%s: names[%zd] is %R; event names are ASCII str", who,
                         i, name);
            return -1;
        }
    }
    return 0;
}

static PyObject *
audio_delta(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "audio_delta() takes 2 arguments (message, names), got %zd", nargs);
        return NULL;
    }
    if (check_names(args[1], "audio_delta()") < 0)
        return NULL;
    PyObject *parts[3];
    int got = read_delta(args[0], args[1], parts);
    if (got < 0)
        return NULL;
    if (got == 0)
        Py_RETURN_NONE;
    PyObject *out = PyTuple_New(3);
    if (out == NULL) {
        for (int i = 0; i < 3; i++)
            Py_DECREF(parts[i]);
        return NULL;
    }
    for (int i = 0; i < 3; i++)
        PyTuple_SET_ITEM(out, i, parts[i]);
    return out;
}

/* ------------------------------------------------------------------------------ DeltaReader */

/* DeltaReader(cls, fields, names): read(message) is audio_delta(message, names) as an instance
 * of cls (a slotted class, e.g. a frozen dataclass) with its four object slots `fields`
 * (audio, response_id, item_id, discarded) stored directly, discarded False, as the class's
 * __init__ would store them; None where audio_delta says None. The class and the slots'
 * offsets are checked and kept here, in the object Python owns. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    PyObject *names;
    Py_ssize_t offsets[4];
} DeltaReader;

static void
reader_dealloc(DeltaReader *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->names);
    PyObject_GC_Del(self);
}

static int
reader_traverse(DeltaReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cls);
    Py_VISIT(self->names);
    return 0;
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *cls, *fields, *names;
    if (!PyArg_ParseTuple(args, "O!O!O:DeltaReader", &PyType_Type, &cls, &PyTuple_Type,
                          &fields, &names))
        return NULL;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "DeltaReader(cls, fields, names) takes no keywords");
        return NULL;
    }
    if (check_names(names, "DeltaReader()") < 0)
        return NULL;
    if (PyTuple_GET_SIZE(fields) != 4) {
        PyErr_Format(PyExc_ValueError,
                     "DeltaReader(): 4 slot names expected (audio, response_id, item_id, "
                     "discarded), got %zd", PyTuple_GET_SIZE(fields));
        return NULL;
    }
    PyTypeObject *ct = (PyTypeObject *)cls;
    Py_ssize_t offsets[4];
    for (Py_ssize_t i = 0; i < 4; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        PyObject *descr = PyDict_GetItemWithError(ct->tp_dict, name);
        if (descr == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "DeltaReader(): %R has no slot %R", cls, name);
            return NULL;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "DeltaReader(): %R.%U is not a slot", cls, name);
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != Py_T_OBJECT_EX || member->offset <= 0 ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > ct->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "DeltaReader(): %R.%U is not an object slot", cls,
                         name);
            return NULL;
        }
        offsets[i] = member->offset;
    }
    DeltaReader *self = PyObject_GC_New(DeltaReader, type);
    if (self == NULL)
        return NULL;
    Py_INCREF(cls);
    self->cls = ct;
    Py_INCREF(names);
    self->names = names;
    memcpy(self->offsets, offsets, sizeof(offsets));
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
reader_read(DeltaReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "read() takes 1 argument (message), got %zd", nargs);
        return NULL;
    }
    PyObject *parts[4];
    int got = read_delta(args[0], self->names, parts);
    if (got < 0)
        return NULL;
    if (got == 0)
        Py_RETURN_NONE;
    Py_INCREF(Py_False);
    parts[3] = Py_False;
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) {
        for (int i = 0; i < 4; i++)
            Py_DECREF(parts[i]);
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        *(PyObject **)((char *)obj + self->offsets[i]) = parts[i]; /* (references moved) */
    return obj;
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))reader_read, METH_FASTCALL,
     "read(message) -> the event, or None for anything the checked path must read."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DeltaReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stages.realtime.wire._cwire.DeltaReader",
    .tp_basicsize = sizeof(DeltaReader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "DeltaReader(cls, fields, names): audio deltas read straight into events.",
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_methods = reader_methods,
    .tp_new = reader_new,
};


static PyMethodDef methods[] = {
    {"append", (PyCFunction)(void (*)(void))append, METH_FASTCALL,
     "append(audio, event_id) -> str | None: the input_audio_buffer.append message, as "
     "orjson writes it; None when the id would need JSON escaping."},
    {"audio_delta", (PyCFunction)(void (*)(void))audio_delta, METH_FASTCALL,
     "audio_delta(message, names) -> (audio, response_id, item_id) | None: an audio delta "
     "in the servers' shape, decoded; None for anything the checked path must read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cwire",
    "The realtime wire's append message and audio delta, without the JSON library's objects.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__cwire(void)
{
    memset(DEC, 0x80, sizeof(DEC));
    for (int i = 0; i < 64; i++)
        DEC[(unsigned char)B64[i]] = (unsigned char)i;
    for (int c = 0; c < 256; c++) {
        for (int k = 0; k < 4; k++) {
            /* the quad's 24 bits with this character's 6 at position k, as 3 bytes + flag */
            unsigned char bytes[4] = {0, 0, 0, 0};
            if (DEC[c] & 0x80)
                bytes[3] = 0x80;
            else {
                uint32_t v = (uint32_t)DEC[c] << (18 - 6 * k);
                bytes[0] = (unsigned char)(v >> 16);
                bytes[1] = (unsigned char)(v >> 8);
                bytes[2] = (unsigned char)v;
            }
            memcpy(&DQ[k][c], bytes, 4);
        }
    }
    for (int v = 0; v < 4096; v++) {
        unsigned char pair[2] = {(unsigned char)B64[v >> 6], (unsigned char)B64[v & 63]};
        memcpy(&ENC2[v], pair, 2);
    }
    if (PyType_Ready(&DeltaReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&DeltaReaderType);
    if (PyModule_AddObject(m, "DeltaReader", (PyObject *)&DeltaReaderType) < 0) {
        Py_DECREF(&DeltaReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
