"""A caller on any carrier's media stream (Twilio, Telnyx, Plivo, Vonage, Exotel), for tests
and load: plays audio into ``pipeline serve`` as that carrier would and records what comes back.

Per call: the carrier's opening messages (:meth:`~stages.telephony.carriers.base.CarrierSide.
opening`), the caller's audio in the carrier's frames (20 ms, 100 ms for Exotel) paced against
an injectable clock, optional key presses, then, once the reply has gone quiet and every mark
has played, the carrier's stop (or just a close, for carriers that send none). Every message
the server sends is read strictly by the carrier's side (:meth:`CarrierSide.read`: exact
fields, sizes and formats; violations recorded). Outgoing audio goes into the same player
model as :mod:`benchmarks.callsim`: chunks play back to back, a mark is reported played once
the audio before it has, ``clear`` drops what is unplayed (its pending marks are never
reported, as none of these carriers promises to).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from benchmarks.callsim import DueMarks, Player, wait_quiet
from pipeline.clock import Clock, RealClock
from pipeline.frames import AudioFormat
from stages.telephony.carriers import SIDES, CarrierMessageError

__all__ = ["CarrierCall", "frame_ms_of", "run_carrier_call"]


def frame_ms_of(carrier: str) -> int:
    """How much audio the carrier sends per media message."""
    return 100 if carrier == "exotel" else 20


@dataclass
class CarrierCall:
    """What one simulated call sent and got back."""

    carrier: str
    sent_audio: bytes = b""
    received_audio: bytearray = field(default_factory=bytearray)
    marks: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    clears: int = 0
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    refused: str = ""
    media_messages: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.refused and self.close_code in (1000, None)


async def run_carrier_call(
    url: str,
    carrier: str,
    fmt: AudioFormat,
    audio: bytes,
    *,
    clock: Clock | None = None,
    call_id: str = "call-0001",
    stream_id: str = "stream-0001",
    parameters: Mapping[str, str] | None = None,
    digits: str = "",
    quiet_s: float = 0.15,
    tail_s: float = 5.0,
    close_timeout_s: float = 10.0,
    clock_origin: float | None = None,
) -> CarrierCall:
    """Play ``audio`` (``fmt``, little-endian for pcm16) into ``url`` as ``carrier`` and record
    the reply; ``digits`` are pressed after the audio."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    clock = clock or RealClock()
    side = SIDES[carrier](fmt, call_id, stream_id)
    rec = CarrierCall(carrier, sent_audio=audio)
    player = Player()
    bps = fmt.bytes_per_second
    due = DueMarks()
    last_media = [clock.now()]

    def units(n: int) -> int:  # the player counts 8 kHz samples
        return n * 8000 // bps

    try:
        ws = await connect(url, compression=None, max_size=2**20)
    except InvalidStatus as exc:
        rec.refused = f"HTTP {exc.response.status_code}"
        return rec
    except (OSError, TimeoutError) as exc:  # a starved server: a failed call, not a crash
        rec.errors.append(f"no connection: {type(exc).__name__}: {exc}")
        return rec
    async with ws:
        lock = asyncio.Lock()

        async def send(message: str | bytes) -> None:
            async with lock:
                await ws.send(message)

        def on_message(raw: str | bytes) -> None:
            now = clock.now()
            try:
                kind, value = side.read(raw)
            except CarrierMessageError as exc:
                rec.errors.append(str(exc))
                return
            if kind == "media":
                player.media(now, units(len(value)))
                rec.received_audio += value
                rec.media_messages += 1
                last_media[0] = now
            elif kind == "mark":
                rec.marks.append(value)
                due.add(player.mark(now), value)
            else:
                rec.clears += 1
                player.clear(now)
                due.clear()

        async def receiver() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    on_message(raw)

        async def report(names: list[str]) -> None:
            for name in names:
                rec.played.append(name)
                with contextlib.suppress(ConnectionClosed):
                    await send(side.mark_played(name))

        recv_task = asyncio.create_task(receiver())
        report_task = asyncio.create_task(due.run(clock, report))
        try:
            for message in side.opening(parameters or {}):
                await send(message)
            step = bps * frame_ms_of(carrier) // 1000
            t0 = clock_origin if clock_origin is not None else clock.now()
            for i in range(0, (len(audio) + step - 1) // step):
                await clock.sleep_until(t0 + i * step / bps)
                frame = audio[i * step : (i + 1) * step]
                if len(frame) < step:  # the carrier's frames are whole
                    frame += bytes(step - len(frame))
                await send(side.media(i + 1, i * frame_ms_of(carrier), frame))
            for digit in digits:
                await send(side.dtmf(digit))
            await wait_quiet(
                clock,
                last_media,
                quiet_s,
                tail_s,
                lambda: not due and len(rec.played) == len(rec.marks),
                recv_task.done,
            )
            stop = side.stop()
            if stop is not None:
                await send(stop)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(close_timeout_s):
                        await recv_task
        except ConnectionClosed:
            pass
        finally:
            report_task.cancel()
            recv_task.cancel()
            await asyncio.gather(report_task, recv_task, return_exceptions=True)
    rec.close_code = ws.close_code
    return rec
