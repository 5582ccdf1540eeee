"""In-band DTMF: the tones (Q.23 pairs, Q.24 timing and levels) in every stream format, read back
by the Goertzel detector, which is itself checked on tones sox synthesizes; and send_dtmf on a
live call through `pipeline serve`: the tones go out as media, the tool returns once their marks
are echoed, and the stream stays up."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess

import pytest
from websockets.asyncio.client import connect

from pipeline.frames import AudioFormat
from pipeline.graph import Pipeline
from stages.g711 import encode_ulaw
from stages.telephony.carriers import CARRIERS
from stages.telephony.dtmf import (
    FREQUENCIES,
    HIGH_DBM0,
    LOW_DBM0,
    component_levels,
    dbm0_peak,
    detect,
    tones,
)
from stages.telephony.serve import run_server
from stages.telephony.twilio import Connected, Dtmf, Start, Stop
from tests.phonekit import TONE_MS, tool_agent
from tests.stages.telephony.test_call_flow import ACCOUNT, CALL, STREAM, Caller

KEYS = "123A456B789C*0#D"
PCM8 = AudioFormat("pcm16", 8000)


def sox_tone(lo: float, hi: float, rate: int, lo_amp: float, hi_amp: float) -> bytes:
    """70 ms of two sines from sox, then 70 ms of silence."""
    out = subprocess.run(
        ["sox", "-D", "-n", "-r", str(rate), "-b", "16", "-e", "signed", "-c", "1", "-t", "raw",
         "-", "synth", "0.07", "sine", str(lo), "sine", str(hi),
         "remix", f"1v{lo_amp:.6f},2v{hi_amp:.6f}", "pad", "0", "0.07"],
        capture_output=True, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.mark.skipif(
    shutil.which("sox") is None, reason="sox is not installed (apt-get install sox)"
)
def test_detector_reads_tones_sox_synthesizes() -> None:
    lo_amp, hi_amp = dbm0_peak(LOW_DBM0) / 32768, dbm0_peak(HIGH_DBM0) / 32768
    for rate in (8000, 16000):
        audio = b"".join(sox_tone(*FREQUENCIES[k], rate, lo_amp, hi_amp) for k in KEYS)
        assert detect(audio, AudioFormat("pcm16", rate)) == KEYS
    # the same levels as ours, measured the same way on sox's tone and on ours
    for key in "1#":
        theirs = sox_tone(*FREQUENCIES[key], 8000, lo_amp, hi_amp)[: 560 * 2]
        ours = tones(key, PCM8)[: 560 * 2]
        for a, b in zip(
            component_levels(theirs, 8000, key), component_levels(ours, 8000, key), strict=True
        ):
            assert abs(20 * math.log10(a / b)) < 0.2


def test_tones_timing_levels_and_formats() -> None:
    pcm = tones("5w#", PCM8)
    assert len(pcm) == (560 + 560 + 4000 + 560 + 560) * 2  # 70 + 70 ms, 500 ms, 70 + 70 ms
    lo, hi = component_levels(pcm[: 560 * 2], 8000, "5")
    assert abs(20 * math.log10(lo / dbm0_peak(-7.0))) < 0.1
    assert abs(20 * math.log10(hi / dbm0_peak(-5.0))) < 0.1
    assert pcm[560 * 2 : 1120 * 2] == bytes(1120)  # the gap is silence
    assert tones("5w#", AudioFormat("pcmu", 8000)) == encode_ulaw(pcm)
    for cls in CARRIERS.values():
        for fmt in cls.formats:
            assert detect(tones(KEYS, fmt), fmt) == KEYS, fmt
    with pytest.raises(ValueError, match=r"digits '1x': use 0-9, A-D, \*, # and w"):
        tones("1x", PCM8)
    assert detect(bytes(16000), PCM8) == ""


def dtmf_agent() -> Pipeline:
    """An emulator model that answers the caller's key press by pressing 1, 2, # itself."""
    call = {"name": "send_dtmf", "arguments": {"digits": "12#"}}
    return tool_agent("phone-dtmf", "send_dtmf", call)


def test_send_dtmf_in_band_on_a_live_call() -> None:
    tone_bytes = len(tones("12#", AudioFormat("pcmu", 8000)))  # 3 x 140 ms = 3360

    async def main() -> Caller:
        async with run_server(dtmf_agent()) as server:  # no credentials: in-band needs none
            ws = await connect(server.url + "/media")
            caller = Caller(ws)
            reader = asyncio.create_task(caller.read())
            await caller.send(Connected())
            await caller.send(Start(STREAM, CALL, ACCOUNT, sequence_number=1))
            await caller.send(Dtmf(STREAM, "9", sequence_number=2))

            async def marks(n: int) -> None:
                while len(caller.marks) < n:
                    caller.got_mark.clear()
                    await caller.got_mark.wait()

            async with asyncio.timeout(20):
                await marks(tone_bytes // 160)  # the tones, in 20 ms chunks, each marked
                assert len(caller.audio) == tone_bytes
                assert detect(bytes(caller.audio), AudioFormat("pcmu", 8000)) == "12#"
                # the tool waits for the tones to be heard: no reply while nothing is echoed
                playback = server._by_call_sid[CALL].playback
                while not playback.waiters:
                    await playback.next_change()
                assert len(caller.audio) == tone_bytes
                await caller.echo_all()
                # the tool returned; the model speaks on (its 440 Hz reply): the stream is up
                await marks(tone_bytes // 160 + TONE_MS // 20)
                assert ws.close_code is None and server.active == 1
                await caller.echo_all()
                await caller.send(Stop(STREAM, CALL, ACCOUNT, sequence_number=3))
                await reader
        return caller

    caller = asyncio.run(main())
    assert len(caller.audio) == tone_bytes + TONE_MS * 8
    assert detect(bytes(caller.audio), AudioFormat("pcmu", 8000)) == "12#"
    assert caller.errors == [] and caller.clears == 0


def test_send_dtmf_without_a_sink_says_why() -> None:
    from stages.telephony.call_tools import send_dtmf
    from stages.telephony.twilio import TwilioCall, bind_call, encode

    async def main() -> list[str]:
        async def send(_m: object) -> None:
            pass

        call = TwilioCall(send)
        await call.receive(encode(Connected()))
        await call.receive(encode(Start(STREAM, CALL, ACCOUNT)))
        with bind_call(call):
            return [await send_dtmf("1x"), await send_dtmf("1")]

    assert asyncio.run(main()) == [
        "digits '1x' are not valid: use 0-9, *, # and w (a half-second pause)",
        "the keys could not be sent: the call has ended, or no phone sink plays to it "
        "(in-band tones go out as the call's audio)",
    ]
