"""WAV files: a header reader for validation, a streaming reader, and a crash-safe writer.

Pure synchronous code (no event loop); ``wav_source`` and ``wav_sink`` adapt it to streams.

Reading
=======

:func:`read_header` parses the RIFF structure without reading the samples, so the graph can
learn a source's audio format before running; :class:`WavReader` then streams the samples.

Passed through as stored (no conversion):

- 16-bit PCM, mono → ``pcm16``
- μ-law (format tag 7), 8-bit, mono → ``pcmu``
- A-law (format tag 6), 8-bit, mono → ``pcma``

Converted to ``pcm16`` mono (:attr:`WavHeader.conversion` says which rule applied):

- 8-bit PCM (unsigned, offset 128): ``(x - 128) * 256`` (exact)
- 24-bit and 32-bit integer PCM: ``x / 2**(bits - 16)``
- 32-bit and 64-bit IEEE float: ``x * 32768``
- more than one channel (any of the above, μ-law and A-law included, decoded first):
  the mean of the channels

Every conversion rounds to the nearest integer (ties to even) once, after mixing, and clips
to [-32768, 32767].

Also understood: ``WAVE_FORMAT_EXTENSIBLE`` (tag 0xFFFE) whose sub-format is PCM, IEEE float,
μ-law or A-law; any chunks before ``data`` (LIST, fact, cue, ...); the pad byte after an
odd-sized chunk; a ``data`` size of 0xFFFFFFFF (written by streaming tools) meaning "up to the
end of the file". A WAV with no samples is valid.

Refused with :class:`~pipeline.errors.InputError`, one line naming the file, what is wrong and
what to do: not RIFF/WAVE, RIFX (big-endian) and RF64, compressed encodings (ADPCM, GSM, MP3,
...), a truncated file (a chunk, or the ``data`` chunk, longer than what the file holds), a
missing ``fmt`` or ``data`` chunk, impossible ``fmt`` values.

Writing
=======

:class:`WavWriter` writes PCM16, μ-law or A-law WAV. The header is written first (a valid
empty WAV) and every :meth:`WavWriter.write` appends the samples, then rewrites the RIFF,
``fact`` and ``data`` sizes, unbuffered: whatever stops the process between two writes (an error,
a cancel, Ctrl-C, even a kill), the file on disk is a valid WAV holding every sample written.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError, UsageError
from pipeline.frames import BYTES_PER_SAMPLE, AudioFormat

from .g711 import ALAW_DECODE, ULAW_DECODE

__all__ = [
    "STREAM_DATA_SIZE",
    "WavHeader",
    "WavReader",
    "WavStreamReader",
    "WavStreamWriter",
    "WavWriter",
    "read_header",
    "read_wav",
]

WAVE_FORMAT_PCM: Final = 0x0001
WAVE_FORMAT_IEEE_FLOAT: Final = 0x0003
WAVE_FORMAT_ALAW: Final = 0x0006
WAVE_FORMAT_MULAW: Final = 0x0007
WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE

# KSDATAFORMAT_SUBTYPE_*: the format tag in the first two bytes, then this fixed GUID tail.
_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

_TAG_NAMES: Final = {
    0x0002: "Microsoft ADPCM",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MP3",
    0x0064: "G.726 ADPCM",
    0x0065: "G.722 ADPCM",
    0x1610: "AAC",
}

_DATA_TO_EOF: Final = 0xFFFFFFFF
_MAX_RIFF: Final = 0xFFFFFFFF

Kind = Literal["pcm", "float", "ulaw", "alaw"]


def _display(path: Path) -> str:
    """The path as the user most likely wrote it: relative to the working folder if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


_CONVERT_HINT: Final = "convert it with e.g. 'sox IN.wav -e signed-integer -b 16 OUT.wav'"
#: For a file that is not a WAV at all (an MP3 or OGG renamed, a text file, an empty file).
_NOT_WAV_HINT: Final = "give a WAV file, or convert this one with e.g. 'sox IN OUT.wav'"


@dataclass(frozen=True, slots=True)
class WavHeader:
    """What :func:`read_header` found in a WAV file.

    ``format`` is the audio the reader yields (after conversion, see the module docstring);
    ``channels``, ``bits``, ``format_tag`` and ``block_align`` describe the file itself.
    """

    path: Path
    format: AudioFormat
    num_frames: int
    data_offset: int
    data_size: int
    format_tag: int
    kind: Kind
    channels: int
    bits: int
    block_align: int
    conversion: str = ""
    #: read from a stream (standard input): ``num_frames`` and ``data_size`` are unknown (0)
    streamed: bool = False

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.num_frames / self.format.rate

    @property
    def passthrough(self) -> bool:
        """True when the stored bytes are yielded unchanged."""
        return not self.conversion


def read_header(path: str | os.PathLike[str]) -> WavHeader:
    """Parse a WAV file's chunks (not its samples). Raises InputError for a file we can't use."""
    path = Path(path)
    name = _display(path)
    try:
        with open(path, "rb") as f:
            return _parse(f, os.fstat(f.fileno()).st_size, path, name)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a folder, not a WAV file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied; make the file readable") from None


def _parse(f: BinaryIO, size: int, path: Path, name: str) -> WavHeader:
    def fail(what: str) -> InputError:
        return InputError(f"{name}: {what}")

    head = f.read(12)
    if size == 0:
        raise fail(f"empty file (0 bytes), not a WAV file; {_NOT_WAV_HINT}")
    if head[:4] == b"RIFX":
        raise fail(f"big-endian RIFX WAV is not supported; {_CONVERT_HINT}")
    if head[:4] == b"RF64":
        raise fail(f"RF64 WAV (for files over 4 GB) is not supported; {_CONVERT_HINT}")
    if head[:4] != b"RIFF":
        raise fail(f"not a WAV file (starts with {head[:4]!r}); {_NOT_WAV_HINT}")
    if len(head) < 12:
        raise fail(f"too short to be a WAV file ({size} bytes); {_NOT_WAV_HINT}")
    if head[8:12] != b"WAVE":
        raise fail(f"a RIFF file but not WAVE (form type {head[8:12]!r}); {_NOT_WAV_HINT}")

    fmt: bytes | None = None
    pos = 12
    while True:
        if pos + 8 > size:
            missing = "fmt and data chunks" if fmt is None else "data chunk"
            raise fail(f"no {missing} (the file ends after {size} bytes); the file is truncated")
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        body = pos + 8
        available = size - body
        if chunk_id == b"data":
            if fmt is None:
                raise fail("the data chunk comes before any fmt chunk; the file is damaged")
            return _header(fmt, body, chunk_size, available, path, name)
        if chunk_size > available:
            raise fail(
                f"{chunk_id.decode('latin-1')!r} chunk at byte {pos} says {chunk_size} bytes, "
                f"file has {available}; the file is truncated"
            )
        if chunk_id == b"fmt ":
            fmt = f.read(chunk_size)
        pos = body + chunk_size + (chunk_size & 1)


def _header(
    fmt: bytes,
    data_offset: int,
    data_size: int,
    available: int,
    path: Path,
    name: str,
) -> WavHeader:
    def fail(what: str) -> InputError:
        return InputError(f"{name}: {what}")

    if len(fmt) < 16:
        raise fail(f"fmt chunk is {len(fmt)} bytes, needs at least 16; the file is damaged")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise fail(f"WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(fmt)} bytes, needs 40")
        guid = fmt[24:40]
        sub = struct.unpack("<H", guid[:2])[0]
        if guid[2:] != _GUID_TAIL:
            raise fail(
                f"unsupported WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}; {_CONVERT_HINT}"
            )
        tag = sub
    kind: Kind
    if tag == WAVE_FORMAT_PCM:
        kind = "pcm"
    elif tag == WAVE_FORMAT_IEEE_FLOAT:
        kind = "float"
    elif tag == WAVE_FORMAT_MULAW:
        kind = "ulaw"
    elif tag == WAVE_FORMAT_ALAW:
        kind = "alaw"
    else:
        what = _TAG_NAMES.get(tag, "an unknown encoding")
        raise fail(f"{what} (WAV format tag {tag:#06x}) is not supported; {_CONVERT_HINT}")
    if channels == 0:
        raise fail("fmt chunk says 0 channels; the file is damaged")
    if rate == 0:
        raise fail("fmt chunk says 0 samples per second; the file is damaged")
    if block_align == 0 or block_align % channels:
        raise fail(
            f"fmt chunk says {block_align} bytes per sample frame for {channels} channels; "
            "the file is damaged"
        )
    width = block_align // channels
    allowed = {"pcm": (1, 2, 3, 4), "float": (4, 8), "ulaw": (1,), "alaw": (1,)}[kind]
    if width not in allowed:
        label = {"pcm": "integer PCM", "float": "float", "ulaw": "μ-law", "alaw": "A-law"}[kind]
        raise fail(f"{width * 8}-bit {label} is not supported; {_CONVERT_HINT}")

    if data_size == _DATA_TO_EOF:
        data_size = available - available % block_align
    elif data_size > available:
        raise fail(
            f"data chunk says {data_size} bytes, file has {available}; the file is truncated"
        )
    if data_size % block_align:
        raise fail(
            f"data chunk holds {data_size} bytes, not a whole number of {block_align}-byte "
            "sample frames; the file is damaged"
        )

    native = {"pcm": "pcm16", "ulaw": "pcmu", "alaw": "pcma"}.get(kind)
    conversion = ""
    if channels == 1 and native is not None and (kind != "pcm" or width == 2):
        out = AudioFormat(native, rate)  # type: ignore[arg-type]
    else:
        out = AudioFormat("pcm16", rate)
        parts = []
        if kind == "pcm" and width == 1:
            parts.append("8-bit unsigned PCM to 16-bit: (x - 128) * 256")
        elif kind == "pcm" and width > 2:
            parts.append(f"{width * 8}-bit PCM to 16-bit: x / {2 ** (width * 8 - 16)}")
        elif kind == "float":
            parts.append(f"{width * 8}-bit float to 16-bit: x * 32768")
        elif kind in ("ulaw", "alaw"):
            parts.append(f"{'μ' if kind == 'ulaw' else 'A'}-law decoded to 16-bit")
        if channels > 1:
            parts.append(f"{channels} channels mixed to mono by their mean")
        conversion = "; ".join(parts) + "; rounded to nearest and clipped"
    return WavHeader(
        path=path,
        format=out,
        num_frames=data_size // block_align,
        data_offset=data_offset,
        data_size=data_size,
        format_tag=tag,
        kind=kind,
        channels=channels,
        bits=bits,
        block_align=block_align,
        conversion=conversion,
    )


def _to_pcm16(raw: bytes, h: WavHeader) -> bytes:
    """Convert whole sample frames of ``h``'s stored format to pcm16 mono (see module doc)."""
    width = h.block_align // h.channels
    x: npt.NDArray[np.float64]
    if h.kind == "pcm":
        if width == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) * 256.0
        elif width == 2:
            x = np.frombuffer(raw, "<i2").astype(np.float64)
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            x = v.astype(np.float64) / 256.0
        else:
            x = np.frombuffer(raw, "<i4").astype(np.float64) / 65536.0
    elif h.kind == "float":
        x = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float64) * 32768.0
    else:
        table = ULAW_DECODE if h.kind == "ulaw" else ALAW_DECODE
        x = table.take(np.frombuffer(raw, np.uint8)).astype(np.float64)
    if h.channels > 1:
        x = x.reshape(-1, h.channels).mean(axis=1)
    # NaN (from a float file) becomes 0 rather than an undefined integer
    y = np.clip(np.rint(np.nan_to_num(x, nan=0.0)), -32768, 32767).astype("<i2")
    return y.tobytes()


class WavReader:
    """Stream a WAV file's samples in :attr:`header`.format, ``n`` sample frames at a time.

    Use as a context manager; :meth:`read` returns ``b""`` at the end, :meth:`rewind` starts over.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.header = read_header(path)
        self._f: BinaryIO = open(self.header.path, "rb")  # noqa: SIM115 - closed in close()
        self._pos = 0  # sample frames read
        self.rewind()

    @property
    def format(self) -> AudioFormat:
        return self.header.format

    @property
    def position(self) -> int:
        """Sample frames read so far (since the last rewind)."""
        return self._pos

    def rewind(self) -> None:
        self._f.seek(self.header.data_offset)
        self._pos = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` sample frames, converted; ``b""`` at the end of the data."""
        h = self.header
        n = max(0, min(n, h.num_frames - self._pos))
        if n == 0:
            return b""
        want = n * h.block_align
        raw = self._f.read(want)
        if len(raw) != want:
            raise InputError(
                f"{_display(h.path)}: the file shrank while being read "
                f"(wanted {want} bytes at sample {self._pos}, got {len(raw)})"
            )
        self._pos += n
        return raw if h.passthrough else _to_pcm16(raw, h)

    def chunks(self, n: int) -> Iterator[bytes]:
        """What :meth:`read` (``n``) returns, call after call, up to the end (not included): a
        generator, cheaper per chunk than calling :meth:`read`. Files stored as they are
        streamed are read ahead in blocks of about 64 KiB and cut into chunks (so do not mix
        it with :meth:`read`); :attr:`position` counts the chunks yielded. :meth:`rewind` and
        a new generator start over."""
        h = self.header
        if n <= 0:
            return
        if not h.passthrough:
            while data := self.read(n):
                yield data
            return
        read = self._f.read
        align = h.block_align
        size = n * align
        per_block = max(1, (1 << 16) // size)
        while (left := h.num_frames - self._pos) > 0:
            want = min(left, n * per_block) * align
            block = read(want)
            if len(block) != want:
                raise InputError(
                    f"{_display(h.path)}: the file shrank while being read "
                    f"(wanted {want} bytes at sample {self._pos}, got {len(block)})"
                )
            for i in range(0, want, size):
                chunk = block[i : i + size]
                self._pos += len(chunk) // align
                yield chunk

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> WavReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_wav(path: str | os.PathLike[str]) -> tuple[WavHeader, bytes]:
    """The whole file at once: its header and all samples in ``header.format``."""
    with WavReader(path) as r:
        return r.header, r.read(r.header.num_frames)


_WRITE_TAG: Final = {"pcm16": WAVE_FORMAT_PCM, "pcmu": WAVE_FORMAT_MULAW, "pcma": WAVE_FORMAT_ALAW}


def _header_layout(format: AudioFormat) -> tuple[bytes, int | None, int]:
    """An empty WAV's header for ``format``: the bytes (sizes zero), the offset of the ``fact``
    sample count (None for PCM, which has no ``fact`` chunk) and that of the ``data`` size."""
    block_align = BYTES_PER_SAMPLE[format.encoding] * format.channels
    tag = _WRITE_TAG[format.encoding]
    bits = 8 * BYTES_PER_SAMPLE[format.encoding]
    fmt = struct.pack(
        "<HHIIHH", tag, format.channels, format.rate, format.rate * block_align, block_align, bits
    )
    header = b"RIFF\0\0\0\0WAVE"
    fact_at: int | None = None
    if tag == WAVE_FORMAT_PCM:
        header += b"fmt " + struct.pack("<I", 16) + fmt
    else:
        header += b"fmt " + struct.pack("<I", 18) + fmt + b"\0\0"
        fact_at = len(header) + 8
        header += b"fact" + struct.pack("<II", 4, 0)
    data_size_at = len(header) + 4
    header += b"data\0\0\0\0"
    return header, fact_at, data_size_at


class WavWriter:
    """Write a PCM16, μ-law or A-law WAV file whose header always matches the data on disk.

    The constructor creates missing parent folders and writes a valid empty WAV; each
    :meth:`write` appends whole sample frames and updates the sizes before returning, with no
    buffering in between. :meth:`close` only closes the file. μ-law and A-law files carry the
    18-byte ``fmt`` chunk and the ``fact`` chunk that non-PCM WAV requires.
    """

    def __init__(self, path: str | os.PathLike[str], format: AudioFormat) -> None:
        self.path = Path(path)
        self.format = format
        self.block_align = BYTES_PER_SAMPLE[format.encoding] * format.channels
        self.data_bytes = 0
        self._pad = 0
        header, self._fact_at, self._data_size_at = _header_layout(format)
        self.data_offset = len(header)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        try:
            self._put(0, header)
            self._update_sizes()
        except BaseException:
            self._f.close()
            raise

    @property
    def num_frames(self) -> int:
        """Sample frames written so far."""
        return self.data_bytes // self.block_align

    @property
    def closed(self) -> bool:
        return self._f.closed

    def _put(self, offset: int, data: bytes) -> None:
        self._f.seek(offset)
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            if n is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[n:]

    def _update_sizes(self) -> None:
        riff = self.data_offset - 8 + self.data_bytes + self._pad
        self._put(4, struct.pack("<I", riff))
        if self._fact_at is not None:
            self._put(self._fact_at, struct.pack("<I", self.num_frames))
        self._put(self._data_size_at, struct.pack("<I", self.data_bytes))

    def write(self, data: bytes) -> None:
        """Append whole sample frames (bytes in :attr:`format`) and update the header."""
        if not data:
            return
        if len(data) % self.block_align:
            raise UsageError(
                f"{len(data)} bytes is not a whole number of {self.block_align}-byte sample "
                f"frames of {self.format}"
            )
        total = self.data_bytes + len(data)
        if self.data_offset + total + 1 > _MAX_RIFF:
            raise OSError(f"{_display(self.path)}: a WAV file cannot hold more than 4 GB")
        pad = total & 1
        # Samples (and the RIFF pad byte after an odd-sized data chunk) first, then the sizes:
        # if we stop in between, the header describes a prefix of what is on disk.
        self._put(self.data_offset + self.data_bytes, data)
        if pad:
            self._put(self.data_offset + total, b"\0")
        self.data_bytes = total
        self._pad = pad
        self._update_sizes()

    def close(self) -> None:
        """Close the file (the header is already up to date). Safe to call twice."""
        self._f.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------- streams

#: The ``data`` size (and ``fact`` count) in the header of a WAV written to a stream, as sox
#: writes it: the real length is not known when the header goes out, so readers (sox, ffmpeg,
#: ours) take the data up to the end of the stream.
STREAM_DATA_SIZE: Final = 0x7FFFF000
#: A ``fmt`` or other chunk before ``data`` larger than this is not a WAV header.
_MAX_HEADER_CHUNK: Final = 1 << 20


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """``n`` bytes, fewer only at the end of the stream (a pipe returns what it has)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class WavStreamReader:
    """Read a WAV from a stream that cannot seek: standard input, a pipe from sox or ffmpeg.

    The chunks before ``data`` are read in order (``fmt`` kept, others skipped). The ``data``
    size a streaming tool writes is a placeholder (sox: 0x7FFFF000, ffmpeg: 0xFFFFFFFF, some
    tools 0): a size of 0 or 0xFFFFFFFF means "to the end of the stream", any other size is
    read up to that size or the end of the stream, whichever comes first. A last partial sample
    frame is dropped. Formats and conversions are those of :func:`read_header`. Blocking: call
    it from a thread when an event loop must not wait.
    """

    def __init__(self, stream: BinaryIO, name: str = "standard input") -> None:
        self._f = stream
        self.name = name
        self._pos = 0
        self._remaining: int | None = None
        self.header = self._parse()

    @property
    def format(self) -> AudioFormat:
        return self.header.format

    @property
    def position(self) -> int:
        """Sample frames read so far."""
        return self._pos

    def _parse(self) -> WavHeader:
        name = self.name

        def fail(what: str) -> InputError:
            return InputError(f"{name}: {what}")

        head = _read_exact(self._f, 12)
        if not head:
            raise fail(f"no data arrived (0 bytes), not a WAV stream; {_NOT_WAV_HINT}")
        if head[:4] == b"RIFX":
            raise fail(f"big-endian RIFX WAV is not supported; {_CONVERT_HINT}")
        if head[:4] == b"RF64":
            raise fail(f"RF64 WAV is not supported; {_CONVERT_HINT}")
        if head[:4] != b"RIFF" or len(head) < 12 or head[8:12] != b"WAVE":
            raise fail(
                f"not a WAV stream (starts with {head[:12]!r}); write WAV to the pipe, "
                "e.g. 'sox IN -t wav -' or 'ffmpeg -i IN -f wav -'"
            )
        fmt: bytes | None = None
        pos = 12
        while True:
            chunk = _read_exact(self._f, 8)
            if len(chunk) < 8:
                missing = "fmt and data chunks" if fmt is None else "data chunk"
                raise fail(f"no {missing} (the stream ended after {pos + len(chunk)} bytes)")
            chunk_id, size = struct.unpack("<4sI", chunk)
            pos += 8
            if chunk_id == b"data":
                if fmt is None:
                    raise fail("the data chunk comes before any fmt chunk; the stream is damaged")
                header = _header(fmt, pos, 0, 0, Path("-"), name)
                if size not in (0, _DATA_TO_EOF):
                    self._remaining = size - size % header.block_align
                return replace(header, streamed=True)
            if size > _MAX_HEADER_CHUNK:
                raise fail(
                    f"{chunk_id.decode('latin-1')!r} chunk of {size} bytes before the data; "
                    "the stream is damaged"
                )
            body = _read_exact(self._f, size + (size & 1))
            if len(body) < size:
                raise fail(f"the stream ended inside the {chunk_id.decode('latin-1')!r} chunk")
            if chunk_id == b"fmt ":
                fmt = body[:size]
            pos += len(body)

    def read(self, n: int) -> bytes:
        """Up to ``n`` sample frames, converted; ``b""`` at the end of the stream."""
        h = self.header
        want = n * h.block_align
        if self._remaining is not None:
            want = min(want, self._remaining)
        if want <= 0:
            return b""
        raw = _read_exact(self._f, want)
        raw = raw[: len(raw) - len(raw) % h.block_align]
        if self._remaining is not None:
            self._remaining -= len(raw)
        self._pos += len(raw) // h.block_align
        return raw if h.passthrough else _to_pcm16(raw, h)


class WavStreamWriter:
    """Write a PCM16, μ-law or A-law WAV to a stream that cannot seek (standard output).

    The header carries :data:`STREAM_DATA_SIZE` as its sizes (as sox does when writing to a
    pipe), since the length is not known when it goes out; each :meth:`write` appends whole
    sample frames and flushes. The stream is not closed by :meth:`close`.
    """

    def __init__(self, stream: BinaryIO, format: AudioFormat) -> None:
        self._f = stream
        self.format = format
        self.block_align = BYTES_PER_SAMPLE[format.encoding] * format.channels
        self.data_bytes = 0
        header, fact_at, data_size_at = _header_layout(format)
        buf = bytearray(header)
        struct.pack_into("<I", buf, 4, len(header) - 8 + STREAM_DATA_SIZE)
        if fact_at is not None:
            struct.pack_into("<I", buf, fact_at, STREAM_DATA_SIZE // self.block_align)
        struct.pack_into("<I", buf, data_size_at, STREAM_DATA_SIZE)
        self._f.write(bytes(buf))
        self._f.flush()

    @property
    def num_frames(self) -> int:
        """Sample frames written so far."""
        return self.data_bytes // self.block_align

    def write(self, data: bytes) -> None:
        """Append whole sample frames (bytes in :attr:`format`) and flush."""
        if len(data) % self.block_align:
            raise ValueError(
                f"{len(data)} bytes is not a whole number of {self.block_align}-byte sample "
                f"frames of {self.format}"
            )
        self._f.write(data)
        self._f.flush()
        self.data_bytes += len(data)

    def close(self) -> None:
        """Flush (the stream stays open: it belongs to the process)."""
        self._f.flush()
