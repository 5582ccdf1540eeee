"""Two-party call recording: a stereo WAV, the caller on the left, the agent on the right,
both where the caller heard them on the call's clock.

Theory of operation
-------------------
The call's clock is the media stream's own: Twilio stamps each caller frame with the ms since
the stream began, so the caller's audio goes on the left at its timestamp. The agent's audio is
placed where the caller heard it: a chunk sent to Twilio starts playing when it arrives or when
the chunk before it ends, whichever is later ("arrives" = the end of the last caller frame
received when it was sent, on the same clock). A chunk is written once the caller is known to
have heard it (its mark came back); a barge-in (``clear``) keeps only what had played by then
and drops the rest, which the caller never heard; at the end of the call, chunks still pending
keep the part that had played before the call ended.

:class:`TwoPartyMix` is that bookkeeping, pure and synchronous: events in, stereo PCM16 out
(:meth:`TwoPartyMix.take` returns the samples that can no longer change). The
``call_recorder`` stage feeds it the caller's audio from its input link and the agent's chunks,
marks and clears from the call's sink (a tap on :class:`~stages.telephony.twilio.TwilioCall`),
and appends what is final to a :class:`~stages.wavfile.WavWriter`, whose header is valid after
every write: whatever ends the call, the file is a valid WAV.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.context import StageContext
from pipeline.errors import FormatError, StageError
from pipeline.frames import Audio, AudioFormat, Frame
from pipeline.spec import OutputPath, stage
from stages.g711 import decode
from stages.wavfile import WavWriter

from .twilio import CALL, current_call

__all__ = ["RATE", "TwoPartyMix", "call_recorder"]

RATE = 8000


@dataclass(slots=True)
class _Chunk:
    name: str
    start: int  # sample on the call clock where it starts playing
    samples: npt.NDArray[np.int16]

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


class TwoPartyMix:
    """Caller and agent audio placed on the call's clock (samples at the stream's rate from
    its start). Feed it :meth:`caller`, :meth:`sent`, :meth:`echoed`, :meth:`cleared`, then
    :meth:`finish`; :meth:`take` hands out the stereo samples that are final."""

    def __init__(self) -> None:
        self._left = np.zeros(0, np.int16)
        self._right = np.zeros(0, np.int16)
        self._base = 0  # call-clock sample of _left[0] / _right[0] (what take() gave out)
        self._caller_end = 0  # end of the caller audio seen so far
        self._agent_end = 0  # when the last chunk sent ends playing
        self._pending: deque[_Chunk] = deque()
        self._finished = False
        #: agent samples dropped by barge-ins (sent, never heard)
        self.dropped = 0

    def _ensure(self, end: int) -> None:
        n = end - self._base
        if n > len(self._left):
            grow = n - len(self._left)
            self._left = np.concatenate([self._left, np.zeros(grow, np.int16)])
            self._right = np.concatenate([self._right, np.zeros(grow, np.int16)])

    def _put(self, channel: str, start: int, samples: npt.NDArray[np.int16]) -> None:
        if start < self._base:  # already handed out: only the rest can still be placed
            samples = samples[self._base - start :]
            start = self._base
        if not len(samples):
            return
        self._ensure(start + len(samples))
        buf = self._left if channel == "left" else self._right
        buf[start - self._base : start - self._base + len(samples)] = samples

    def caller(self, start: int, samples: npt.NDArray[np.int16]) -> None:
        """Caller audio (PCM16) that starts at call-clock sample ``start``."""
        self._put("left", start, samples)
        self._caller_end = max(self._caller_end, start + len(samples))

    def sent(self, name: str, samples: npt.NDArray[np.int16], at: int) -> None:
        """An agent chunk (PCM16) sent when the call clock was at sample ``at``; it plays from
        ``max(at, end of the previous chunk)``."""
        start = max(at, self._agent_end)
        chunk = _Chunk(name, start, samples)
        self._agent_end = chunk.end
        self._pending.append(chunk)

    def echoed(self, name: str) -> None:
        """The caller heard everything up to the end of chunk ``name``."""
        if not any(c.name == name for c in self._pending):
            return  # an echo after a clear
        while self._pending:
            chunk = self._pending.popleft()
            self._put("right", chunk.start, chunk.samples)
            if chunk.name == name:
                return

    def cleared(self, at: int) -> None:
        """Barge-in at call-clock sample ``at``: what had played stays, the rest is dropped."""
        self._settle(at)
        self._agent_end = at

    def _settle(self, at: int) -> None:
        while self._pending:
            chunk = self._pending.popleft()
            heard = max(0, min(len(chunk.samples), at - chunk.start))
            self._put("right", chunk.start, chunk.samples[:heard])
            self.dropped += len(chunk.samples) - heard

    def finish(self, at: int | None = None) -> None:
        """The call ended at sample ``at`` (default: the end of the caller's audio)."""
        self._settle(self._caller_end if at is None else at)
        self._finished = True

    def take(self) -> bytes:
        """Interleaved stereo PCM16 for every sample that can no longer change (all of it
        after :meth:`finish`)."""
        if self._finished:
            upto = self._base + len(self._left)
        else:
            upto = self._caller_end
            if self._pending:
                upto = min(upto, self._pending[0].start)
        n = upto - self._base
        if n <= 0:
            return b""
        self._ensure(upto)
        out = np.empty(2 * n, "<i2")
        out[0::2] = self._left[:n]
        out[1::2] = self._right[:n]
        self._left = self._left[n:]
        self._right = self._right[n:]
        self._base = upto
        return out.tobytes()


def _pcm(data: bytes, encoding: str) -> npt.NDArray[np.int16]:
    raw = data if encoding == "pcm16" else decode(data, encoding)  # type: ignore[arg-type]
    return np.frombuffer(raw, "<i2").copy()


class _Tap:
    """What the call's sink reports, turned into mix events."""

    def __init__(self, mix: TwoPartyMix, fmt: AudioFormat) -> None:
        self.mix = mix
        self.encoding = fmt.encoding
        self.rate = fmt.rate

    def sent(self, name: str, payload: bytes, at_ms: int) -> None:
        self.mix.sent(name, _pcm(payload, self.encoding), at_ms * self.rate // 1000)

    def echoed(self, name: str) -> None:
        self.mix.echoed(name)

    def cleared(self, at_ms: int) -> None:
        self.mix.cleared(at_ms * self.rate // 1000)


def _recorder_format(_params: object, fmt: AudioFormat | None) -> None:
    if fmt is not None and fmt.channels != 1:
        raise FormatError(
            f"gets {fmt} audio; call_recorder takes the caller's audio as it comes from the "
            "call (mono)",
            "link it straight from the call's source stage",
        )


@stage(
    "call_recorder",
    accepts=(Audio,),
    emits=(),
    output_format=_recorder_format,
    uses=(CALL,),
)
async def call_recorder(
    frames: AsyncIterator[Frame], *, path: OutputPath, ctx: StageContext
) -> AsyncIterator[Frame]:
    """Record the call as a stereo WAV (PCM16 at the stream's rate): the caller left, the
    agent right, both where the caller heard them; agent audio cut off by a barge-in is not
    in it. Link the
    caller's audio into it (``caller -> recorder``); the agent's comes from the call itself.
    The file is valid whatever ends the call.

    Parameters:
        path: the WAV file to write (parent folders are created)
    """
    call = current_call(ctx.id)
    fmt = call.format
    mix = TwoPartyMix()
    tap = _Tap(mix, fmt)
    try:
        writer = WavWriter(path, AudioFormat("pcm16", fmt.rate, 2))
    except OSError as exc:
        raise StageError(ctx.id, f"cannot write {path}: {exc.strerror or exc}") from None
    call.attach_tap(tap)
    try:
        async for frame in frames:
            if isinstance(frame, Audio):
                if frame.format != fmt:
                    raise FormatError(
                        f"stage '{ctx.id}' (call_recorder) got {frame.format} audio; the "
                        f"call's stream carries {fmt}",
                        "link it straight from the call's source stage",
                    )
                mix.caller(round(frame.pts * fmt.rate), _pcm(frame.data, frame.encoding))
                writer.write(mix.take())
        mix.finish()
    finally:
        if tap in call.taps:
            call.taps.remove(tap)
        if not mix._finished:  # cancelled or failed: keep what is known
            mix.finish()
        try:
            writer.write(mix.take())
        finally:
            writer.close()
        ctx.report("agent_samples_dropped", mix.dropped)
    return
    yield
