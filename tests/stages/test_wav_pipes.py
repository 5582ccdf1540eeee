"""WAV through pipes: ``wav_source path: "-"`` reads standard input, ``wav_sink path: "-"``
writes standard output, with the unknown-length header sox and ffmpeg write. Checked against
sox itself in a real shell pipe where sox is installed; and a run that fails before any frame
leaves no output file behind."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import Pipeline, stage
from pipeline.context import StageContext
from pipeline.errors import ConfigError, InputError, StageError
from pipeline.frames import Audio, AudioFormat, Frame, Transcript
from stages.wavfile import (
    STREAM_DATA_SIZE,
    WavStreamReader,
    WavStreamWriter,
)

ROOT = Path(__file__).resolve().parents[2]
SOX = shutil.which("sox")
needs_sox = pytest.mark.skipif(SOX is None, reason="sox is not installed (apt-get install sox)")


def _samples(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32767, n, dtype=np.int16)


def _stream_wav(
    data: bytes, *, tag: int = 1, rate: int = 8000, bits: int = 16, size: int, tail: bytes = b""
) -> bytes:
    """A WAV as a streaming tool writes it: ``size`` in the data chunk whatever the length."""
    block = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits)
    riff = 4 + 24 + 8 + len(data)
    return (
        b"RIFF"
        + struct.pack("<I", riff if size != 0xFFFFFFFF else 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"LIST"
        + struct.pack("<I", 4)
        + b"INFO"
        + b"data"
        + struct.pack("<I", size)
        + data
        + tail
    )


@pytest.mark.parametrize("size", [STREAM_DATA_SIZE, 0xFFFFFFFF, 0], ids=["sox", "ffmpeg", "zero"])
def test_the_stream_reader_takes_the_unknown_length_headers(size: int) -> None:
    pcm = _samples(1000).tobytes()
    reader = WavStreamReader(io.BytesIO(_stream_wav(pcm + b"\x01", size=size)))
    assert reader.format == AudioFormat("pcm16", 8000)
    got = b"".join(iter(lambda: reader.read(160), b""))
    assert got == pcm  # the odd last byte (half a sample) is dropped
    assert reader.position == 1000


def test_a_stream_with_a_true_length_stops_there() -> None:
    pcm = _samples(300).tobytes()
    reader = WavStreamReader(io.BytesIO(_stream_wav(pcm, size=len(pcm), tail=b"junk" * 10)))
    assert b"".join(iter(lambda: reader.read(64), b"")) == pcm


def test_a_stream_that_is_not_a_wav_says_how_to_make_one() -> None:
    with pytest.raises(InputError, match=r"standard input: not a WAV stream .*'sox IN -t wav -'"):
        WavStreamReader(io.BytesIO(b"ID3\x03 an mp3"))
    with pytest.raises(InputError, match="standard input: no data arrived"):
        WavStreamReader(io.BytesIO(b""))


def test_the_stream_writer_header_is_what_sox_writes_and_reads_back() -> None:
    out = io.BytesIO()
    w = WavStreamWriter(out, AudioFormat("pcmu", 8000))
    w.write(b"\x7f" * 100)
    w.close()
    data = out.getvalue()
    assert struct.unpack_from("<I", data, data.index(b"data") + 4)[0] == STREAM_DATA_SIZE
    assert struct.unpack_from("<I", data, data.index(b"fact") + 8)[0] == STREAM_DATA_SIZE
    back = WavStreamReader(io.BytesIO(data))
    assert (back.format, back.read(1000)) == (AudioFormat("pcmu", 8000), b"\x7f" * 100)


PIPE_YAML = """\
version: 1
pipelines:
  through:
    stages:
      mic: {type: wav_source, path: "-", pace: fast}
      out: {type: wav_sink, path: "-"}
    links:
      - mic -> out
  decode:
    stages:
      mic: {type: wav_source, path: "-", pace: fast}
      dec: {type: g711_decode}
      out: {type: wav_sink, path: "-"}
    links:
      - mic -> dec -> out
"""


def _pipeline_cmd(tmp_path: Path, name: str) -> str:
    (tmp_path / "p.yaml").write_text(PIPE_YAML, encoding="utf-8")
    return f"{sys.executable} -m pipeline run p.yaml {name} --log-format json"


@needs_sox
def test_sox_into_the_pipeline_into_sox(tmp_path: Path) -> None:
    """`sox in -t wav - | pipeline run p.yaml | sox -t wav - out`: sample-exact, and the
    summary on stderr."""
    pcm = _samples(12345)
    (tmp_path / "in.raw").write_bytes(pcm.tobytes())
    sox_in = f"{SOX} -t raw -r 16000 -e signed -b 16 -c 1 in.raw -t wav -"
    sox_out = f"{SOX} -D -t wav - -t raw out.raw"
    cmd = f"set -o pipefail; {sox_in} | {_pipeline_cmd(tmp_path, 'through')} | {sox_out}"
    run = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    got = np.frombuffer((tmp_path / "out.raw").read_bytes(), np.int16)
    np.testing.assert_array_equal(got, pcm)
    assert "pipeline 'through' completed: 0.77 s of media" in run.stderr
    assert "Premature EOF" not in run.stderr  # sox read our header without complaint


@needs_sox
def test_mulaw_from_sox_decoded_matches_sox_decoding(tmp_path: Path) -> None:
    pcm = _samples(8000, seed=7)
    (tmp_path / "in.raw").write_bytes(pcm.tobytes())
    # -D: no dither, so the μ-law stream is the same in both pipes
    made = subprocess.run(
        f"{SOX} -D -t raw -r 8000 -e signed -b 16 -c 1 in.raw -t wav -e u-law in.wav".split(),
        cwd=tmp_path,
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    ulaw = f"{SOX} in.wav -t wav -"
    cmd = (
        f"set -o pipefail; {ulaw} | {_pipeline_cmd(tmp_path, 'decode')} "
        f"| {SOX} -D -t wav - -t raw out.raw"
    )
    run = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    # the independent reference: sox's own μ-law decoding of the same stream
    ref = subprocess.run(
        ["bash", "-c", f"{ulaw} | {SOX} -D -t wav - -t raw -e signed -b 16 ref.raw"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert ref.returncode == 0, ref.stderr
    got = (tmp_path / "out.raw").read_bytes()
    assert got == (tmp_path / "ref.raw").read_bytes()
    assert len(got) == 2 * len(pcm)


def test_an_ffmpeg_style_stream_on_stdin_comes_out_whole(tmp_path: Path) -> None:
    pcm = _samples(4000, seed=3).tobytes()
    run = subprocess.run(
        _pipeline_cmd(tmp_path, "through").split(),
        cwd=tmp_path,
        input=_stream_wav(pcm, size=0xFFFFFFFF),
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()
    out = WavStreamReader(io.BytesIO(run.stdout))
    assert out.read(10**6) == pcm
    assert b"completed" in run.stderr


def test_not_a_wav_on_stdin_is_one_line_and_exit_1(tmp_path: Path) -> None:
    run = subprocess.run(
        _pipeline_cmd(tmp_path, "through").split(),
        cwd=tmp_path,
        input=b"hello",
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stdout == b""
    err = [ln for ln in run.stderr.decode().splitlines() if ln.startswith("error:")]
    assert err == [
        "error: stage 'mic' failed: standard input: not a WAV stream (starts with b'hello'); "
        "write WAV to the pipe, e.g. 'sox IN -t wav -' or 'ffmpeg -i IN -f wav -'"
    ]


def test_standard_input_and_output_are_validated() -> None:
    p = Pipeline("p")
    p.add("a", "wav_source", path="-")
    p.add("b", "wav_source", path="-", loop=True)
    p.add("out", "wav_sink", path="-")
    p.add("log", "jsonl_sink", path="-")
    p.link("a", "out")
    p.link("b", "log")
    messages = [q.message for q in p.check().problems]
    assert "stage 'b' (wav_source): loop: true cannot rewind standard input ('-'); remove loop" in (
        messages
    )
    assert "stage 'log' (jsonl_sink): stage 'out' writes standard output ('-') too" in messages
    q = Pipeline("q")
    q.add("a", "wav_source", path="-")
    q.add("out", "wav_sink", path="-")
    q.link("a", "out")
    assert q.check().problems == ()


# ---------------------------------------------------------------- no output after an early failure


@stage("refused_at_start", emits=(Audio, Transcript), register=False)
async def refused_at_start(*, ctx: StageContext) -> AsyncIterator[Frame]:
    """A source that fails as it starts, like a session refused for a missing key."""
    raise StageError(ctx.id, "XAI_API_KEY is not set")
    yield  # pragma: no cover


def test_a_run_that_fails_before_any_frame_creates_no_output_file(tmp_path: Path) -> None:
    p = Pipeline("p", base_dir=tmp_path)
    p.add("agent", refused_at_start)
    p.add("reply", "wav_sink", path="out/reply.wav")
    p.add("log", "jsonl_sink", path="out/events.jsonl")
    p.link("agent", "reply")
    p.link("agent", "log")
    with pytest.raises(StageError, match="XAI_API_KEY is not set"):
        p.run()
    assert not (tmp_path / "out" / "reply.wav").exists()
    assert not (tmp_path / "out" / "events.jsonl").exists()


def test_config_error_for_a_missing_stdin_reader_is_not_raised_for_dash() -> None:
    p = Pipeline("p")
    p.add("a", "wav_source", path="-")
    p.add("out", "null_sink")
    p.link("a", "out")
    try:
        p.validate()
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(str(exc))
