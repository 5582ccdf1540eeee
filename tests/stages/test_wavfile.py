"""WAV reading and writing, cross-checked with soundfile (libsndfile) and sox."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.frames import AudioFormat, Encoding
from stages import g711
from stages.wavfile import WavReader, WavWriter, read_header, read_wav

SOX = shutil.which("sox")
needs_sox = pytest.mark.skipif(SOX is None, reason="sox is not installed (apt-get install sox)")

EXT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def fmt_chunk(
    tag: int, channels: int, rate: int, width: int, *, extra: bytes | None = None
) -> bytes:
    block = channels * width
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, width * 8)
    if extra is not None:
        body += struct.pack("<H", len(extra)) + extra
    return chunk(b"fmt ", body)


def ext_fmt_chunk(sub: int, channels: int, rate: int, width: int) -> bytes:
    extra = struct.pack("<HI", width * 8, 0) + struct.pack("<H", sub) + EXT_TAIL
    return fmt_chunk(0xFFFE, channels, rate, width, extra=extra)


def chunk(cid: bytes, body: bytes, *, size: int | None = None) -> bytes:
    pad = b"\0" if len(body) & 1 else b""
    return cid + struct.pack("<I", len(body) if size is None else size) + body + pad


def wav_bytes(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def put(tmp_path: Path, data: bytes, name: str = "x.wav") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def i16(x: bytes) -> np.ndarray:
    return np.frombuffer(x, "<i2")


SINE = (np.sin(np.arange(800) * 2 * np.pi * 440 / 8000) * 20000).astype("<i2")

# ---------------------------------------------------------------------------- reading: native


def test_pcm16_mono_is_passed_through(tmp_path: Path) -> None:
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 1, 16000, 2), chunk(b"data", SINE.tobytes())))
    h, data = read_wav(p)
    assert h.format == AudioFormat("pcm16", 16000)
    assert (h.num_frames, h.data_offset, h.data_size, h.format_tag) == (800, 44, 1600, 1)
    assert h.conversion == "" and h.passthrough
    assert h.duration == 0.05
    assert data == SINE.tobytes()


@pytest.mark.parametrize(("tag", "enc"), [(7, "pcmu"), (6, "pcma")])
def test_g711_mono_is_passed_through(tmp_path: Path, tag: int, enc: str) -> None:
    codes = bytes(range(256)) + b"\x55"  # odd size: a pad byte follows
    p = put(
        tmp_path,
        wav_bytes(
            fmt_chunk(tag, 1, 8000, 1, extra=b""),
            chunk(b"fact", struct.pack("<I", 257)),
            chunk(b"data", codes),
        ),
    )
    h, data = read_wav(p)
    assert h.format == AudioFormat(enc, 8000)  # type: ignore[arg-type]
    assert (h.num_frames, h.format_tag) == (257, tag)
    assert data == codes
    # soundfile decodes the same codes to the same samples
    assert np.array_equal(sf.read(p, dtype="int16")[0], i16(g711.decode(codes, h.format.encoding)))


@pytest.mark.parametrize(("sub", "width", "enc"), [(1, 2, "pcm16"), (7, 1, "pcmu"), (6, 1, "pcma")])
def test_wave_format_extensible(tmp_path: Path, sub: int, width: int, enc: str) -> None:
    data = SINE.tobytes() if width == 2 else bytes(range(200))
    p = put(tmp_path, wav_bytes(ext_fmt_chunk(sub, 1, 8000, width), chunk(b"data", data)))
    h, got = read_wav(p)
    assert h.format == AudioFormat(enc, 8000)  # type: ignore[arg-type]
    assert h.format_tag == sub
    assert got == data


def test_extra_chunks_and_odd_padding_before_data(tmp_path: Path) -> None:
    p = put(
        tmp_path,
        wav_bytes(
            chunk(b"JUNK", b"\0" * 27),  # odd: padded
            fmt_chunk(1, 1, 8000, 2),
            chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00"),  # 17 bytes: padded
            chunk(b"cue ", b"\0" * 4),
            chunk(b"data", SINE.tobytes()),
            chunk(b"LIST", b"after data is ignored"),
        ),
    )
    h, data = read_wav(p)
    assert data == SINE.tobytes()
    assert h.data_offset == 12 + 36 + 24 + 26 + 12 + 8
    assert np.array_equal(sf.read(p, dtype="int16")[0], SINE)


def test_zero_sample_wav(tmp_path: Path) -> None:
    p = put(tmp_path, wav_bytes(fmt_chunk(7, 1, 8000, 1, extra=b""), chunk(b"data", b"")))
    h, data = read_wav(p)
    assert (h.format, h.num_frames, h.data_size, data) == (AudioFormat("pcmu", 8000), 0, 0, b"")
    with WavReader(p) as r:
        assert r.read(160) == b""


def test_streaming_data_size_means_to_end_of_file(tmp_path: Path) -> None:
    raw = SINE.tobytes() + b"\x01"  # a stray half sample at the end is dropped
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 1, 8000, 2)) + b"data\xff\xff\xff\xff" + raw)
    h, data = read_wav(p)
    assert h.num_frames == 800
    assert data == SINE.tobytes()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_streaming_reader_chunks_add_up(tmp_path: Path, sizes: list[int]) -> None:
    stereo = np.stack([SINE, -SINE // 3], axis=1).astype("<i2")
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 2, 8000, 2), chunk(b"data", stereo.tobytes())))
    whole = read_wav(p)[1]
    parts = []
    with WavReader(p) as r:
        for n in sizes:
            parts.append(r.read(n))
        parts.append(r.read(10_000))
        assert r.read(1) == b""
        assert r.position == 800
        r.rewind()
        assert r.read(5) == whole[:10]
    assert b"".join(parts) == whole


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 900), st.integers(0, 799), st.booleans())
def test_chunks_are_what_read_returns_call_after_call(
    tmp_path: Path, n: int, first: int, stereo: bool
) -> None:
    # passthrough (mono pcm16) and converted (stereo, mixed down) files alike
    x = np.stack([SINE, -SINE // 3], axis=1).astype("<i2") if stereo else SINE
    p = put(
        tmp_path, wav_bytes(fmt_chunk(1, 2 if stereo else 1, 8000, 2), chunk(b"data", x.tobytes()))
    )
    with WavReader(p) as r:
        r.read(first)
        expected = []
        while data := r.read(n):
            expected.append(data)
        r.rewind()
        r.read(first)
        got = list(r.chunks(n))
        assert r.position == 800
    assert got == expected


def test_chunks_of_a_file_that_shrank_name_it(tmp_path: Path) -> None:
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 1, 8000, 2), chunk(b"data", SINE.tobytes())))
    with WavReader(p) as r:
        with open(p, "r+b") as f:
            f.truncate(44 + 500)
        with pytest.raises(
            InputError, match=r"shrank while being read \(wanted 1600 bytes at sample 0, got 500\)"
        ):
            list(r.chunks(160))


# ---------------------------------------------------------------------------- reading: converted


def _expected(p: Path) -> np.ndarray:
    """The documented rule, computed from libsndfile's float reading of the file."""
    x = sf.read(p, dtype="float64", always_2d=True)[0] * 32768.0
    return np.clip(np.rint(x.mean(axis=1)), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(
    ("subtype", "channels", "rule"),
    [
        ("PCM_U8", 1, "8-bit unsigned PCM to 16-bit: (x - 128) * 256"),
        ("PCM_24", 1, "24-bit PCM to 16-bit: x / 256"),
        ("PCM_32", 1, "32-bit PCM to 16-bit: x / 65536"),
        ("FLOAT", 1, "32-bit float to 16-bit: x * 32768"),
        ("DOUBLE", 1, "64-bit float to 16-bit: x * 32768"),
        ("PCM_16", 2, "2 channels mixed to mono by their mean"),
        ("PCM_24", 3, "24-bit PCM to 16-bit: x / 256; 3 channels mixed to mono by their mean"),
        ("ULAW", 2, "μ-law decoded to 16-bit; 2 channels mixed to mono by their mean"),
        ("ALAW", 2, "A-law decoded to 16-bit; 2 channels mixed to mono by their mean"),
    ],
)
@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
def test_conversion_rule(
    tmp_path: Path, subtype: str, channels: int, rule: str, container: str
) -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 1.0, (1000, channels))
    x[:5] = [
        [1.0] * channels,
        [-1.0] * channels,
        [0.0] * channels,
        [0.5] * channels,
        [-0.5] * channels,
    ]
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, x, 22050, subtype=subtype, format=container)
    h, data = read_wav(p)
    assert h.format == AudioFormat("pcm16", 22050)
    assert h.conversion == rule + "; rounded to nearest and clipped"
    assert h.channels == channels and h.num_frames == 1000
    assert np.array_equal(i16(data), _expected(p))


def test_float_is_clipped_and_nan_is_zero(tmp_path: Path) -> None:
    x = np.array([2.0, -2.0, np.nan, 0.99999, 1 / 65536, 3 / 65536], dtype="<f4")
    p = put(tmp_path, wav_bytes(fmt_chunk(3, 1, 8000, 4), chunk(b"data", x.tobytes())))
    # 0.5 and 1.5 (in 16-bit units) round to even: 0 and 2
    assert i16(read_wav(p)[1]).tolist() == [32767, -32768, 0, 32767, 0, 2]


def test_unsigned_8bit_exact(tmp_path: Path) -> None:
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 1, 8000, 1), chunk(b"data", bytes([0, 128, 255, 1]))))
    assert i16(read_wav(p)[1]).tolist() == [-32768, 0, 32512, -32512]


def test_stereo_mean_rounds_half_to_even(tmp_path: Path) -> None:
    st_ = np.array([[1, 2], [3, 4], [-1, -2], [32767, 32767]], dtype="<i2")
    p = put(tmp_path, wav_bytes(fmt_chunk(1, 2, 8000, 2), chunk(b"data", st_.tobytes())))
    assert i16(read_wav(p)[1]).tolist() == [2, 4, -2, 32767]


# ---------------------------------------------------------------------------- reading: refused

HDR = fmt_chunk(1, 1, 8000, 2)
NOT_WAV = "; give a WAV file, or convert this one with e.g. 'sox IN OUT.wav'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file (0 bytes), not a WAV file" + NOT_WAV),
        (b"ID3\x03\x00\x00\x00\x00", "not a WAV file (starts with b'ID3\\x03')" + NOT_WAV),
        (b"RIFF\x10\x00", "too short to be a WAV file (6 bytes)" + NOT_WAV),
        (
            b"RIFF\x04\x00\x00\x00AVI ",
            "a RIFF file but not WAVE (form type b'AVI ')" + NOT_WAV,
        ),
        (
            b"RIFX\x04\x00\x00\x00WAVE",
            "big-endian RIFX WAV is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            b"RF64\xff\xff\xff\xffWAVE",
            "RF64 WAV (for files over 4 GB) is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(),
            "no fmt and data chunks (the file ends after 12 bytes); the file is truncated",
        ),
        (
            wav_bytes(HDR),
            "no data chunk (the file ends after 36 bytes); the file is truncated",
        ),
        (
            wav_bytes(HDR, b"data" + struct.pack("<I", 32000) + b"\0" * 1200),
            "data chunk says 32000 bytes, file has 1200; the file is truncated",
        ),
        (
            wav_bytes(HDR, b"LIST" + struct.pack("<I", 5000) + b"\0" * 20),
            "'LIST' chunk at byte 36 says 5000 bytes, file has 20; the file is truncated",
        ),
        (
            wav_bytes(chunk(b"data", b"\0\0"), HDR),
            "the data chunk comes before any fmt chunk; the file is damaged",
        ),
        (
            wav_bytes(chunk(b"fmt ", b"\x01\x00\x01\x00"), chunk(b"data", b"")),
            "fmt chunk is 4 bytes, needs at least 16; the file is damaged",
        ),
        (
            wav_bytes(HDR, chunk(b"data", b"\0\0\0")),
            "data chunk holds 3 bytes, not a whole number of 2-byte sample frames; "
            "the file is damaged",
        ),
        (
            wav_bytes(fmt_chunk(1, 0, 8000, 2), chunk(b"data", b"")),
            "fmt chunk says 0 channels; the file is damaged",
        ),
        (
            wav_bytes(fmt_chunk(1, 1, 0, 2), chunk(b"data", b"")),
            "fmt chunk says 0 samples per second; the file is damaged",
        ),
        (
            wav_bytes(fmt_chunk(2, 1, 8000, 1), chunk(b"data", b"")),
            "Microsoft ADPCM (WAV format tag 0x0002) is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(fmt_chunk(0x55, 1, 8000, 1), chunk(b"data", b"")),
            "MP3 (WAV format tag 0x0055) is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(fmt_chunk(0x1234, 1, 8000, 1), chunk(b"data", b"")),
            "an unknown encoding (WAV format tag 0x1234) is not supported; convert it with "
            "e.g. 'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(fmt_chunk(1, 1, 8000, 8), chunk(b"data", b"")),
            "64-bit integer PCM is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(fmt_chunk(7, 1, 8000, 2), chunk(b"data", b"")),
            "16-bit μ-law is not supported; convert it with e.g. "
            "'sox IN.wav -e signed-integer -b 16 OUT.wav'",
        ),
        (
            wav_bytes(fmt_chunk(0xFFFE, 1, 8000, 2, extra=b"\0" * 4), chunk(b"data", b"")),
            "WAVE_FORMAT_EXTENSIBLE fmt chunk is 22 bytes, needs 40",
        ),
    ],
)
def test_refused_files_name_the_file_and_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    p = put(tmp_path, content, "caller.wav")
    with pytest.raises(InputError) as exc:
        read_header(p)
    assert str(exc.value) == f"caller.wav: {message}"
    assert exc.value.exit_code == 2
    assert "\n" not in str(exc.value)


def test_missing_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^nope\.wav: no such file; check the path$"):
        read_header(tmp_path / "nope.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(InputError, match=r"^dir\.wav: is a folder, not a WAV file$"):
        read_header(tmp_path / "dir.wav")


def test_path_outside_working_folder_is_shown_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    p = put(tmp_path, b"OggS\0\0\0\0\0\0\0\0", "x.wav")
    with pytest.raises(InputError) as exc:
        read_header(p)
    assert str(exc.value) == f"{p}: not a WAV file (starts with b'OggS')" + NOT_WAV


def test_extensible_with_unknown_subformat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    extra = struct.pack("<HI", 16, 0) + b"\x01\x00" + b"\xee" * 14
    p = put(tmp_path, wav_bytes(fmt_chunk(0xFFFE, 1, 8000, 2, extra=extra), chunk(b"data", b"")))
    with pytest.raises(InputError) as exc:
        read_header(p)
    assert str(exc.value) == (
        "x.wav: unsupported WAVE_FORMAT_EXTENSIBLE sub-format 0100" + "ee" * 14 + "; convert it "
        "with e.g. 'sox IN.wav -e signed-integer -b 16 OUT.wav'"
    )


# ---------------------------------------------------------------------------- writing


def _check_header_matches_disk(p: Path, w: WavWriter) -> None:
    raw = p.read_bytes()
    riff = struct.unpack("<I", raw[4:8])[0]
    assert riff == len(raw) - 8
    h = read_header(p)
    assert h.num_frames == w.num_frames
    assert h.data_size == w.data_bytes
    assert raw[h.data_offset : h.data_offset + h.data_size] == raw[w.data_offset :][: w.data_bytes]


@pytest.mark.parametrize("enc", ["pcm16", "pcmu", "pcma"])
def test_writer_empty_file_is_valid(tmp_path: Path, enc: str) -> None:
    p = tmp_path / "deep" / "er" / "out.wav"  # parent folders are created
    w = WavWriter(p, AudioFormat(enc, 8000))  # type: ignore[arg-type]
    _check_header_matches_disk(p, w)
    w.close()
    w.close()  # twice is fine
    assert w.closed
    h, data = read_wav(p)
    assert (h.format, h.num_frames, data) == (AudioFormat(enc, 8000), 0, b"")  # type: ignore[arg-type]
    info = sf.info(p)
    assert (info.frames, info.samplerate, info.channels) == (0, 8000, 1)


def test_writer_layouts(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "a.wav", AudioFormat("pcm16", 16000)) as w:
        w.write(SINE.tobytes())
    raw = (tmp_path / "a.wav").read_bytes()
    assert raw[:44] == (
        b"RIFF" + struct.pack("<I", 36 + 1600) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data" + struct.pack("<I", 1600)
    )  # fmt: skip
    with WavWriter(tmp_path / "u.wav", AudioFormat("pcmu", 8000)) as w:
        w.write(b"\x01\x02\x03")
    raw = (tmp_path / "u.wav").read_bytes()
    assert raw == (
        b"RIFF" + struct.pack("<I", 50 + 3 + 1) + b"WAVEfmt "
        + struct.pack("<IHHIIHHH", 18, 7, 1, 8000, 8000, 1, 8, 0)
        + b"fact" + struct.pack("<II", 4, 3)
        + b"data" + struct.pack("<I", 3) + b"\x01\x02\x03\x00"
    )  # fmt: skip


def test_writer_refuses_partial_frames(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "s.wav", AudioFormat("pcm16", 8000, 2)) as w:
        with pytest.raises(ValueError, match="6 bytes is not a whole number of 4-byte sample"):
            w.write(b"\0" * 6)
        w.write(b"\0" * 8)
        assert w.num_frames == 2


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    enc=st.sampled_from(["pcm16", "pcmu", "pcma"]),
    channels=st.integers(1, 2),
    chunks=st.lists(st.binary(min_size=0, max_size=97), max_size=12),
)
def test_writer_file_equals_concatenation(
    tmp_path: Path, enc: str, channels: int, chunks: list[bytes]
) -> None:
    fmt = AudioFormat(enc, 8000, channels)  # type: ignore[arg-type]
    block = (2 if enc == "pcm16" else 1) * channels
    chunks = [c[: len(c) - len(c) % block] for c in chunks]
    p = tmp_path / "h.wav"
    with WavWriter(p, fmt) as w:
        for c in chunks:
            w.write(c)
            _check_header_matches_disk(p, w)  # consistent after every write
    h, data = read_wav(p)
    expected = b"".join(chunks)
    assert h.format.encoding == ("pcm16" if channels > 1 else enc)
    assert h.num_frames == len(expected) // block
    if channels == 1:
        assert data == expected
    info = sf.info(p)
    assert (info.frames, info.channels, info.samplerate) == (len(expected) // block, channels, 8000)
    got = sf.read(p, dtype="int16", always_2d=True)[0]
    want = i16(g711.decode(expected, enc)).reshape(-1, channels)  # type: ignore[arg-type]
    assert np.array_equal(got, want)


def _sox(*args: str) -> bytes:
    assert SOX is not None
    return subprocess.run([SOX, *args], capture_output=True, check=True).stdout


def _sox_info(p: Path, flag: str) -> str:
    return _sox("--i", flag, str(p)).decode().strip()


@needs_sox
@pytest.mark.parametrize(
    ("enc", "sox_encoding"),
    [("pcm16", "Signed Integer PCM"), ("pcmu", "u-law"), ("pcma", "A-law")],
)
@pytest.mark.parametrize("n", [0, 1, 801])
def test_sox_reads_what_we_write(tmp_path: Path, enc: Encoding, sox_encoding: str, n: int) -> None:
    p = tmp_path / "s.wav"
    samples = np.resize(SINE, n).astype("<i2").tobytes()
    with WavWriter(p, AudioFormat(enc, 8000)) as w:
        w.write(g711.encode(samples, enc))
    assert _sox_info(p, "-c") == "1"
    assert _sox_info(p, "-r") == "8000"
    assert _sox_info(p, "-e") == sox_encoding
    assert _sox_info(p, "-s") == str(n)
    # sox decodes our samples to the same values
    raw = _sox(str(p), "-t", "raw", "-e", "signed-integer", "-b", "16", "-")
    assert raw == g711.decode(g711.encode(samples, enc), enc)


@needs_sox
def test_we_read_what_sox_writes(tmp_path: Path) -> None:
    src = tmp_path / "src.wav"
    with WavWriter(src, AudioFormat("pcm16", 8000)) as w:
        w.write(SINE.tobytes())
    for enc, sox_args in [("pcmu", ["-e", "u-law"]), ("pcma", ["-e", "a-law"])]:
        out = tmp_path / f"{enc}.wav"
        _sox(str(src), *sox_args, str(out))
        h, data = read_wav(out)
        assert h.format == AudioFormat(enc, 8000)  # type: ignore[arg-type]
        assert h.num_frames == 800
        # sox rounds where audioop truncates, so compare what sox decodes, not the codes
        decoded = _sox(str(out), "-t", "raw", "-e", "signed-integer", "-b", "16", "-")
        assert g711.decode(data, h.format.encoding) == decoded


def test_writer_file_is_valid_after_the_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL runs no finally and flushes no buffer: the header must already be right."""
    p = tmp_path / "killed.wav"
    script = (
        "import os, signal\n"
        "from pipeline.frames import AudioFormat\n"
        "from stages.wavfile import WavWriter\n"
        f"w = WavWriter({str(p)!r}, AudioFormat('pcmu', 8000))\n"
        "for i in range(25):\n"
        "    w.write(bytes([i]) * 161)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    assert proc.returncode == -signal.SIGKILL
    h, data = read_wav(p)
    assert h.format == AudioFormat("pcmu", 8000)
    assert data == b"".join(bytes([i]) * 161 for i in range(25))
    assert sf.info(p).frames == 25 * 161
