"""``pipeline serve``: calls over loopback WebSockets, driven by the call simulator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.callsim import CallRecord, run_call
from pipeline.frames import Frame
from pipeline.graph import Pipeline
from pipeline.spec import stage
from stages.telephony.serve import CallServer, run_server
from stages.telephony.twilio import (
    Connected,
    Media,
    OutMedia,
    Start,
    current_call,
    encode,
    parse_outgoing,
)

ROOT = Path(__file__).resolve().parents[3]
AUDIO = bytes(range(256)) * 5  # 1280 bytes: 8 frames of 20 ms


@stage("serve_test_fail_if_asked", passthrough=True, register=False)
async def fail_if_asked(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Forward everything; raise after the first frame when the call's TwiML parameters say
    fail=yes (one broken call among healthy ones)."""
    call = current_call()
    fail = call.start is not None and call.start.custom_parameters.get("fail") == "yes"
    async for f in frames:
        yield f
        if fail:
            raise RuntimeError("asked to fail")


def loop_pipeline(middle: Any = None) -> Pipeline:
    """twilio_source -> [middle ->] twilio_sink: the caller hears themselves."""
    p = Pipeline("loop")
    p.add("caller", "twilio_source")
    ids = ["caller"]
    if middle is not None:
        p.add("mid", middle)
        ids.append("mid")
    p.add("phone", "twilio_sink")
    p.link(*ids, "phone")
    return p


async def http_get(port: int, path: str, headers: str = "") -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = (await reader.read()).decode()
    writer.close()
    head, _, body = data.partition("\r\n\r\n")
    status = int(head.split()[1])
    ctype = re.search(r"(?im)^content-type: (.*)$", head)
    return status, ctype.group(1).strip() if ctype else "", body


def call(url: str, **kw: Any) -> Any:
    kw.setdefault("quiet_s", 0.15)
    kw.setdefault("tail_s", 3.0)
    return run_call(url, kw.pop("audio", AUDIO), **kw)


def assert_echoed(rec: CallRecord, audio: bytes = AUDIO) -> None:
    assert rec.errors == []
    assert rec.close_code == 1000
    assert bytes(rec.received_audio) == audio
    assert rec.echoed == rec.marks and len(rec.marks) == len(audio) // 160


# ---------------------------------------------------------------------------- endpoints


def phone_pipeline(url: str, *, engine: str, mode: str, **session: Any) -> Pipeline:
    """caller (Twilio) -> vad_gate -> realtime_session (μ-law both ways, at ``url``) -> phone."""
    p = Pipeline("phone")
    p.add("caller", "twilio_source")
    p.add("gate", "vad_gate", engine=engine, mode=mode)
    p.add(
        "agent",
        "realtime_session",
        provider="xai",
        url=url,
        api_key_env="SERVE_TEST_KEY",
        input_format="pcmu",
        output_format="pcmu",
        **session,
    )
    p.add("phone", "twilio_sink")
    p.link("caller", "gate", "agent", "phone")
    return p


def test_health_metrics_and_one_call() -> None:
    async def main() -> None:
        async with run_server(loop_pipeline()) as server:
            status, ctype, body = await http_get(server.port, "/healthz")
            assert (status, ctype) == (200, "application/json")
            assert json.loads(body) == {"status": "ok", "active_calls": 0, "max_calls": 100}
            rec = await call(server.url + "/media", custom_parameters={"lang": "fr"})
            assert_echoed(rec)
            status, ctype, text = await http_get(server.port, "/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=")
            assert 'pipeline_calls_total{outcome="completed"} 1.0' in text
            assert "pipeline_calls_active 0.0" in text
            assert "pipeline_outgoing_frame_lateness_seconds_count 8.0" in text
            for gen in range(3):  # the process's collector pauses, by generation
                assert f'pipeline_gc_pause_seconds_count{{generation="{gen}"}}' in text
            for sid, typ in (("caller", "twilio_source"), ("phone", "twilio_sink")):
                m = re.search(
                    rf'pipeline_stage_frame_cost_seconds_count{{stage="{sid}",type="{typ}"}} (\S+)',
                    text,
                )
                # the runner times one frame in 16 (the first included) and counts them all
                assert m is not None and 1 <= float(m.group(1)) <= 8

    asyncio.run(main())


# ---------------------------------------------------------------------------- refusals


def test_token_refusal() -> None:
    async def main() -> None:
        async with run_server(loop_pipeline(), token="s3cret") as server:
            url = server.url + "/media"
            assert (await call(url)).refused == "HTTP 401"
            assert (await call(url, token="wrong")).refused == "HTTP 403"
            assert_echoed(await call(url, token="s3cret"))  # Authorization: Bearer
            assert_echoed(await call(url + "?token=s3cret"))  # query parameter
            status, _, _ = await http_get(server.port, "/healthz")  # health needs no token
            assert status == 200
            _, _, text = await http_get(server.port, "/metrics")
            assert 'pipeline_connections_refused_total{reason="unauthenticated"} 1.0' in text
            assert 'pipeline_connections_refused_total{reason="bad_token"} 1.0' in text

    asyncio.run(main())


def test_call_cap_and_message_size() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def main() -> None:
        async with run_server(loop_pipeline(), max_calls=1, max_message_bytes=1024) as server:
            async with connect(server.url) as first:
                await first.send(encode(Connected()))
                async with asyncio.timeout(10):  # until the server counts the call
                    await server.wait_active(1)
                with pytest.raises(InvalidStatus) as err:
                    await connect(server.url)
                assert err.value.response.status_code == 503
                assert b"busy" in err.value.response.body
            async with connect(server.url) as ws:
                await ws.send("x" * 2000)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1009

    asyncio.run(main())


# ---------------------------------------------------------------------------- isolation


def test_a_broken_call_beside_healthy_ones() -> None:
    from websockets.asyncio.client import connect

    async def garbage_then_vanish(url: str) -> None:
        async with connect(url) as ws:
            await ws.send(encode(Connected()))
            await ws.send(encode(Start(stream_sid="MZbad", call_sid="CAbad")))
            await ws.send(b"\x00binary")
            await ws.send('{"event": "media", "nonsense": true}')
            media = Media("MZbad", b"\x00" * 160, 0, 1, sequence_number=3)
            await ws.send(encode(media))
            async with asyncio.timeout(10):  # the echo: the server has read all of the above
                echo = parse_outgoing(await ws.recv())
            assert isinstance(echo, OutMedia) and echo.payload == media.payload
            ws.transport.abort()  # no close frame, no stop

    async def main() -> None:
        async with run_server(loop_pipeline(fail_if_asked)) as server:
            url = server.url + "/media"
            healthy = [
                call(url, call_sid=f"CA{i}", stream_sid=f"MZ{i}", audio=AUDIO * 3) for i in range(3)
            ]
            broken = call(url, custom_parameters={"fail": "yes"}, audio=AUDIO * 3)
            results = await asyncio.gather(*healthy, broken, garbage_then_vanish(url))
            for rec in results[:3]:
                assert_echoed(rec, AUDIO * 3)
            failed = results[3]
            assert failed.close_code == 1011
            assert len(failed.received_audio) < len(AUDIO * 3)
            async with asyncio.timeout(10):  # the vanished call's handler has finished
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert 'pipeline_calls_total{outcome="completed"} 3.0' in text
            assert 'pipeline_calls_total{outcome="caller_hangup"} 1.0' in text  # the vanished
            assert 'pipeline_calls_total{outcome="failed"} 1.0' in text
            assert "pipeline_twilio_bad_messages_total 2.0" in text
            assert server.active == 0

    asyncio.run(main())


def test_fifty_calls_at_once_run_from_one_plan_with_no_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server checks the pipeline once; every call runs that one immutable plan with a
    runner of its own: no Pipeline is copied, checked again or built per call."""
    import copy

    from pipeline.plan import Plan
    from pipeline.runtime import Runner

    plans: list[object] = []
    real_init = Runner.__init__

    def recording_init(self: Runner, plan: Any, **kw: Any) -> None:
        plans.append(plan)
        real_init(self, plan, **kw)

    def no_copy(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a call copied the pipeline")

    async def main() -> None:
        async with run_server(loop_pipeline()) as server:
            assert isinstance(server.plan, Plan)
            monkeypatch.setattr(Runner, "__init__", recording_init)
            monkeypatch.setattr(copy, "deepcopy", no_copy)
            monkeypatch.setattr(Pipeline, "check", no_copy)
            monkeypatch.setattr(Pipeline, "__init__", no_copy)
            url = server.url + "/media"
            records = await asyncio.gather(
                *(call(url, call_sid=f"CA{i:02}", stream_sid=f"MZ{i:02}") for i in range(50))
            )
            for rec in records:
                assert_echoed(rec)
            assert len(plans) == 50 and all(plan is server.plan for plan in plans)
            _, _, text = await http_get(server.port, "/metrics")
            assert 'pipeline_calls_total{outcome="completed"} 50.0' in text

    with pytest.raises(ValueError, match="max_calls"):
        CallServer(loop_pipeline(), max_calls=0)
    asyncio.run(main())


# ---------------------------------------------------------------------------- drain


class Lines:
    """A process's stderr, read line by line on a thread (so the pipe never fills), that a
    test can wait on: :meth:`wait_for` returns the first line matching a pattern."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return next(filter(None, (re.search(pattern, x) for x in self.lines)), None)

        with self._cond:
            self._cond.wait_for(lambda: self.eof or found() is not None, timeout)
            m = found()
            assert m is not None, f"no line matches {pattern!r} in:\n{''.join(self.lines)}"
            return m

    async def wait_for_async(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        return await asyncio.to_thread(self.wait_for, pattern, timeout)


@contextlib.contextmanager
def serve_subprocess(yaml_text: str, tmp: Path, *args: str) -> Iterator[tuple[Any, int, Lines]]:
    path = tmp / "p.yaml"
    path.write_text(yaml_text)
    cmd = [sys.executable, "-c", "from pipeline.cli import run_main; run_main()"]
    cmd += ["--log-format", "json", "serve", str(path), "--port", "0", "--workers", "1", *args]
    env = dict(os.environ)
    env.pop("PIPELINE_SERVE_TOKEN", None)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stderr is not None
        lines = Lines(proc.stderr)
        port = int(lines.wait_for(r"listening on ws://127.0.0.1:(\d+)").group(1))
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


LOOP_YAML = """version: 1
pipelines:
  loop:
    stages:
      caller: {type: twilio_source}
      phone: {type: twilio_sink}
    links:
      - caller -> phone
"""


def test_sigterm_drains(tmp_path: Path) -> None:
    """SIGTERM: new calls are refused at once (503 draining) while /healthz stays 200 and
    /readyz turns 503; a call in progress finishes with all its audio, a call that would go
    on past the deadline is cancelled (1001), exit code 0."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    short = AUDIO * 10  # 1.6 s
    long_ = AUDIO * 60  # 9.6 s: outlives the 3 s drain deadline

    with serve_subprocess(LOOP_YAML, tmp_path, "--drain-timeout", "3.0") as (proc, port, lines):

        async def main() -> tuple[CallRecord, CallRecord]:
            url = f"ws://127.0.0.1:{port}/media"
            heard_a, heard_b = asyncio.Event(), asyncio.Event()
            a = asyncio.create_task(
                call(url, audio=short, call_sid="CAa", stream_sid="MZa", heard=heard_a)
            )
            b = asyncio.create_task(
                call(url, audio=long_, call_sid="CAb", stream_sid="MZb", heard=heard_b)
            )
            async with asyncio.timeout(20):  # both calls are under way: audio came back
                await asyncio.gather(heard_a.wait(), heard_b.wait())
            proc.send_signal(signal.SIGTERM)
            await lines.wait_for_async(r'"event": ?"draining"', timeout=20)
            with pytest.raises(InvalidStatus) as refused:  # no new call
                await connect(f"ws://127.0.0.1:{port}/media", open_timeout=2)
            assert refused.value.response.status_code == 503
            status, _, body = await http_get(port, "/healthz")  # alive: no restart
            assert status == 200 and json.loads(body)["status"] == "draining"
            assert (await http_get(port, "/readyz"))[0] == 503
            return await a, await b

        t0 = time.monotonic()
        done, cut = asyncio.run(main())
        code = proc.wait(timeout=20)
        assert code == 0
        assert time.monotonic() - t0 < 9
    assert_echoed(done, short)
    assert cut.close_code == 1001
    assert 0 < len(cut.received_audio) < len(long_)
    assert bytes(cut.received_audio) == long_[: len(cut.received_audio)]


# ---------------------------------------------------------------------------- the phone path


def _b64s(events: list[dict[str, Any]], kind: str, key: str) -> bytes:
    return b"".join(base64.b64decode(e[key]) for e in events if e.get("type") == kind)


def test_zero_transcode_path_is_byte_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caller μ-law → vad_gate (annotate, analysing a decoded copy) → realtime_session with
    pcmu both ways → twilio_sink: the caller's bytes reach the model's input buffer unchanged,
    and the model's μ-law reply reaches the caller unchanged."""
    emulator = pytest.importorskip("stages.realtime.emulator")
    from benchmarks.callsim import caller_audio

    wav = ROOT / "examples" / "caller_8k_ulaw.wav"
    if not wav.exists():
        pytest.skip(f"{wav} is absent")
    audio = caller_audio(wav)[: 160 * 150]  # the first utterance (3 s)
    monkeypatch.setenv("SERVE_TEST_KEY", "k")

    async def main() -> None:
        config = emulator.EmulatorConfig(reply="tone", tone_ms=600, chunk_ms=40, pace=0)
        async with emulator.run_emulator(config) as emu:
            p = phone_pipeline(emu.url, engine="energy", mode="annotate")
            async with run_server(p) as server:
                rec = await run_call(server.url + "/media", audio, quiet_s=1.0, tail_s=10.0)
            assert rec.errors == [] and rec.close_code == 1000
            received = emu.connections[0].received
            appended = _b64s(received, "input_audio_buffer.append", "audio")
            assert appended[: len(audio)] == audio
            # at the end of input the session pads silence so the server's VAD ends the turn
            assert set(appended[len(audio) :]) <= {0xFF}
            sent = emu.connections[0].sent
            reply = _b64s(sent, "response.output_audio.delta", "delta")
            assert len(reply) == 4800  # 600 ms of μ-law
            assert bytes(rec.received_audio) == reply
            assert rec.echoed == rec.marks

    asyncio.run(main())


def test_barge_in_clears_the_phone_and_truncates_at_what_was_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller speaks again while a long reply plays: the sink sends ``clear``, and the
    session truncates the assistant's item at the position the caller's marks say was heard."""
    emulator = pytest.importorskip("stages.realtime.emulator")
    from benchmarks.callsim import FRAME_BYTES, caller_audio

    wav = ROOT / "examples" / "caller_8k_ulaw.wav"
    if not wav.exists():
        pytest.skip(f"{wav} is absent")
    example = caller_audio(wav)
    silence = b"\xff" * FRAME_BYTES
    # utterance 1, 1.4 s of silence (the reply starts), 1 s of utterance 2 over the reply
    audio = example[: 130 * FRAME_BYTES] + silence * 70 + example[215 * FRAME_BYTES : 265 * 160]
    audio += silence * 30
    monkeypatch.setenv("SERVE_TEST_KEY", "k")

    async def main() -> None:
        # pace 0: the whole 2.5 s reply reaches the phone's buffer at once, so "what left the
        # session" (2.5 s) and "what the caller heard" (about 1.2 s) differ widely
        config = emulator.EmulatorConfig(reply="tone", tone_ms=2500, chunk_ms=100, pace=0)
        async with emulator.run_emulator(config) as emu:
            p = phone_pipeline(emu.url, engine="webrtc", mode="gate", turn_detection="none")
            async with run_server(p) as server:
                rec = await run_call(server.url + "/media", audio, quiet_s=0.5, tail_s=6.0)
            assert rec.errors == [] and rec.close_code == 1000
            assert len(rec.clears) >= 1
            heard_at_clear = rec.played_at_clear[0]  # bytes the caller had heard by then
            assert 0 < heard_at_clear < 2500 * 8
            assert rec.cleared_bytes > 8000  # over a second Twilio had buffered was dropped
            truncates = [
                e for e in emu.connections[0].received if e["type"] == "conversation.item.truncate"
            ]
            assert len(truncates) == 1
            # heard = the last echoed mark: one 20 ms chunk (+ echo latency) behind at most
            heard_ms = truncates[0]["audio_end_ms"]
            assert heard_at_clear / 8 - 150 <= heard_ms <= heard_at_clear / 8 + 1
            assert heard_ms < 2000

    asyncio.run(main())


def test_token_in_the_start_message_for_twilio(capsys: pytest.CaptureFixture[str]) -> None:
    """Twilio drops query strings from <Stream url>: with token_parameter the token may come
    as <Parameter name="token">; without it (or wrong) the call is closed before it starts."""

    async def main() -> None:
        async with run_server(loop_pipeline(), token="s3cret", token_parameter=True) as server:
            url = server.url + "/media"
            ok = await call(url, custom_parameters={"token": "s3cret"})
            assert_echoed(ok)
            missing = await call(url)
            wrong = await call(url, custom_parameters={"token": "nope"})
            assert missing.close_code == wrong.close_code == 1008
            assert missing.received_audio == wrong.received_audio == b""
            assert (await call(url, token="nope")).refused == "HTTP 403"  # still checked
            _, _, text = await http_get(server.port, "/metrics")
            assert 'pipeline_calls_total{outcome="refused"} 2.0' in text
            assert 'pipeline_calls_total{outcome="completed"} 1.0' in text

    asyncio.run(main())
    logs = capsys.readouterr().out
    assert "call started" in logs and "<redacted>" in logs
    assert "s3cret" not in logs and "nope" not in logs


def test_figures_stages_report_reach_the_servers_registry() -> None:
    from pipeline.metrics import Metric, StageMetrics
    from stages.realtime.session import SESSION_RECONNECTS
    from stages.telephony.serve import ServeMetrics
    from stages.tools.router import TOOL_CALLS

    m = ServeMetrics()
    router = StageMetrics(m, "tools")
    router.count(TOOL_CALLS, outcome="ok")
    router.count(TOOL_CALLS, outcome="timeout")
    router.count(TOOL_CALLS, outcome="ok")
    StageMetrics(m, "agent").count(SESSION_RECONNECTS)
    custom = Metric("lookups", "Lookups a user's stage made", labels=("table",))
    StageMetrics(m, "mine").count(custom, 3, table="orders")
    wait = Metric("lookup_seconds", "Lookup time", kind="histogram")
    StageMetrics(m, "mine").observe(wait, 0.004)
    text = m.text().decode()
    assert 'pipeline_tool_calls_total{outcome="ok"} 2.0' in text
    assert 'pipeline_tool_calls_total{outcome="timeout"} 1.0' in text
    assert "pipeline_session_reconnects_total 1.0" in text
    assert 'pipeline_lookups_total{table="orders"} 3.0' in text
    assert "pipeline_lookup_seconds_count 1.0" in text


def test_tool_call_metrics_are_right_at_log_level_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A call whose model calls a tool, served with logging at warning (the tool router's
    'tool call' lines are info, so none is written): /metrics still counts the call."""
    emulator = pytest.importorskip("stages.realtime.emulator")
    from benchmarks.callsim import caller_audio
    from pipeline.report import setup_logging

    wav = ROOT / "examples" / "caller_8k_ulaw.wav"
    if not wav.exists():
        pytest.skip(f"{wav} is absent")
    audio = caller_audio(wav)[: 160 * 150]  # the first utterance (3 s)
    monkeypatch.setenv("SERVE_TEST_KEY", "k")
    setup_logging("json", "warning")

    async def main() -> str:
        script = {"turn": 1, "name": "get_time", "arguments": {"city": "Paris"}}
        config = emulator.EmulatorConfig(
            reply="tone", tone_ms=200, chunk_ms=40, pace=0, tool_calls=(script,)
        )
        async with emulator.run_emulator(config) as emu:
            p = phone_pipeline(emu.url, engine="energy", mode="annotate")
            p.add("tools", "tool_router", tools=["examples.tools:get_time"])
            p.link("agent", "tools", "agent")
            async with run_server(p) as server:
                rec = await run_call(server.url + "/media", audio, quiet_s=1.0, tail_s=10.0)
                assert rec.errors == [] and rec.close_code == 1000
                outputs = [
                    e
                    for e in emu.connections[0].received
                    if e["type"] == "conversation.item.create"
                    and e["item"]["type"] == "function_call_output"
                ]
                assert len(outputs) == 1 and "Paris" in outputs[0]["item"]["output"]
                _, _, text = await http_get(server.port, "/metrics")
                return text

    text = asyncio.run(main())
    assert 'pipeline_tool_calls_total{outcome="ok"} 1.0' in text
    assert "tool call" not in capsys.readouterr().out  # nothing logged at info


def test_the_phone_pipelines_in_the_docs_validate() -> None:
    from pipeline.config import load_text, pipeline_names

    doc = ROOT / "docs" / "telephony.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    assert blocks, "docs/telephony.md has no yaml block"
    names = []
    for text in blocks:
        for name in pipeline_names(text):
            p = load_text(text, name, file=str(doc), base_dir=ROOT)
            names.append(name)
            plan = p.check()
            assert plan.stages["caller"].output_format == plan.stages["phone"].input_format
            want = "pcm16 16000 Hz" if name == "phone-vonage" else "pcmu 8000 Hz"
            assert str(plan.stages["phone"].input_format) == want
    assert {"phone", "phone-emulator", "phone-pcm"} <= set(names)


def test_serve_refuses_a_pipeline_without_a_call_leg(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\npipelines:\n  tone:\n    stages:\n"
        "      tone: {type: signal_source, seconds: 0.1}\n      sink: {type: null_sink}\n"
        "    links:\n      - tone -> sink\n"
    )
    cmd = [sys.executable, "-c", "from pipeline.cli import run_main; run_main()"]
    proc = subprocess.run(
        [*cmd, "serve", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "has no twilio_source or twilio_sink" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gated_phone_path_passes_the_callers_bytes_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped phone pipeline (gate mode, local turns): every turn the model receives is a
    byte-identical slice of what the caller sent, and the reply reaches the caller unchanged."""
    emulator = pytest.importorskip("stages.realtime.emulator")
    from benchmarks.callsim import caller_audio

    wav = ROOT / "examples" / "caller_8k_ulaw.wav"
    if not wav.exists():
        pytest.skip(f"{wav} is absent")
    audio = caller_audio(wav)[: 160 * 130] + b"\xff" * 160 * 60  # utterance 1, 1.2 s pause
    monkeypatch.setenv("SERVE_TEST_KEY", "k")

    async def main() -> None:
        config = emulator.EmulatorConfig(reply="echo", pace=0)
        async with emulator.run_emulator(config) as emu:
            p = phone_pipeline(emu.url, engine="webrtc", mode="gate", turn_detection="none")
            async with run_server(p) as server:
                rec = await run_call(server.url + "/media", audio, quiet_s=0.5, tail_s=5.0)
        assert rec.errors == [] and rec.close_code == 1000
        turns, turn = [], bytearray()
        for e in emu.connections[0].received:
            if e["type"] == "input_audio_buffer.append":
                turn += base64.b64decode(e["audio"])
            elif e["type"] == "input_audio_buffer.commit":
                turns.append(bytes(turn))
                turn.clear()
        assert len(turns) == 1 and len(turns[0]) > 8000
        assert turns[0] in audio  # one contiguous slice of the caller's bytes
        reply = _b64s(emu.connections[0].sent, "response.output_audio.delta", "delta")
        assert len(reply) > 8000 and bytes(rec.received_audio) == reply

    asyncio.run(main())


def test_a_caller_that_sends_no_media_is_closed_after_the_idle_timeout() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        async with run_server(loop_pipeline(), idle_timeout_s=0.2) as server:
            async with connect(server.url) as ws:
                await ws.send(encode(Connected()))
                await ws.send(encode(Start(stream_sid="MZidle", call_sid="CAidle")))
                async with asyncio.timeout(10):  # the server closes it; pings are answered
                    with pytest.raises(ConnectionClosed):
                        while True:
                            await ws.recv()
                assert (ws.close_code, ws.close_reason) == (1000, "no media")
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert 'pipeline_calls_total{outcome="idle"} 1.0' in text

    asyncio.run(main())
