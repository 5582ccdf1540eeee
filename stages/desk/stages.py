"""``mic_source`` and ``speaker_sink``: the machine's own microphone and speaker (PortAudio).

PortAudio calls back on a thread of its own every ``frame_ms``. The microphone's callback hands
each block to the event loop (``call_soon_threadsafe``) and never waits: if the pipeline falls
more than two seconds behind, the oldest audio is dropped and counted, as a sound card would.
The speaker plays from a :class:`Player`, a buffer both threads share under a lock: the stage
pushes audio into it as fast as it comes, the callback takes what it needs (silence when there
is none), and an ``interrupt`` drops everything queued. What has been played is published on
the bus (``played``) after every block, so a realtime session truncates at what was heard.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt
from pipeline.spec import stage
from stages.browser.protocol import PlayMap

from .devices import check_format, pick, portaudio, query

__all__ = ["Player", "mic_source", "speaker_sink"]

MIN_RATE, MAX_RATE = 8000, 192000


def _mic_format(params: Mapping[str, Any], _fmt: AudioFormat | None) -> AudioFormat:
    rate = int(params.get("rate", 16000))
    if not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(f"rate {rate} Hz is not a sound card's rate", "use 16000 or 48000")
    return AudioFormat("pcm16", rate, 1)


@stage("mic_source", emits=(Audio,), output_format=_mic_format)
async def mic_source(
    *,
    device: str | int | None = None,
    rate: int = 16000,
    frame_ms: int = 20,
    seconds: float | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """The machine's microphone (PortAudio): pcm16 mono at ``rate``, until Ctrl-C or
    ``seconds``. The device must record at that rate; ``pipeline devices`` lists them.

    Parameters:
        device: input device: its index, its name or part of it (default: the system's)
        rate: sample rate in Hz (the device must support it)
        frame_ms: milliseconds of audio per frame
        seconds: stop after this much audio (default: run until stopped)
    """
    sd = portaudio()
    dev = pick(query(), device, "input")
    check_format(dev, "input", rate)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(max(1, 2000 // frame_ms))
    counts = {"dropped": 0, "overflows": 0}

    def put(data: bytes) -> None:
        if queue.full():
            queue.get_nowait()
            counts["dropped"] += 1
        queue.put_nowait(data)

    def callback(indata: Any, _frames: int, _time: Any, status: Any) -> None:
        if status.input_overflow:
            counts["overflows"] += 1
        loop.call_soon_threadsafe(put, bytes(indata))

    block = max(1, round(rate * frame_ms / 1000))
    total = None if seconds is None else round(seconds * rate)
    stream = sd.RawInputStream(
        samplerate=rate, blocksize=block, device=dev.index, channels=1, dtype="int16",
        callback=callback,
    )  # fmt: skip
    stream.start()
    ctx.log.info("microphone open", device=dev.name, index=dev.index, rate=rate)
    stopping = asyncio.ensure_future(ctx.stopping.wait())
    n = 0
    try:
        while total is None or n < total:
            get = asyncio.ensure_future(queue.get())
            with ctx.waiting():  # waiting for the sound card is not work
                await asyncio.wait([get, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                break
            data = get.result()
            if total is not None:
                data = data[: 2 * (total - n)]
            frame = Audio(data, "pcm16", rate, 1, n / rate)
            n += frame.num_samples
            yield frame
    finally:
        stopping.cancel()
        stream.stop()
        stream.close()
        ctx.report("dropped_blocks", counts["dropped"])
        ctx.log.info("microphone closed", seconds=round(n / rate, 3), **counts)


class Player:
    """Audio waiting to be played, shared by the stage (event loop) and PortAudio's thread.

    ``push`` appends pcm16 bytes; ``fill(out)`` (the callback) copies what is queued into
    ``out`` and pads with silence; ``clear()`` drops everything queued. ``position`` counts
    samples played or dropped, in the order pushed."""

    def __init__(self, rate: int, capacity_s: float = 120.0) -> None:
        self.rate = rate
        self.capacity = int(capacity_s * rate) * 2
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.played = 0
        self.dropped = 0
        self.refused = 0

    @property
    def position(self) -> int:
        return self.played + self.dropped

    @property
    def queued(self) -> int:
        """Samples waiting."""
        return len(self._buf) // 2

    def push(self, data: bytes) -> None:
        with self._lock:
            room = self.capacity - len(self._buf)
            take = min(len(data), room - room % 2)
            self._buf += data[:take]
            self.refused += (len(data) - take) // 2

    def fill(self, out: Any) -> int:
        """Fill ``out`` (a writable buffer); returns the samples of audio played into it."""
        size = len(out)
        with self._lock:
            take = min(size, len(self._buf))
            out[:take] = self._buf[:take]
            del self._buf[:take]
            self.played += take // 2
        if take < size:
            out[take:size] = bytes(size - take)
        return take // 2

    def clear(self) -> int:
        """Drop everything queued; returns the position where playing stopped."""
        with self._lock:
            at = self.position
            self.dropped += len(self._buf) // 2
            self._buf.clear()
        return at


def _speaker_format(_params: Mapping[str, Any], fmt: AudioFormat | None) -> None:
    if fmt is not None and (fmt.encoding != "pcm16" or fmt.channels != 1):
        raise FormatError(
            f"gets {fmt} audio; the speaker plays pcm16 mono",
            "add {type: g711_decode} before it" if fmt.encoding != "pcm16" else "mix it to mono",
        )


@stage("speaker_sink", accepts=(Audio, Interrupt), output_format=_speaker_format)
async def speaker_sink(
    frames: AsyncIterator[Frame],
    *,
    device: str | int | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """The machine's speaker (PortAudio): plays pcm16 mono at the rate it gets, which the
    device must support. ``interrupt`` drops what is queued; what was played is published
    (``played``) so the session truncates there. At the end it waits for the audio to play out.

    Parameters:
        device: output device: its index, its name or part of it (default: the system's)
    """
    sd = portaudio()
    dev = pick(query(), device, "output")
    loop = asyncio.get_running_loop()
    player: Player | None = None
    play: PlayMap | None = None
    stream: Any = None
    drained = asyncio.Event()

    def progress() -> None:
        if player is None or play is None:
            return
        heard = play.pts_at(player.position)
        if heard is not None:
            ctx.bus.publish(PLAYED, Played(ctx.id, heard))
        if player.queued == 0:
            drained.set()

    def callback(outdata: Any, _frames: int, _time: Any, _status: Any) -> None:
        assert player is not None
        if player.fill(outdata):
            loop.call_soon_threadsafe(progress)

    def open_stream(rate: int) -> Any:
        check_format(dev, "output", rate)
        s = sd.RawOutputStream(
            samplerate=rate, blocksize=max(1, rate // 50), device=dev.index, channels=1,
            dtype="int16", callback=callback,
        )  # fmt: skip
        s.start()
        ctx.log.info("speaker open", device=dev.name, index=dev.index, rate=rate)
        return s

    try:
        async for frame in frames:
            if isinstance(frame, Audio):
                if player is None or play is None:
                    _speaker_format({}, frame.format)
                    player, play = Player(frame.rate), PlayMap(frame.rate)
                    stream = open_stream(frame.rate)
                if frame.rate != player.rate:
                    raise FormatError(
                        f"stage '{ctx.id}' (speaker_sink) got {frame.rate} Hz audio after "
                        f"{player.rate} Hz; a sound card stream has one rate",
                        f"add {{type: resample, rate: {player.rate}}} before it",
                    )
                drained.clear()
                play.sent(frame.pts, frame.num_samples)
                player.push(frame.data)
            elif player is not None and play is not None:  # an interrupt
                heard = play.pts_at(player.clear())
                if heard is not None:
                    ctx.bus.publish(PLAYED, Played(ctx.id, heard))
        if player is not None and player.queued:
            with ctx.waiting():
                await asyncio.wait_for(drained.wait(), player.queued / player.rate + 2.0)
    finally:
        if stream is not None:
            stream.stop()
            stream.close()
        if player is not None:
            ctx.report("played_s", round(player.played / player.rate, 3))
            ctx.log.info(
                "speaker closed",
                played_s=round(player.played / player.rate, 3),
                dropped_s=round(player.dropped / player.rate, 3),
            )
    return
    yield  # an async generator that yields nothing
