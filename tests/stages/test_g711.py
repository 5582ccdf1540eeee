"""G.711: the three codecs (the compiled kernel, audioop, the tables) against audioop (≤ 3.12)
or stored digests and against each other; the stages on each."""

from __future__ import annotations

import gc
import hashlib
import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import FormatError, StageError, UsageError
from pipeline.frames import Audio, AudioFormat, Encoding, SpeechStarted, Transcript
from pipeline.spec import spec_for
from pipeline.testing import check_stage, run_stage
from stages import g711


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


audioop = _audioop()
needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is gone (Python ≥ 3.13)")

#: every int16 sample, as little-endian bytes, in uint16 order
ALL_PCM = np.arange(65536, dtype=np.uint16).astype("<u2").tobytes()
ALL_CODES = bytes(range(256))

# SHA-256 of audioop's output over ALL_PCM / ALL_CODES, generated once on Python 3.11.7 with
# audioop.lin2ulaw(ALL_PCM, 2), audioop.lin2alaw(ALL_PCM, 2), audioop.ulaw2lin(ALL_CODES, 2),
# audioop.alaw2lin(ALL_CODES, 2).
AUDIOOP_DIGESTS = {
    "lin2ulaw": "617fa4850d68d3906597e949f7625fb2fc46db479e29707f33159b3d131721cb",
    "lin2alaw": "f77c76aa923ee25617453f87514828a12896227f82ff383bf3bb53d6ac7c2a0f",
    "ulaw2lin": "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    "alaw2lin": "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
}


def _impls() -> dict[str, tuple[Callable[[bytes], bytes], ...] | None]:
    """Each implementation's (encode_ulaw, encode_alaw, decode_ulaw, decode_alaw), None where
    it is not at hand here."""
    native = (
        None
        if g711.CG711 is None
        else (
            g711.CG711.encode_ulaw,
            g711.CG711.encode_alaw,
            g711.CG711.decode_ulaw,
            g711.CG711.decode_alaw,
        )
    )
    return {
        "native": native,
        "audioop": None if audioop is None else g711._audioop_codecs(audioop),
        "tables": (
            g711.numpy_encode_ulaw,
            g711.numpy_encode_alaw,
            g711.numpy_decode_ulaw,
            g711.numpy_decode_alaw,
        ),
    }


IMPLS = _impls()
NAMES = ("lin2ulaw", "lin2alaw", "ulaw2lin", "alaw2lin")
WHY_MISSING = {
    "native": "stages._cg711 is not built here (or PIPELINE_PURE_PYTHON is set)",
    "audioop": "audioop is gone (Python ≥ 3.13)",
}


def _impl_params() -> list[object]:
    return [
        pytest.param(
            name,
            marks=[pytest.mark.skipif(fns is None, reason=WHY_MISSING.get(name, ""))],
            id=name,
        )
        for name, fns in IMPLS.items()
    ]


def _codecs(impl: str) -> dict[str, Callable[[bytes], bytes]]:
    fns = IMPLS[impl]
    assert fns is not None
    return dict(zip(NAMES, fns, strict=True))


def _arg(name: str) -> bytes:
    return ALL_PCM if name.startswith("lin") else ALL_CODES


needs_native = pytest.mark.skipif(g711.CG711 is None, reason=WHY_MISSING["native"])


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------- bit-exactness


@needs_audioop
@pytest.mark.parametrize("impl", _impl_params())
@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_with_audioop_for_every_input(impl: str, name: str) -> None:
    # every 16-bit sample and every code byte
    assert audioop is not None
    theirs = getattr(audioop, name)(_arg(name), 2)
    ours = _codecs(impl)[name](_arg(name))
    assert len(ours) == len(theirs)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert mismatches == []


@pytest.mark.parametrize("impl", _impl_params())
def test_long_inputs_give_the_same_bytes(impl: str) -> None:
    # a whole recording at once: the kernel converts 65,536 samples or more without the GIL
    codes = ALL_CODES * 300
    pcm = ALL_PCM * 2
    ours = _codecs(impl)
    assert ours["ulaw2lin"](codes) == g711.numpy_decode_ulaw(codes)
    assert ours["alaw2lin"](bytearray(codes)) == g711.numpy_decode_alaw(codes)
    assert ours["lin2ulaw"](pcm) == g711.numpy_encode_ulaw(pcm)
    assert ours["lin2alaw"](memoryview(pcm)) == g711.numpy_encode_alaw(pcm)


@needs_audioop
def test_stored_digests_are_audioops() -> None:
    assert audioop is not None
    for name, digest in AUDIOOP_DIGESTS.items():
        assert _sha(getattr(audioop, name)(_arg(name), 2)) == digest, name


@pytest.mark.parametrize("impl", _impl_params())
@pytest.mark.parametrize("name", NAMES)
def test_matches_stored_audioop_digest(impl: str, name: str) -> None:
    assert _sha(_codecs(impl)[name](_arg(name))) == AUDIOOP_DIGESTS[name]


def test_the_fastest_codec_at_hand_is_used() -> None:
    # the kernel where it is built, audioop where it imports, the tables otherwise
    if g711.CG711 is not None:
        assert g711.encode_ulaw is g711.CG711.encode_ulaw is g711.native_encode_ulaw
        assert g711.decode_alaw is g711.CG711.decode_alaw is g711.native_decode_alaw
        assert g711.encode is g711.CG711.encode and g711.decode is g711.CG711.decode
    else:
        assert g711.native_encode_ulaw is None and g711.native_decode_alaw is None
        assert g711.encode is g711.encode_pure and g711.decode is g711.decode_pure
        assert (g711.AUDIOOP is None) == (g711.encode_ulaw is g711.numpy_encode_ulaw)
    assert (g711.AUDIOOP is None) == (audioop is None)
    assert g711.ENCODERS["pcmu"] is g711.encode_ulaw and g711.ENCODERS["pcma"] is g711.encode_alaw
    assert g711.DECODERS["pcmu"] is g711.decode_ulaw and g711.DECODERS["pcma"] is g711.decode_alaw


def test_known_values() -> None:
    # hand-checked points of the G.711 curves
    # -1 is -0.25 of a 14-bit step: audioop truncates it to -1, not to "-0" (0x7F)
    assert g711.encode_ulaw(np.array([0, -1, 32767, -32768], "<i2").tobytes()) == bytes(
        [0xFF, 0x7E, 0x80, 0x00]
    )
    assert g711.encode_alaw(np.array([0, -1, 32767, -32768], "<i2").tobytes()) == bytes(
        [0xD5, 0x55, 0xAA, 0x2A]
    )
    assert np.frombuffer(g711.decode_ulaw(bytes([0xFF, 0x7F, 0x80, 0x00])), "<i2").tolist() == [
        0,
        0,
        32124,
        -32124,
    ]
    assert np.frombuffer(g711.decode_alaw(bytes([0xD5, 0x55, 0xAA, 0x2A])), "<i2").tolist() == [
        8,
        -8,
        32256,
        -32256,
    ]


def test_tables_are_read_only() -> None:
    for t in (g711.ULAW_ENCODE, g711.ALAW_ENCODE, g711.ULAW_DECODE, g711.ALAW_DECODE):
        with pytest.raises(ValueError):
            t[0] = 1


@pytest.mark.parametrize("impl", _impl_params())
@pytest.mark.parametrize("name", ["lin2ulaw", "lin2alaw"])
def test_odd_pcm_length_is_refused(impl: str, name: str) -> None:
    with pytest.raises(
        UsageError, match=r"^pcm16 audio must be a whole number of 2-byte samples, got 3$"
    ):
        _codecs(impl)[name](b"\x00\x01\x02")


@pytest.mark.parametrize("impl", _impl_params())
def test_empty(impl: str) -> None:
    assert [fn(b"") for fn in _codecs(impl).values()] == [b""] * 4


# ---------------------------------------------------------------------------- hypothesis

pcm_bytes = st.lists(st.integers(-32768, 32767), max_size=400).map(
    lambda xs: np.array(xs, dtype="<i2").tobytes()
)


@pytest.mark.parametrize(("enc", "clip"), [("pcmu", 32124), ("pcma", 32256)])
def test_round_trip_error_is_within_half_a_step_for_every_sample(enc: Encoding, clip: int) -> None:
    x = np.arange(-32768, 32768).astype("<i2")
    y = np.frombuffer(g711.decode(g711.encode(x.tobytes(), enc), enc), "<i2").astype(np.int32)
    xi = x.astype(np.int32)
    # steps double per segment: the error is at most half a step (|x| / 32) plus what
    # truncating to 14 (μ-law) / 13 (A-law) bits loses, plus clipping beyond the top code
    bound = np.abs(xi) // 32 + 8 + np.maximum(0, np.abs(xi) - clip)
    assert np.all(np.abs(y - xi) <= bound)
    # near zero the step is 8 (μ-law) / 16 (A-law)
    assert int(np.abs(y - xi)[np.abs(xi) < 64].max()) == (7 if enc == "pcmu" else 8)
    # monotonic: a louder sample never decodes quieter
    assert np.all(np.diff(y) >= 0)


@given(pcm_bytes)
def test_encoding_is_idempotent(pcm: bytes) -> None:
    for enc in ("pcmu", "pcma"):
        once = g711.encode(pcm, enc)  # type: ignore[arg-type]
        assert g711.encode(g711.decode(once, enc), enc) == once  # type: ignore[arg-type]


@given(st.binary(max_size=400))
def test_decode_then_encode_restores_codes(codes: bytes) -> None:
    assert g711.encode_alaw(g711.decode_alaw(codes)) == codes
    # μ-law has two zeros (0x7F "-0" and 0xFF "+0"); 0 encodes to 0xFF
    expected = codes.replace(b"\x7f", b"\xff")
    assert g711.encode_ulaw(g711.decode_ulaw(codes)) == expected


@given(pcm_bytes, st.integers(0, 400))
def test_chunking_does_not_matter(pcm: bytes, cut: int) -> None:
    cut = min(cut, len(pcm) // 2) * 2
    whole = g711.encode_ulaw(pcm)
    assert g711.encode_ulaw(pcm[:cut]) + g711.encode_ulaw(pcm[cut:]) == whole


def _outcome(fn: Callable[..., bytes], *args: object) -> tuple[str, object]:
    """What a call gives: its bytes, or its error's type and message."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


#: bytes of any length (odd ones included) and other buffers holding them
any_bytes = st.binary(max_size=700)
buffers = any_bytes.flatmap(
    lambda b: st.sampled_from([b, bytearray(b), memoryview(b), np.frombuffer(b, np.uint8)])
)


@given(buffers)
def test_every_codec_gives_the_same_bytes_or_the_same_error(data: bytes) -> None:
    # native == tables (== audioop where it imports) on arbitrary input, errors included
    for name in NAMES:
        outcomes = {impl: _outcome(_codecs(impl)[name], data) for impl, fns in IMPLS.items() if fns}
        assert len(set(map(repr, outcomes.values()))) == 1, (name, outcomes)


@needs_audioop
@given(any_bytes)
def test_random_buffers_match_audioop(data: bytes) -> None:
    assert audioop is not None
    for impl, fns in IMPLS.items():
        if fns is None:
            continue
        codecs = _codecs(impl)
        if len(data) % 2 == 0:
            assert codecs["lin2ulaw"](data) == audioop.lin2ulaw(data, 2), impl
            assert codecs["lin2alaw"](data) == audioop.lin2alaw(data, 2), impl
        assert codecs["ulaw2lin"](data) == audioop.ulaw2lin(data, 2), impl
        assert codecs["alaw2lin"](data) == audioop.alaw2lin(data, 2), impl


encodings = st.sampled_from(["pcmu", "pcma", "pcm16", "pcmU", "", "ulaw", "pcmuu"])


def _tables_encode(pcm: bytes, enc: str) -> bytes:
    law = {"pcmu": g711.numpy_encode_ulaw, "pcma": g711.numpy_encode_alaw}.get(enc)
    return pcm if law is None else law(pcm)


def _tables_decode(data: bytes, enc: str) -> bytes:
    law = {"pcmu": g711.numpy_decode_ulaw, "pcma": g711.numpy_decode_alaw}.get(enc)
    return data if law is None else law(data)


@given(any_bytes, encodings)
def test_encode_and_decode_by_encoding_agree_with_the_pure_twins(data: bytes, enc: str) -> None:
    # the kernel's encode/decode (or the Python dispatch without it) against the Python dispatch
    # and against the tables, errors included
    for ours, pure, tables in (
        (g711.encode, g711.encode_pure, _tables_encode),
        (g711.decode, g711.decode_pure, _tables_decode),
    ):
        want = _outcome(tables, data, enc)
        assert _outcome(ours, data, enc) == want
        assert _outcome(pure, data, enc) == want
    if enc not in ("pcmu", "pcma"):  # anything else is returned as it came
        assert g711.encode(data, enc) is data  # type: ignore[arg-type]
        assert g711.decode(data, enc) is data  # type: ignore[arg-type]


@needs_native
def test_the_kernel_takes_an_equal_str_that_is_not_the_literal() -> None:
    assert g711.CG711 is not None
    built = "".join(["pc", "ma"])  # equal to "pcma", another object
    pcm = np.array([0, -1, 32767, -32768], "<i2").tobytes()
    assert g711.CG711.encode(pcm, built) == g711.numpy_encode_alaw(pcm)
    assert g711.CG711.decode(b"\xd5", built) == g711.numpy_decode_alaw(b"\xd5")

    class Law(str):
        pass

    assert g711.CG711.encode(pcm, Law("pcmu")) == g711.numpy_encode_ulaw(pcm)


@needs_native
def test_the_kernel_refuses_what_is_not_a_buffer_and_counts_its_arguments() -> None:
    kernel = g711.CG711
    assert kernel is not None
    with pytest.raises(TypeError, match="bytes-like object is required, not 'str'"):
        kernel.encode_ulaw("ab")
    with pytest.raises(TypeError, match="bytes-like object is required, not 'NoneType'"):
        kernel.decode(None, "pcmu")
    with pytest.raises(TypeError, match=r"encode_alaw\(\) takes exactly 1 argument \(2 given\)"):
        kernel.encode_alaw(b"", 2)
    with pytest.raises(TypeError, match=r"decode\(\) takes exactly 2 arguments \(1 given\)"):
        kernel.decode(b"")
    with pytest.raises(TypeError, match="bytes-like object is required"):
        g711.numpy_decode_ulaw(None)  # type: ignore[arg-type]


@needs_native
def test_the_kernel_leaks_no_references() -> None:
    kernel = g711.CG711
    assert kernel is not None
    pcm = bytes(320)
    buf = bytearray(pcm)
    # fresh strings equal to the names: the interned literals are shared with the whole
    # process, whose garbage collection may drop references to them meanwhile
    names = tuple("".join(["pc", tail]) for tail in ("mu", "ma", "m16"))

    def calls() -> None:
        for _ in range(100):
            kernel.encode_ulaw(pcm)
            kernel.encode_alaw(buf)
            kernel.decode_ulaw(pcm)
            kernel.decode_alaw(memoryview(buf))
            for enc in names:
                kernel.encode(pcm, enc)
                kernel.decode(buf, enc)
            with pytest.raises(UsageError):
                kernel.encode(pcm[:3], "pcmu")

    gc.disable()
    try:
        before = [sys.getrefcount(x) for x in (pcm, buf, *names)]
        calls()
        after = [sys.getrefcount(x) for x in (pcm, buf, *names)]
    finally:
        gc.enable()
    assert after == before
    out = kernel.decode_ulaw(pcm)
    assert sys.getrefcount(out) == 2  # ``out`` and the call's argument: nobody else holds it
    buf.append(0)  # no buffer export outlives a call (a held one would refuse the resize)


# ---------------------------------------------------------------------------- stages


@pytest.fixture(params=_impl_params())
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a stage test on each implementation: the stages take their codecs from ENCODERS
    and DECODERS as they start."""
    impl: str = request.param
    codecs = _codecs(impl)
    monkeypatch.setitem(g711.ENCODERS, "pcmu", codecs["lin2ulaw"])
    monkeypatch.setitem(g711.ENCODERS, "pcma", codecs["lin2alaw"])
    monkeypatch.setitem(g711.DECODERS, "pcmu", codecs["ulaw2lin"])
    monkeypatch.setitem(g711.DECODERS, "pcma", codecs["alaw2lin"])
    return impl


def _pcm_frame(pts: float = 0.0, n: int = 160, rate: int = 8000) -> Audio:
    x = (np.sin(np.arange(n) * 0.3) * 12000).astype("<i2")
    return Audio(x.tobytes(), "pcm16", rate, 1, pts)


def test_decode_stage_decodes_and_passes_events_through(codec: str) -> None:
    pcm = _pcm_frame().data
    ev = SpeechStarted(pts=0.1)
    frames = [
        Audio(g711.encode_ulaw(pcm), "pcmu", 8000, 1, 0.0),
        ev,
        Audio(g711.encode_alaw(pcm), "pcma", 8000, 1, 0.02),
        Transcript("user", "hi"),
    ]
    out = run_stage("g711_decode", frames)
    assert len(out) == 4
    a, e, b, t = out
    assert isinstance(a, Audio) and isinstance(b, Audio)
    assert (a.encoding, a.rate, a.channels, a.pts) == ("pcm16", 8000, 1, 0.0)
    assert a.data == g711.decode_ulaw(g711.encode_ulaw(pcm))
    assert (b.encoding, b.pts) == ("pcm16", 0.02)
    assert b.data == g711.decode_alaw(g711.encode_alaw(pcm))
    assert e is ev and t == Transcript("user", "hi")


def test_decode_stage_leaves_pcm16_unchanged(codec: str) -> None:
    f = _pcm_frame()
    assert run_stage("g711_decode", [f]) == [f]


def test_decode_output_format() -> None:
    spec = spec_for("g711_decode")
    assert spec.output_format is not None
    assert spec.output_format({}, AudioFormat("pcmu", 8000)) == AudioFormat("pcm16", 8000)
    assert spec.output_format({}, AudioFormat("pcma", 16000)) == AudioFormat("pcm16", 16000)
    assert spec.output_format({}, None) is None
    with pytest.raises(FormatError) as exc:
        spec.output_format({}, AudioFormat("pcm16", 8000))
    assert str(exc.value) == (
        "gets pcm16 audio (pcm16 8000 Hz); it is already PCM, there is nothing to decode; "
        "remove the g711_decode stage"
    )
    assert exc.value.fix == "remove the g711_decode stage"


@pytest.mark.parametrize(("law", "enc"), [("ulaw", "pcmu"), ("alaw", "pcma")])
def test_encode_stage(codec: str, law: str, enc: str) -> None:
    f = _pcm_frame(pts=0.5)
    ev = SpeechStarted(pts=0.5)
    out = run_stage("g711_encode", [f, ev], law=law)
    assert len(out) == 2
    a = out[0]
    assert isinstance(a, Audio)
    assert (a.encoding, a.rate, a.pts, a.num_samples) == (enc, 8000, 0.5, 160)
    assert a.data == g711.encode(f.data, "pcmu" if law == "ulaw" else "pcma")
    assert out[1] is ev


def test_encode_output_format_and_messages() -> None:
    spec = spec_for("g711_encode")
    fmt = spec.output_format
    assert fmt is not None
    assert fmt({"law": "ulaw"}, AudioFormat("pcm16", 8000)) == AudioFormat("pcmu", 8000)
    assert fmt({"law": "alaw"}, AudioFormat("pcm16", 8000)) == AudioFormat("pcma", 8000)
    assert fmt({"law": "alaw"}, None) == AudioFormat("pcma", 8000)
    cases = {
        AudioFormat("pcm16", 16000): (
            "gets 16000 Hz audio; G.711 needs 8000 Hz",
            "add {type: resample, rate: 8000} before it",
        ),
        AudioFormat("pcma", 8000): (
            "gets pcma audio (pcma 8000 Hz); G.711 encoding needs pcm16",
            "add {type: g711_decode} before it",
        ),
        AudioFormat("pcmu", 8000): (
            "gets pcmu audio (pcmu 8000 Hz); it is already μ-law",
            "remove the g711_encode stage",
        ),
    }
    for inp, (message, fix) in cases.items():
        with pytest.raises(FormatError) as exc:
            fmt({"law": "ulaw"}, inp)
        assert (exc.value.message, exc.value.fix) == (message, fix)


def test_encode_stage_refuses_wrong_rate_at_runtime(codec: str) -> None:
    with pytest.raises(StageError) as exc:
        run_stage("g711_encode", [_pcm_frame(rate=16000)])
    assert str(exc.value) == (
        "stage 'g711_encode' failed: gets 16000 Hz audio; G.711 needs 8000 Hz; "
        "add {type: resample, rate: 8000} before it"
    )


def test_stage_specs() -> None:
    dec = spec_for("g711_decode")
    enc = spec_for("g711_encode")
    assert dec.passthrough and enc.passthrough
    assert dec.accepts == (Audio,) and enc.emits == (Audio,)
    assert list(enc.params) == ["law"]
    assert enc.params["law"].default == "ulaw"
    assert dec.params == {}


def test_conformance(codec: str) -> None:
    pcm = [_pcm_frame(pts=i * 0.02) for i in range(3)]
    ulaw = [Audio(g711.encode_ulaw(f.data), "pcmu", 8000, 1, f.pts) for f in pcm]
    out = check_stage("g711_decode", [*ulaw, SpeechStarted(pts=0.0)])
    assert [type(f) for f in out] == [Audio, Audio, Audio, SpeechStarted]
    out = check_stage("g711_encode", [*pcm, Transcript("user", "x")], law="alaw")
    assert [f.encoding for f in out if isinstance(f, Audio)] == ["pcma"] * 3


def test_without_audioop_the_tables_serve() -> None:
    # Python 3.13+ without audioop-lts and without the kernel (no C compiler, or
    # PIPELINE_PURE_PYTHON): the module imports and falls back to the tables
    code = (
        "import sys; sys.modules['audioop'] = None\n"
        "from stages import g711\n"
        "assert g711.CG711 is None and g711.native_encode_ulaw is None\n"
        "assert g711.AUDIOOP is None and g711.encode_ulaw is g711.numpy_encode_ulaw\n"
        "assert g711.encode is g711.encode_pure and g711.decode is g711.decode_pure\n"
        "assert g711.ENCODERS['pcma'] is g711.numpy_encode_alaw\n"
        "assert g711.DECODERS['pcmu'] is g711.numpy_decode_ulaw\n"
        # the stages take the tables too, and give what audioop gives (digests below)
        "import hashlib\n"
        "from pipeline.frames import Audio\n"
        "from pipeline.testing import run_stage\n"
        "pcm = bytes(range(256)) * 5\n"
        "for law, enc in (('ulaw', 'pcmu'), ('alaw', 'pcma')):\n"
        "    (coded,) = run_stage('g711_encode', [Audio(pcm, 'pcm16', 8000)], law=law)\n"
        "    (back,) = run_stage('g711_decode', [coded])\n"
        "    print(enc, hashlib.sha256(coded.data + back.data).hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PIPELINE_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    pcm = bytes(range(256)) * 5
    expected = []
    for enc in ("pcmu", "pcma"):
        coded = g711.encode(pcm, enc)
        digest = hashlib.sha256(coded + g711.decode(coded, enc)).hexdigest()
        expected.append(f"{enc} {digest}")
    assert done.stdout.split("\n")[:2] == expected


@given(
    st.lists(pcm_bytes, min_size=1, max_size=4),
    st.sampled_from(["ulaw", "alaw"]),
)
@settings(max_examples=40, deadline=None)
def test_the_stages_give_the_table_codecs_bytes_frame_by_frame(
    chunks: list[bytes], law: str
) -> None:
    # the stages call the kernel (or audioop) directly where they are at hand: the table codec
    # (checked against audioop and its digests above) is the independent reference here
    enc = "pcmu" if law == "ulaw" else "pcma"
    table_enc = g711.numpy_encode_ulaw if enc == "pcmu" else g711.numpy_encode_alaw
    table_dec = g711.numpy_decode_ulaw if enc == "pcmu" else g711.numpy_decode_alaw
    frames = [Audio(c, "pcm16", 8000, 1, i * 0.02) for i, c in enumerate(chunks)]
    coded = run_stage("g711_encode", frames, law=law)
    assert [(f.data, f.encoding, f.rate, f.pts) for f in coded] == [
        (table_enc(c), enc, 8000, i * 0.02) for i, c in enumerate(chunks)
    ]
    decoded = run_stage("g711_decode", coded)
    assert [(f.data, f.encoding, f.pts) for f in decoded] == [
        (table_dec(table_enc(c)), "pcm16", i * 0.02) for i, c in enumerate(chunks)
    ]
