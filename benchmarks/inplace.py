"""Each built-in stage of the hot path in place, beside its raw core, and the chain beside a loop.

Per stage, three rows measured in the same run, in CPU µs per 20 ms frame:

* ``raw``: the stage's synchronous core called in a plain loop over the same frames (the library
  call: ``audioop``, the resampler's ``process``, the gate's ``push`` around ``webrtcvad``, a file
  ``read``);
* ``in place``: what adding the stage to a running pipeline costs: ``src → stage → sink`` minus
  ``src → sink``, each a Runner run over the same frames (the stage's body, the frame it builds
  and the fused hop into it);
* ``overhead``: in place − raw, per repetition, the median over repetitions (goal ≤ 1 µs).

Every whole-run figure is CPU time per frame with the fixed cost of a run taken out by
differencing a long and a short run, the runs of one repetition interleaved so that load from
other processes falls on all of them alike.

The chain rows run ``wav_source → g711_decode → resample 16k → vad_gate (webrtc, annotate) →
resample 8k → g711_encode → null_sink`` through the Runner and, beside it, the library path: a
plain Python loop making the libraries' calls on the same file (the file read 160 bytes at a
time, ``audioop`` decode, a soxr HQ stream up to 16 kHz, the VAD's pre-emphasis and ``webrtcvad``
per 30 ms, a soxr HQ stream down to 8 kHz, ``audioop`` encode), no frame objects and no
generators. The goal: the chain ≤ 1.5× that loop. Information rows beside it: a loop over the
stages' own cores (what the framework and the stages' bookkeeping add over their kernels), the
chain with ``low_latency: false``, and the chain with the pure-Python twins of the compiled
kernels (``PIPELINE_PURE_PYTHON=1`` in a child process whose runs take their turn with these:
what the kernels buy).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline import Audio, Frame, Pipeline, stage
from pipeline.frames import AudioFormat

from .goals import mark
from .harness import Row, compare, fixed, row

_cpu = time.process_time_ns


@stage("bench_frames", emits=(Audio,), register=False)
async def _frames(*, frames: list[Audio], n: int) -> AsyncIterator[Frame]:
    """The first ``n`` of ``frames``, as fast as they are taken."""
    for f in frames[:n]:
        yield f


def _speech(rate: int, seconds: float) -> np.ndarray:
    """Voiced bursts and pauses (so the VAD decides both ways), int16."""
    rng = np.random.default_rng(7)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    on = (np.sin(2 * np.pi * 0.5 * t) > 0).astype(float)
    sig = on * (3000 * np.sin(2 * np.pi * 180 * t) + 900 * rng.standard_normal(n))
    return (sig + 30 * rng.standard_normal(n)).astype(np.int16)


def _pcm_frames(rate: int, n: int) -> list[Audio]:
    step = rate // 50
    pcm = _speech(rate, n * 0.02).tobytes()
    return [
        Audio(pcm[i * 2 * step : (i + 1) * 2 * step], "pcm16", rate, 1, i * 0.02) for i in range(n)
    ]


def _ulaw_frames(n: int) -> list[Audio]:
    from stages import g711

    return [Audio(g711.encode_ulaw(f.data), "pcmu", 8000, 1, f.pts) for f in _pcm_frames(8000, n)]


def _run(p: Pipeline) -> None:
    from pipeline.runtime import Runner

    asyncio.run(Runner(p.validate()).run())


def _pipeline(frames: list[Audio], n: int, stage_type: str | None, **params: Any) -> Pipeline:
    import stages  # noqa: F401  (registers the built-in stage types)

    p = Pipeline("inplace")
    p.add("src", _frames, frames=frames, n=n)
    p.add("sink", "null_sink")
    if stage_type is None:
        p.link("src", "sink")
    else:
        p.add("x", stage_type, **params)
        p.link("src", "x", "sink")
    return p


def paired(
    runs: dict[str, Callable[[int], object]],
    *,
    n: int,
    n0: int,
    repeat: int,
    fewer: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """CPU µs per item of each ``run(k)``, the fixed cost taken out by differencing ``n`` and
    ``n0`` items; within a repetition every run goes once, in turn, the order reversed every
    other repetition (so a burst of load from other processes, or a drift, hits them all
    alike), each after a full garbage collection (so none pays for another's garbage). A run
    that returns an int has measured itself (CPU ns in another process: ``benchmarks.remote``);
    that figure is taken instead of this process's CPU time. ``fewer``: runs that do
    ``n // d`` and ``n0 // d`` items (a slow one, such as another framework's)."""
    out = {name: np.empty(repeat) for name in runs}
    sizes = {name: (n, n0) for name in runs}
    for name, d in (fewer or {}).items():
        sizes[name] = (n // d, max(1, n0 // d))
    for name, fn in runs.items():
        fn(sizes[name][1])  # warm-up: imports, first-call caches
    order = list(runs.items())
    for r in range(repeat):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            k, k0 = sizes[name]
            gc.collect()
            t0 = _cpu()
            short = fn(k0)
            t1 = _cpu()
            long = fn(k)
            t2 = _cpu()
            if isinstance(short, int) and isinstance(long, int):
                t0, t1, t2 = 0, short, short + long
            out[name][r] = ((t2 - t1) - (t1 - t0)) / (k - k0) / 1e3
    return out


def _loop(
    core: Callable[[Any], object], frames: list[Audio], takes_frame: bool
) -> Callable[[int], object]:
    """``core`` over the frames' bytes, or over the frames themselves (``takes_frame``)."""
    if takes_frame:

        def run_frames(k: int) -> object:
            for f in frames[:k]:
                core(f)
            return None

        return run_frames

    def run(k: int) -> object:
        for f in frames[:k]:
            core(f.data)
        return None

    return run


def audioop_module() -> Any:
    """The standard library's ``audioop`` (``audioop-lts`` on Python 3.13+), or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            return audioop
        except ImportError:
            return None


class RawCalls(NamedTuple):
    """The calls a plain loop is made of, per 20 ms frame. The library path (``soxr``) calls
    audioop's ``ulaw2lin``/``lin2ulaw`` and its ``add``/``mul`` for the VAD's pre-emphasis
    inline, and soxr HQ streams as ``up``/``down`` on int16 arrays. The stages' cores
    (``ours``): ``decode(codes)``, ``encode(pcm)``, ``emphasize(pcm, prev)`` (the VAD's
    pre-emphasis, ``prev`` the sample before) and the low-latency resampler's
    ``process_bytes`` as ``up``/``down`` on pcm16 bytes, the calls the stages make."""

    ulaw2lin: Callable[..., bytes]
    lin2ulaw: Callable[..., bytes]
    add: Callable[..., bytes]
    mul: Callable[..., bytes]
    decode: Callable[[bytes], bytes]
    encode: Callable[[bytes], bytes]
    emphasize: Callable[[bytes, bytes], bytes]
    up: Callable[[Any], Any]
    down: Callable[[Any], Any]
    is_speech: Callable[..., bool]
    soxr: bool


def raw_calls(engine: str, down_from: int, what: str) -> RawCalls:
    """The calls of a plain loop (see :class:`RawCalls`): resamplers 8k→16k and
    ``down_from``→8k, webrtcvad mode 3. ``engine``: ``soxr``, the library path as issue 14
    names it (audioop, soxr HQ streams), or ``ours``, the stages' own cores (compiled kernels
    where built). ``what`` names the caller in the error when audioop is missing."""
    import webrtcvad

    from stages import g711
    from stages.resample import PolyphaseResampler
    from stages.vad.engines import preemphasize

    ao = audioop_module()
    if ao is None:
        raise RuntimeError(f"{what} needs audioop (or audioop-lts on Python 3.13+)")
    is_speech = webrtcvad.Vad(3).is_speech
    lib = (ao.ulaw2lin, ao.lin2ulaw, ao.add, ao.mul)

    def emphasize(pcm: bytes, prev: bytes) -> bytes:
        return preemphasize(pcm, prev, 0.8)

    cores = (g711.DECODERS["pcmu"], g711.ENCODERS["pcmu"], emphasize)
    if engine == "soxr":
        import soxr

        up = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ").resample_chunk
        down = soxr.ResampleStream(down_from, 8000, 1, dtype="int16", quality="HQ").resample_chunk
        return RawCalls(*lib, *cores, up, down, is_speech, True)
    up = PolyphaseResampler(8000, 16000).process_bytes
    down = PolyphaseResampler(down_from, 8000).process_bytes
    return RawCalls(*lib, *cores, up, down, is_speech, False)


# ---------------------------------------------------------------------------- per stage


def _stage_cases(n: int) -> list[tuple[str, str, dict[str, Any], list[Audio], Callable[[], Any]]]:
    """(row name, stage type, parameters, input frames, make the core: a fresh one per run;
    it takes the frame's bytes, or the frame for the gate)."""
    from stages import g711
    from stages.resample import StreamResampler
    from stages.vad.engines import make_engine
    from stages.vad.gate import VadGate

    ulaw = _ulaw_frames(n)
    pcm8 = _pcm_frames(8000, n)
    pcm16 = _pcm_frames(16000, n)

    def decode() -> Any:
        return g711.DECODERS["pcmu"]

    def encode() -> Any:
        return g711.ENCODERS["pcmu"]

    def resampler(src: int, dst: int, low_latency: bool) -> Callable[[], Any]:
        def make() -> Any:
            return StreamResampler(src, dst, "HQ", low_latency).engine.process_bytes

        return make

    def gate(mode: str) -> Callable[[], Any]:
        def make() -> Any:
            return VadGate(make_engine("webrtc", 16000), mode=mode).push  # type: ignore[arg-type]

        return make

    cases: list[tuple[str, str, dict[str, Any], list[Audio], Callable[[], Any]]] = [
        ("g711_decode μ-law", "g711_decode", {}, ulaw, decode),
        ("g711_encode μ-law", "g711_encode", {}, pcm8, encode),
        (
            "resample 8k→16k low_latency",
            "resample",
            {"rate": 16000},
            pcm8,
            resampler(8000, 16000, True),
        ),
        (
            "resample 16k→8k low_latency",
            "resample",
            {"rate": 8000},
            pcm16,
            resampler(16000, 8000, True),
        ),
        (
            "resample 8k→16k soxr HQ",
            "resample",
            {"rate": 16000, "low_latency": False},
            pcm8,
            resampler(8000, 16000, False),
        ),
        (
            "resample 16k→8k soxr HQ",
            "resample",
            {"rate": 8000, "low_latency": False},
            pcm16,
            resampler(16000, 8000, False),
        ),
        (
            "vad_gate webrtc annotate",
            "vad_gate",
            {"engine": "webrtc", "mode": "annotate"},
            pcm16,
            gate("annotate"),
        ),
        (
            "vad_gate webrtc gate",
            "vad_gate",
            {"engine": "webrtc", "mode": "gate"},
            pcm16,
            gate("gate"),
        ),
    ]
    return cases


def stage_rows(n: int, n0: int, repeat: int) -> list[Row]:
    """Per built-in stage: raw core, in place, overhead (see the module docstring)."""
    rows: list[Row] = []
    rows += _source_sink_rows(n, n0, repeat)
    for name, stage_type, params, frames, make_core in _stage_cases(n):

        def raw(
            k: int, frames: list[Audio] = frames, make_core: Any = make_core, st: str = stage_type
        ) -> object:
            return _loop(make_core(), frames, st == "vad_gate")(k)

        def base(k: int, frames: list[Audio] = frames) -> object:
            _run(_pipeline(frames, k, None))
            return None

        def full(
            k: int, frames: list[Audio] = frames, st: str = stage_type, ps: Any = params
        ) -> object:
            _run(_pipeline(frames, k, st, **ps))
            return None

        got = paired({"raw": raw, "base": base, "full": full}, n=n, n0=n0, repeat=repeat)
        in_place = got["full"] - got["base"]
        rows += _triple("stage", name, got["raw"], in_place)
    return rows


def _triple(group: str, name: str, raw: np.ndarray, in_place: np.ndarray) -> list[Row]:
    r = row(group, f"{name}: raw core", raw, note="the core in a plain loop, CPU")
    p = row(group, f"{name}: in place", in_place, note="src→stage→sink minus src→sink, CPU")
    over = in_place - raw
    o = row(
        group,
        f"{name}: overhead",
        over,
        note=(
            f"in place − raw; best of {len(over)}: {float(np.min(in_place) - np.min(raw)):.2f} "
            "(fastest in place − fastest raw)"
        ),
    )
    return [r, compare(p, r), mark(o, "overhead")]


# ---------------------------------------------------------------------------- wav_source


@contextmanager
def _wav_files(counts: tuple[int, ...]) -> Iterator[dict[int, Path]]:
    """μ-law 8 kHz WAV files of ``counts`` 20 ms frames of speech-like audio."""
    from stages import g711
    from stages.wavfile import WavWriter

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        paths = {}
        biggest = max(counts)
        ulaw = g711.encode_ulaw(_speech(8000, biggest * 0.02).tobytes())
        for k in counts:
            path = Path(tmp) / f"speech-{k}.wav"
            w = WavWriter(path, AudioFormat("pcmu", 8000))
            w.write(ulaw[: k * 160])
            w.close()
            paths[k] = path
        yield paths


def _source_sink_rows(n: int, n0: int, repeat: int) -> list[Row]:
    """``wav_source → null_sink`` per frame, beside reading the same file in 160-byte frames."""
    import stages  # noqa: F401
    from stages.wavfile import read_header

    with _wav_files((n, n0)) as paths:
        offset = read_header(paths[n]).data_offset

        def raw(k: int) -> object:
            with open(paths[k], "rb") as f:
                f.seek(offset)
                read = f.read
                while read(160):
                    pass
            return None

        def ours(k: int) -> object:
            p = Pipeline("wav")
            p.add("src", "wav_source", path=str(paths[k]), pace="fast")
            p.add("sink", "null_sink")
            p.link("src", "sink")
            _run(p)
            return None

        got = paired({"raw": raw, "ours": ours}, n=n, n0=n0, repeat=repeat)
    r = row("stage", "wav file: read 160 bytes per frame (raw)", got["raw"], note="CPU")
    w = row(
        "stage",
        "wav_source → null_sink",
        got["ours"],
        note=f"the whole pipeline; best of {repeat} {float(np.min(got['ours'])):.2f}",
    )
    o = row("stage", "wav_source → null_sink: overhead", got["ours"] - got["raw"], note="− raw")
    return [r, mark(compare(w, r), "wav"), o]


# ---------------------------------------------------------------------------- the chain


def _chain_pipeline(path: Path, low_latency: bool) -> Pipeline:
    import stages  # noqa: F401

    p = Pipeline("chain")
    p.add("src", "wav_source", path=str(path), pace="fast")
    p.add("decode", "g711_decode")
    p.add("up", "resample", rate=16000, low_latency=low_latency)
    p.add("vad", "vad_gate", engine="webrtc", mode="annotate")
    p.add("down", "resample", rate=8000, low_latency=low_latency)
    p.add("encode", "g711_encode")
    p.add("sink", "null_sink")
    p.link("src", "decode", "up", "vad", "down", "encode", "sink")
    return p


def _plain_loop(path: Path, engine: str) -> None:
    """The chain's calls in one Python loop: read 20 ms from the file, decode, resample up, the
    VAD's pre-emphasis and webrtcvad per 30 ms window, resample down, encode; no frame objects,
    no generators. ``engine``: ``soxr`` (the library path: audioop, soxr HQ streams on int16
    arrays) or ``ours`` (the stages' own cores): see :func:`raw_calls`."""
    from stages.wavfile import read_header

    calls = raw_calls(engine, 16000, "the loop")
    ulaw2lin, lin2ulaw, add, mul, decode, encode, emphasize, up, down, is_speech, _ = calls
    i16 = np.dtype("<i2")
    frombuffer = np.frombuffer
    last = b"\0\0"
    buf = b""
    with open(path, "rb") as f:
        f.seek(read_header(path).data_offset)
        read = f.read
        if calls.soxr:  # the libraries' own calls, inline
            while data := read(160):
                y = up(frombuffer(ulaw2lin(data, 2), i16))
                b = y.tobytes()
                if b:
                    buf += add(b, mul(last + b[:-2], 2, -0.8), 2)
                    last = b[-2:]
                    while len(buf) >= 960:
                        is_speech(buf[:960], 16000)
                        buf = buf[960:]
                lin2ulaw(down(y).tobytes(), 2)
            return
        while data := read(160):  # the stages' cores
            b = up(decode(data))
            if b:
                buf += emphasize(b, last)
                last = b[-2:]
                while len(buf) >= 960:
                    is_speech(buf[:960], 16000)
                    buf = buf[960:]
            encode(down(b))


@contextmanager
def chain_runs(n: int, n0: int) -> Iterator[dict[str, Callable[[int], object]]]:
    """The chain's runs over WAV files of ``n`` and ``n0`` frames: the two plain loops (soxr
    streams, the stages' cores) and the chain with either resampler. Also entered in a child
    process (``benchmarks.remote``) for the pure-Python kernels' figures."""
    with _wav_files((n, n0)) as paths:
        yield {
            "loop soxr": lambda k: _plain_loop(paths[k], "soxr"),
            "loop ours": lambda k: _plain_loop(paths[k], "ours"),
            "chain ll": lambda k: _run(_chain_pipeline(paths[k], True)),
            "chain soxr": lambda k: _run(_chain_pipeline(paths[k], False)),
        }


#: the setting under which a child process runs the pure-Python twins of the kernels
PURE_ENV = {"PIPELINE_PURE_PYTHON": "1"}

CHAIN = (
    "wav_source → g711_decode → resample 16k → vad_gate webrtc annotate → resample 8k "
    "→ g711_encode → null_sink"
)


def kernels_note(kernels: dict[str, bool]) -> str:
    """Which compiled kernels a process uses, for a row's note."""
    used = [k.rsplit(".", 1)[-1] for k, on in kernels.items() if on]
    return "compiled kernels in use: " + (", ".join(used) if used else "none")


def chain_rows(n: int, n0: int, repeat: int) -> list[Row]:
    """The chain through the Runner beside the plain loop over the libraries (the goal, ≤ 1.5×),
    beside a loop over the stages' own cores (information), and the chain again with the
    pure-Python kernels (another process, taking turns)."""
    from pipeline import native

    from . import remote

    with (
        chain_runs(n, n0) as runs,
        remote.optional("benchmarks.inplace:chain_runs", [n, n0], PURE_ENV) as pure,
    ):
        if isinstance(pure, remote.Remote):
            runs = {**runs, "chain pure": pure.run("chain ll")}
        got = paired(runs, n=n, n0=n0, repeat=repeat)

    def best(a: str, b: str) -> str:
        return f"best of {repeat}: {float(np.min(got[a]) / np.min(got[b])):.2f}×"

    library = row(
        "chain",
        "library path: plain loop, file read 160 B, audioop ulaw2lin, soxr HQ stream 8k→16k "
        "(int16), pre-emphasis (audioop) + webrtcvad per 30 ms, soxr HQ stream 16k→8k, "
        "audioop lin2ulaw",
        got["loop soxr"],
        note="CPU per 20 ms frame; the libraries' own calls, no frames, no generators",
    )
    chain = mark(
        compare(
            row(
                "chain",
                CHAIN,
                got["chain ll"],
                note=f"default resamplers (low_latency); {best('chain ll', 'loop soxr')}; "
                + kernels_note(native.status()),
            ),
            library,
        ),
        "chain",
    )
    pure_name = (
        "  the chain, pure-Python kernels (PIPELINE_PURE_PYTHON=1, a child process taking turns)"
    )
    if isinstance(pure, remote.Remote):
        pure_row = compare(
            row(
                "chain",
                pure_name,
                got["chain pure"],
                note=f"{best('chain pure', 'loop soxr')}; the kernels buy "
                f"{float(np.median(got['chain pure'] - got['chain ll'])):.2f} µs per frame; "
                + kernels_note(pure.kernels),
            ),
            library,
        )
    else:
        pure_row = fixed("chain", pure_name, float("nan"), "µs/frame", f"not measured: {pure}")
    cores = row(
        "chain",
        "  information: plain loop over the stages' cores (audioop, the low-latency "
        "resampler's core, pre-emphasis + webrtcvad per 30 ms)",
        got["loop ours"],
        note="CPU per 20 ms frame; the calls the stages make, no frames, no generators",
    )
    ll_cores = row(
        "chain",
        "  information: the chain vs the loop over the stages' cores",
        got["chain ll"],
        note="what the framework and the stages' bookkeeping add over their own cores; "
        + best("chain ll", "loop ours"),
    )
    sx = row(
        "chain",
        "  information: the chain with low_latency: false vs the library loop",
        got["chain soxr"],
        note="soxr HQ in both (the stage's soxr call goes through float32); "
        + best("chain soxr", "loop soxr"),
    )
    return [
        library,
        chain,
        pure_row,
        cores,
        compare(ll_cores, cores),
        compare(sx, library),
    ]


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """Per-stage rows and the chain rows."""
    n, n0, repeat = (120, 20, 2) if tiny else (3000, 300, 11) if quick else (6000, 600, 15)
    return stage_rows(n, n0, repeat) + chain_rows(n, n0, repeat)
