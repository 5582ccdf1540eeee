"""call_recorder: caller left, agent right, where the caller heard them; barged-in audio
absent. The mix is checked sample by sample; the WAV written during a real call over loopback
is read back with soundfile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.frames import Audio, Frame, Interrupt
from pipeline.graph import Pipeline
from pipeline.spec import stage
from stages.g711 import decode
from stages.telephony.recorder import TwoPartyMix
from stages.telephony.serve import run_server
from stages.telephony.twilio import Connected, Mark, Media, Start, Stop, encode, parse_outgoing


def tone(n: int, value: int) -> np.ndarray:
    return np.full(n, value, np.int16)


def stereo(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    a = np.frombuffer(raw, "<i2")
    return a[0::2], a[1::2]


def test_chunks_play_back_to_back_and_are_written_once_heard() -> None:
    mix = TwoPartyMix()
    mix.caller(0, tone(800, 1))
    mix.sent("1", tone(160, 7), at=800)
    mix.sent("2", tone(160, 8), at=800)  # queued behind "1"
    assert stereo(mix.take())[0].tolist() == [1] * 800  # up to the first pending chunk
    mix.caller(800, tone(160, 2))
    assert mix.take() == b""  # the agent's chunk at 800 is not heard yet
    mix.echoed("2")  # heard up to the end of "2": "1" too
    left, right = stereo(mix.take())
    assert left.tolist() == [2] * 160 and right.tolist() == [7] * 160
    mix.finish()
    left, right = stereo(mix.take())
    assert left.tolist() == [0] * 160 and right.tolist() == [8] * 160
    assert mix.dropped == 0


def test_barge_in_keeps_what_had_played_and_drops_the_rest() -> None:
    mix = TwoPartyMix()
    mix.caller(0, tone(800, 1))
    for i in range(5):
        mix.sent(str(i + 1), tone(160, 10 + i), at=800)  # 800..1600
    mix.echoed("1")
    mix.caller(800, tone(400, 2))
    mix.cleared(1200)  # barge-in: "2" [960, 1120) played, "3" half, "4" and "5" never
    mix.echoed("5")  # a late echo after the clear changes nothing
    mix.finish()
    left, right = stereo(mix.take())
    assert len(left) == 1200
    assert left.tolist() == [1] * 800 + [2] * 400
    assert right.tolist() == [0] * 800 + [10] * 160 + [11] * 160 + [12] * 80
    assert mix.dropped == 80 + 160 + 160
    # after a clear, the next reply starts when it is sent
    mix2 = TwoPartyMix()
    mix2.sent("1", tone(160, 5), at=0)
    mix2.cleared(0)
    mix2.sent("2", tone(160, 6), at=80)
    mix2.echoed("2")
    mix2.finish(240)
    assert stereo(mix2.take())[1].tolist() == [0] * 80 + [6] * 160


@stage("recorder_test_barge", emits=(Interrupt,), passthrough=True, register=False)
async def barge_on_second(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Pass the first audio frame; the second one is a barge-in (an interrupt, nothing more)."""
    seen = 0
    async for f in frames:
        if isinstance(f, Audio):
            seen += 1
            if seen == 2:
                yield Interrupt()
                continue
        yield f


def test_recording_of_a_barged_in_call(tmp_path: Path) -> None:
    out = tmp_path / "calls" / "call.wav"
    p = Pipeline("rec")
    p.add("caller", "twilio_source")
    p.add("mid", barge_on_second)
    p.add("phone", "twilio_sink")
    p.add("rec", "call_recorder", path=str(out))
    p.link("caller", "mid", "phone")
    p.link("caller", "rec")
    first = bytes(range(0, 200, 1)) * 4  # 800 bytes: 100 ms of μ-law
    second = bytes(range(56, 216))  # 160 bytes: 20 ms

    async def main() -> None:
        from websockets.asyncio.client import connect

        sid, call = "MZ" + "3" * 32, "CA" + "4" * 32
        async with run_server(p) as server, asyncio.timeout(10):
            ws = await connect(server.url + "/media")
            await ws.send(encode(Connected()))
            await ws.send(encode(Start(sid, call, "AC" + "5" * 32, sequence_number=1)))
            await ws.send(encode(Media(sid, first, 0, 1, sequence_number=2)))
            marks: list[str] = []
            while len(marks) < 5:  # the sink cuts the 100 ms into five 20 ms chunks
                msg = parse_outgoing(await ws.recv())
                if isinstance(msg, Mark):
                    marks.append(msg.name)
            for seq, name in enumerate(marks[:2], 3):  # the caller heard 40 ms of it
                await ws.send(encode(Mark(sid, name, seq)))
            await ws.send(encode(Media(sid, second, 100, 2, sequence_number=5)))
            while True:  # the barge-in: clear
                if parse_outgoing(await ws.recv()).event == "clear":
                    break
            await ws.send(encode(Stop(sid, call, "AC" + "5" * 32, 6)))
            await ws.wait_closed()

    asyncio.run(main())
    data, rate = sf.read(out, dtype="int16")
    assert rate == 8000 and data.shape == (1120, 2)
    caller = np.frombuffer(decode(first + second, "pcmu"), "<i2")
    agent = np.frombuffer(decode(first[:320], "pcmu"), "<i2")
    # the caller's audio where it was said
    assert np.array_equal(data[:960, 0], caller) and not data[960:, 0].any()
    # the agent's first 40 ms where the caller heard it (chunks sent at 100 ms); the 60 ms
    # the barge-in cut (sent, never heard) is not there
    assert not data[:800, 1].any()
    assert np.array_equal(data[800:1120, 1], agent)


def test_recorder_passes_the_conformance_checks(tmp_path: Path) -> None:
    from pipeline.testing import check_stage
    from stages.telephony.twilio import TwilioCall, bind_call

    async def started() -> TwilioCall:
        async def send(_text: str) -> None:
            pass

        call = TwilioCall(send)
        await call.receive(encode(Connected()))
        await call.receive(encode(Start("MZ" + "3" * 32, "CA" + "4" * 32, "AC" + "5" * 32)))
        return call

    call = asyncio.run(started())
    frames: list[Frame] = [Audio(bytes(160), "pcmu", 8000, 1, 0.02 * i) for i in range(5)]
    with bind_call(call):
        assert check_stage("call_recorder", frames, path=str(tmp_path / "r.wav")) == []
    data, rate = sf.read(tmp_path / "r.wav", dtype="int16")
    assert rate == 8000 and data.shape == (800, 2)


def test_recording_a_16_khz_vonage_call(tmp_path: Path) -> None:
    """The recorder writes at the stream's rate: a Vonage call (pcm16 16 kHz, binary frames)
    echoed back is in both channels, the agent 20 ms behind where each frame arrived."""
    from benchmarks.carriersim import run_carrier_call
    from pipeline.frames import AudioFormat

    out = tmp_path / "vonage.wav"
    params = {"carrier": "vonage", "encoding": "pcm16", "rate": 16000}
    p = Pipeline("rec16")
    p.add("caller", "phone_source", **params)
    p.add("phone", "phone_sink", **params)
    p.add("rec", "call_recorder", path=str(out))
    p.link("caller", "phone")
    p.link("caller", "rec")
    fmt = AudioFormat("pcm16", 16000)
    sent = (np.arange(3200, dtype="<i2") * 7).tobytes()  # 200 ms

    async def main() -> None:
        async with run_server(p) as server:
            rec = await run_carrier_call(server.url + "/media", "vonage", fmt, sent)
        assert rec.errors == [] and bytes(rec.received_audio) == sent

    asyncio.run(main())
    data, rate = sf.read(out, dtype="int16")
    caller = np.frombuffer(sent, "<i2")
    assert rate == 16000 and data.shape[1] == 2
    assert np.array_equal(data[:3200, 0], caller)
    # each echoed 20 ms frame was sent once that frame had arrived, so it plays after it (right
    # after, unless the machine was slow: then later, never earlier), in order, every sample
    right = data[:, 1]
    blocks = [right[i : i + 320] for i in range(0, len(right) - len(right) % 320, 320)]
    assert not blocks[0].any()
    assert np.array_equal(np.concatenate([b for b in blocks if b.any()]), caller)
