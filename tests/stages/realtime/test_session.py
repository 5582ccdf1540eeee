"""The ``realtime_session`` stage against real WebSocket servers on loopback.

Two kinds of peer: a small scripted ``websockets.serve`` peer defined here (a test double for
fault injection: closes mid-response, never acknowledges, malformed JSON, 401, flat errors), and
the product emulator (``stages.realtime.emulator``) for end-to-end runs. No sleeps: waits are on
events and frames; backoff, recycling and the session and response timeouts run on a
VirtualClock. Real-time timeouts appear only as safety nets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from pipeline.clock import VirtualClock
from pipeline.context import PLAYED, TOOLS, Peer, Played, StageContext
from pipeline.errors import ConfigError, FormatError, SessionRemoteError
from pipeline.frames import (
    Audio,
    AudioFormat,
    ErrorReport,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Text,
    ToolCall,
    ToolResult,
    Transcript,
)
from pipeline.spec import spec_of
from pipeline.testing import check_stage_async
from stages.realtime import emulator
from stages.realtime.buffers import AudioBatcher, ReplyAudio, ReplyPlayout
from stages.realtime.session import realtime_session, resolve_settings

SECRET = "sk-TEST-do-not-leak-4242"
_PEER_LOGGER = logging.getLogger("tests.scripted_peer")
SAFETY_S = 10.0  # a hung test fails after this; nothing waits for it in a passing run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


# ----------------------------------------------------------------------------- the scripted peer

Script = Callable[["Conn"], Awaitable[None]]


class Conn:
    """One connection to the scripted peer: what it received, and how to answer."""

    def __init__(self, peer: ScriptedPeer, ws: ServerConnection, index: int) -> None:
        self.peer = peer
        self.ws = ws
        self.index = index
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ack = True

    async def send(self, **event: Any) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def next(self, kind: str) -> dict[str, Any]:
        """The next message of type ``kind`` (others are skipped; all are recorded)."""
        async with asyncio.timeout(SAFETY_S):
            while True:
                msg = await self.queue.get()
                if msg["type"] == kind:
                    return msg

    async def handshake(self) -> None:
        await self.send(type="session.created", session={"id": "sess-1"})

    async def response(
        self,
        rid: str = "resp_1",
        item: str = "item_2",
        chunks: int = 3,
        ms: int = 100,
        rate: int = 24000,
    ) -> None:
        await self.send(type="response.created", response={"id": rid, "status": "in_progress"})
        for i in range(chunks):
            data = np.full(rate * ms // 1000, i + 1, dtype="<i2").tobytes()
            await self.send(
                type="response.output_audio.delta",
                response_id=rid,
                item_id=item,
                delta=base64.b64encode(data).decode(),
            )
        await self.send(
            type="response.output_audio_transcript.done",
            response_id=rid,
            item_id=item,
            transcript="hi",
        )
        await self.send(type="response.done", response={"id": rid, "status": "completed"})


class ScriptedPeer:
    """A loopback WebSocket server running ``script`` per connection. Every client message is
    recorded in ``received`` (all connections) and fed to the script; ``session.update`` is
    acknowledged automatically unless the script sets ``conn.ack = False``."""

    def __init__(self, *scripts: Script, status: int | None = None) -> None:
        self.scripts = scripts
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.conns: list[Conn] = []
        self.url = ""

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.status is not None:
            return ws.respond(self.status, "go away\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        conn = Conn(self, ws, len(self.conns))
        self.conns.append(conn)
        script = self.scripts[min(conn.index, len(self.scripts) - 1)]

        async def read() -> None:
            async for raw in ws:
                msg = orjson.loads(raw)
                self.received.append(msg)
                if msg["type"] == "session.update" and conn.ack:
                    await conn.send(type="session.updated", session=msg["session"])
                await conn.queue.put(msg)

        # the connection lives as long as the client keeps it: when it closes, the script
        # (perhaps waiting for a message that will never come) is cancelled
        acting = asyncio.create_task(script(conn))
        try:
            await read()
        except Exception:
            pass
        finally:
            acting.cancel()
            with contextlib.suppress(BaseException):
                await acting

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedPeer]:
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            logger=_PEER_LOGGER,  # a test double: its header log is not what is under test
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/v1/realtime"
            yield self

    def sent_types(self) -> list[str]:
        return [m["type"] for m in self.received]


async def handshake_only(conn: Conn) -> None:
    await conn.handshake()


async def answer_every_response(conn: Conn) -> None:
    await conn.handshake()
    n = 0
    while True:
        await conn.next("response.create")
        n += 1
        await conn.response(f"resp_{n}", f"item_{n}", chunks=1)


# ----------------------------------------------------------------------------- driving the stage


class Feed:
    """The stage's input: frames pushed by the test, ended when the test says."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[Frame | None] = asyncio.Queue()

    def put(self, *frames: Frame) -> None:
        for f in frames:
            self.q.put_nowait(f)

    def end(self) -> None:
        self.q.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Frame]:
        while (f := await self.q.get()) is not None:
            yield f


class Run:
    """The stage started on a Feed; pull its output frame by frame."""

    def __init__(self, ctx: StageContext, **params: Any) -> None:
        self.feed = Feed()
        self.ctx = ctx
        self.gen = realtime_session(self.feed, ctx=ctx, **params)
        self.out: list[Frame] = []

    async def pull(self) -> Frame:
        async with asyncio.timeout(SAFETY_S):
            f = await anext(self.gen)
        self.out.append(f)
        return f

    async def until(self, kind: type[Any]) -> Frame:
        while True:
            f = await self.pull()
            if isinstance(f, kind):
                return f

    async def rest(self) -> list[Frame]:
        start = len(self.out)
        async with asyncio.timeout(SAFETY_S):
            async for f in self.gen:
                self.out.append(f)
        return self.out[start:]

    async def close(self) -> None:
        await self.gen.aclose()  # type: ignore[attr-defined]


def context(clock: Any = None, **kw: Any) -> StageContext:
    return StageContext(id="agent", type="realtime_session", clock=clock or VirtualClock(), **kw)


def params(url: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"url": url, "api_key_env": "PIPELINE_TEST_KEY", "input_rate": 16000}
    base.update(kw)
    return base


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TEST_KEY", SECRET)


def pcm(ms: int, rate: int = 16000, pts: float = 0.0, value: int = 1000) -> Audio:
    return Audio(np.full(rate * ms // 1000, value, dtype="<i2").tobytes(), "pcm16", rate, pts=pts)


def appended(peer: ScriptedPeer) -> list[bytes]:
    return [
        base64.b64decode(m["audio"])
        for m in peer.received
        if m["type"] == "input_audio_buffer.append"
    ]


def no_tasks_left() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    names = [t.get_coro().__qualname__ for t in others]  # type: ignore[union-attr]
    assert not [n for n in names if "realtime" in n or "_Run" in n or "guard" in n], names


# ----------------------------------------------------------------------------- parameters


def test_declared_types() -> None:
    spec = spec_of(realtime_session)
    assert spec is not None and spec.cycle_aware
    assert {t.type for t in spec.accepts} >= {"audio", "text", "tool_result"}
    assert {t.type for t in spec.emits} == {
        "audio", "transcript", "tool_call", "tool_cancel", "speech_started", "speech_stopped",
        "interrupt", "response_started", "response_done", "error",
    }  # fmt: skip


def test_defaults_are_xai() -> None:
    s = resolve_settings({})
    assert s.url == "wss://api.x.ai/v1/realtime?model=grok-voice-latest"
    assert s.api_key_env == "XAI_API_KEY"
    assert s.session.voice == "ara"
    assert s.session.turn_detection.type == "server_vad"
    assert s.session.input_format == AudioFormat("pcm16", 24000)


def test_url_keeps_its_query_and_gets_the_model() -> None:
    s = resolve_settings({"url": "wss://example.test/rt?x=1&model=old", "model": "m2"})
    assert s.url == "wss://example.test/rt?x=1&model=m2"
    assert s.endpoint == "wss://example.test/rt"


def test_openai_provider_defaults() -> None:
    s = resolve_settings({"provider": "openai"})
    assert (s.dialect, s.api_key_env, s.session.model) == (
        "openai",
        "OPENAI_API_KEY",
        "gpt-realtime",
    )


@pytest.mark.parametrize(
    ("name", "enc"), [("g711_ulaw", "pcmu"), ("audio/pcma", "pcma"), ("pcmu", "pcmu")]
)
def test_formats_by_any_name(name: str, enc: str) -> None:
    s = resolve_settings({"input_format": name, "output_format": name})
    assert s.session.input_format == AudioFormat(enc, 8000)  # type: ignore[arg-type]
    assert s.session.output_format == AudioFormat(enc, 8000)  # type: ignore[arg-type]


def test_turn_detection_forms() -> None:
    s = resolve_settings(
        {"turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700}}
    )
    assert s.session.turn_detection.threshold == 0.6
    assert s.session.turn_detection.silence_duration_ms == 700
    assert resolve_settings({"turn_detection": "none"}).session.turn_detection.type is None
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_settings({"turn_detection": {"type": "server_vad", "eagerness": "high"}})


def test_unsupported_rate_for_the_dialect() -> None:
    with pytest.raises(FormatError, match="openai takes pcm16 at 24000 Hz, got 16000 Hz"):
        resolve_settings({"provider": "openai", "input_rate": 16000})
    with pytest.raises(FormatError, match="pcmu is 8000 Hz only"):
        resolve_settings({"input_format": "pcmu", "input_rate": 16000})


def test_output_format_declares_the_session_output() -> None:
    spec = spec_of(realtime_session)
    assert spec is not None and spec.output_format is not None
    fmt = spec.output_format(
        {"input_rate": 16000, "output_rate": 24000}, AudioFormat("pcm16", 16000)
    )
    assert fmt == AudioFormat("pcm16", 24000)
    ulaw = spec.output_format({"output_format": "pcmu", "input_rate": 16000}, None)
    assert ulaw == AudioFormat("pcmu", 8000)


@pytest.mark.parametrize(
    ("incoming", "fix"),
    [
        (
            AudioFormat("pcm16", 8000),
            "add {type: resample, rate: 16000} before it, or set input_rate: 8000",
        ),
        (
            AudioFormat("pcmu", 8000),
            "add {type: g711_decode} then {type: resample, rate: 16000} before it",
        ),
        (AudioFormat("pcm16", 16000, 2), "feed it mono audio"),
    ],
)
def test_format_mismatch_before_running(incoming: AudioFormat, fix: str) -> None:
    spec = spec_of(realtime_session)
    assert spec is not None and spec.output_format is not None
    with pytest.raises(FormatError) as info:
        spec.output_format({"input_rate": 16000}, incoming)
    assert info.value.fix == fix
    assert f"gets {incoming} audio; its input is pcm16 16000 Hz" in info.value.message


@aio
async def test_format_mismatch_while_running_names_the_stage() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(pcm(20, rate=8000))
        with pytest.raises(FormatError) as info:
            await run.rest()
    assert "stage 'agent' gets pcm16 8000 Hz audio" in str(info.value)
    assert "add {type: resample, rate: 16000} before it" in str(info.value)


# ----------------------------------------------------------------------------- handshake and input


@aio
async def test_connects_with_model_and_bearer_and_sends_session_update_first() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(), **params(peer.url, model="grok-voice-think-fast-2.0", voice="rex"))
        run.feed.end()
        assert await run.rest() == []
    req = peer.requests[0]
    assert req.path == "/v1/realtime?model=grok-voice-think-fast-2.0"
    assert req.headers["Authorization"] == f"Bearer {SECRET}"
    assert "OpenAI-Beta" not in req.headers
    first = peer.received[0]
    assert first["type"] == "session.update"
    assert first["session"]["voice"] == "rex"
    assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert first["session"]["audio"]["input"]["transcription"] == {}  # on, the server's model


@aio
async def test_beta_dialect_sends_the_beta_header_and_names() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(
            context(),
            **params(peer.url, dialect="openai-beta", input_rate=None, input_format="g711_ulaw"),
        )
        run.feed.end()
        await run.rest()
    assert peer.requests[0].headers["OpenAI-Beta"] == "realtime=v1"
    assert peer.received[0]["session"]["input_audio_format"] == "g711_ulaw"


@aio
async def test_audio_is_held_until_session_updated() -> None:
    gate = asyncio.Event()

    async def late_ack(conn: Conn) -> None:
        conn.ack = False
        update = await conn.next("session.update")
        await gate.wait()
        await conn.send(type="session.updated", session=update["session"])
        conn.ack = True

    async with ScriptedPeer(late_ack).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(pcm(20), pcm(20, pts=0.02))
        pulling = asyncio.create_task(run.rest())
        while not peer.received:  # session.update arrived
            await asyncio.sleep(0)
        for _ in range(50):  # let the stage run: it must not send audio yet
            await asyncio.sleep(0)
        assert peer.sent_types() == ["session.update"]
        gate.set()
        run.feed.end()
        await pulling
    assert peer.sent_types()[:3] == [
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.append",
    ]


@aio
async def test_audio_batched_to_20_to_100_ms_and_bytes_preserved() -> None:
    frames = [pcm(10, pts=i * 0.01, value=i) for i in range(5)] + [pcm(250, pts=0.05, value=9)]
    async with ScriptedPeer(answer_every_response).running() as peer:
        run = Run(context(), **params(peer.url, turn_detection="none"))
        run.feed.put(*frames)
        run.feed.end()
        await run.rest()
    chunks = appended(peer)
    assert b"".join(chunks) == b"".join(f.data for f in frames)
    sizes_ms = [len(c) // 32 for c in chunks]
    assert sizes_ms == [20, 20, 100, 100, 60]
    assert all(20 <= ms <= 100 for ms in sizes_ms)


@aio
async def test_server_vad_fills_input_gaps_with_silence() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(), **params(peer.url, response_timeout_s=1.0))
        run.feed.put(pcm(20, pts=0.0), pcm(20, pts=0.5))  # 480 ms gap (a gate dropped it)
        run.feed.end()
        await run.rest()
    audio = b"".join(appended(peer))
    samples = np.frombuffer(audio, "<i2")
    assert np.all(samples[:320] == 1000)
    assert np.all(samples[320 : 320 + 7680] == 0)  # the gap, as silence
    assert np.all(samples[8000:8320] == 1000)


@aio
async def test_text_turn_is_item_then_response_and_output_frames() -> None:
    async def reply(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.response(chunks=3)

    async with ScriptedPeer(reply).running() as peer:
        run = Run(context(), **params(peer.url, output_rate=24000))
        run.feed.put(Text("Hello!"))
        run.feed.end()
        out = await run.rest()
    item = next(m for m in peer.received if m["type"] == "conversation.item.create")
    assert item["item"]["content"] == [{"type": "input_text", "text": "Hello!"}]
    audio = [f for f in out if isinstance(f, Audio)]
    assert [(a.encoding, a.rate, a.pts) for a in audio] == [
        ("pcm16", 24000, 0.0),
        ("pcm16", 24000, 0.1),
        ("pcm16", 24000, 0.2),
    ]
    assert [a.samples()[0] for a in audio] == [1, 2, 3]
    kinds = [type(f).__name__ for f in out if not isinstance(f, Audio)]
    assert kinds == ["ResponseStarted", "Transcript", "ResponseDone"]
    assert out[-1] == ResponseDone("resp_1", "completed")


@aio
async def test_manual_turn_local_speech_stopped_commits_and_asks() -> None:
    async def reply(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.response(chunks=1)

    async with ScriptedPeer(reply).running() as peer:
        run = Run(context(), **params(peer.url, turn_detection="none"))
        run.feed.put(
            SpeechStarted(pts=0.0, stage="gate"), pcm(40), SpeechStopped(pts=0.04, stage="gate")
        )
        run.feed.end()
        out = await run.rest()
    assert [t for t in peer.sent_types() if t != "session.update"] == [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    ]
    assert peer.received[0]["session"]["turn_detection"] == {"type": None}
    assert out[0] == SpeechStarted(pts=0.0, stage="gate")  # the gate's events travel on
    assert SpeechStopped(pts=0.04, stage="gate") in out


@aio
async def test_server_vad_events_and_transcripts_become_frames() -> None:
    async def vad(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("input_audio_buffer.append")
        await conn.send(
            type="input_audio_buffer.speech_started", item_id="item_1", audio_start_ms=1020
        )
        await conn.send(
            type="input_audio_buffer.speech_stopped", item_id="item_1", audio_end_ms=2310
        )
        await conn.send(
            type="conversation.item.input_audio_transcription.completed",
            item_id="item_1",
            transcript="hi there",
        )
        await conn.response(chunks=1)

    async with ScriptedPeer(vad).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(pcm(20, pts=3.0))
        run.feed.end()
        out = await run.rest()
    events = [f for f in out if not isinstance(f, Audio)]
    assert events[:3] == [
        SpeechStarted(pts=4.02),  # relative to the first audio sent (pts 3.0)
        SpeechStopped(pts=5.31),
        Transcript("user", "hi there", True, item_id="item_1"),
    ]


# ----------------------------------------------------------------------------- tools


@aio
async def test_tool_calls_results_and_exactly_one_response_create() -> None:
    async def tools(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})
        for cid, name in (("call_a", "get_time"), ("call_b", "lookup_order")):
            await conn.send(
                type="conversation.item.added",
                item={"id": cid, "type": "function_call", "call_id": cid},
            )
            await conn.send(
                type="conversation.item.added",
                item={"id": cid, "type": "function_call", "call_id": cid},
            )
            await conn.send(
                type="response.function_call_arguments.done",
                response_id="resp_1",
                item_id=f"it_{cid}",
                call_id=cid,
                name=name,
                arguments='{"x":1}',
            )
        await conn.send(
            type="response.function_call_arguments.done",
            response_id="resp_1",
            item_id="it_call_a",
            call_id="call_a",
            name="get_time",
            arguments='{"x":1}',
        )
        await conn.send(type="response.done", response={"id": "resp_1", "status": "completed"})
        await conn.next("response.create")
        await conn.response("resp_2", "item_9", chunks=1)

    async with ScriptedPeer(tools).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(Text("what time is it?"))
        calls = [await run.until(ToolCall), await run.until(ToolCall)]
        assert [(c.call_id, c.name, c.arguments) for c in calls] == [  # type: ignore[attr-defined]
            ("call_a", "get_time", '{"x":1}'),
            ("call_b", "lookup_order", '{"x":1}'),
        ]
        await run.until(ResponseDone)
        run.feed.put(ToolResult("call_b", "order shipped"))
        run.feed.put(ToolResult("call_a", "12:00"))
        run.feed.put(ToolResult("call_a", "12:00 again"))  # a repeat: ignored
        run.ctx.forward_ended.set()  # forward input ended; feedback still open
        out = await run.rest()
    assert not any(isinstance(f, ToolCall) for f in out)  # no duplicate call frames
    after_calls = peer.sent_types()[peer.sent_types().index("response.create") + 1 :]
    assert [t for t in after_calls if t != "session.update"] == [
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    outputs = [m["item"] for m in peer.received if m["type"] == "conversation.item.create"][1:]
    assert outputs == [
        {"type": "function_call_output", "call_id": "call_b", "output": "order shipped"},
        {"type": "function_call_output", "call_id": "call_a", "output": "12:00"},
    ]
    assert ResponseDone("resp_2", "completed") in out


@aio
async def test_tools_default_to_linked_tool_routers() -> None:
    from stages.tools import tool_router

    spec = spec_of(tool_router)
    assert spec is not None
    router = Peer(
        "tools", "tool_router", {"tools": ["examples.tools:get_time"]}, False, spec.provides
    )
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(downstream=(router,)), **params(peer.url))
        run.feed.end()
        await run.rest()
    (tool,) = peer.received[0]["session"]["tools"]
    assert tool["type"] == "function" and tool["name"] == "get_time"
    assert tool["parameters"]["properties"]["city"]["type"] == "string"


@aio
async def test_tools_of_any_stage_that_provides_them_not_only_tool_router() -> None:
    """The session finds tools through the declared ``TOOLS`` interface: a user's own router
    (any type name) is advertised; a stage named tool_router that provides nothing is not."""
    definition = {"type": "function", "name": "book", "description": "", "parameters": {}}
    mine = Peer("mine", "my_router", {"n": 1}, False, {TOOLS: lambda values, base: [definition]})
    impostor = Peer("other", "tool_router", {"tools": ["examples.tools:get_time"]})
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(downstream=(impostor,), upstream=(mine,)), **params(peer.url))
        run.feed.end()
        await run.rest()
    assert peer.received[0]["session"]["tools"] == [definition]
    spec = spec_of(realtime_session)
    assert spec is not None and TOOLS in spec.uses and PLAYED in spec.subscribes


@aio
async def test_explicit_tools_as_definitions() -> None:
    definition = {
        "type": "function",
        "name": "f",
        "description": "d",
        "parameters": {"type": "object"},
    }
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(), **params(peer.url, tools=[definition]))
        run.feed.end()
        await run.rest()
    assert peer.received[0]["session"]["tools"] == [definition]


# ----------------------------------------------------------------------------- barge-in


@aio
async def test_server_barge_in_interrupt_comes_before_any_further_audio() -> None:
    go = asyncio.Event()

    async def barge(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("input_audio_buffer.append")
        await conn.send(type="response.created", response={"id": "resp_1"})
        for i in range(10):  # a second of reply audio, sent ahead
            data = np.full(2400, i + 1, dtype="<i2").tobytes()
            await conn.send(
                type="response.output_audio.delta",
                response_id="resp_1",
                item_id="item_2",
                delta=base64.b64encode(data).decode(),
            )
        await go.wait()
        await conn.send(
            type="input_audio_buffer.speech_started", item_id="item_3", audio_start_ms=500
        )
        late = base64.b64encode(b"\x07\x00" * 2400).decode()  # the server is not done yet
        await conn.send(
            type="response.output_audio.delta", response_id="resp_1", item_id="item_2", delta=late
        )
        await conn.send(type="response.done", response={"id": "resp_1", "status": "cancelled"})
        await conn.send(
            type="input_audio_buffer.speech_stopped", item_id="item_3", audio_end_ms=900
        )
        await conn.response("resp_2", "item_4", chunks=1)

    async with ScriptedPeer(barge).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(pcm(20))
        first = await run.until(Audio)
        go.set()
        # the stage reacts to speech_started by truncating: from then on, no audio may precede
        # the interrupt (the other nine chunks were queued in the stage before it)
        while "conversation.item.truncate" not in peer.sent_types():
            await asyncio.sleep(0)
        nxt = await run.pull()
        while isinstance(nxt, SpeechStarted):
            nxt = await run.pull()
        assert isinstance(nxt, Interrupt), nxt
        assert nxt.pts == pytest.approx(0.1) and nxt.response_id == "resp_1"
        run.feed.end()
        rest = await run.rest()
    assert first.pts == 0.0  # type: ignore[attr-defined]
    later_audio = [f for f in rest if isinstance(f, Audio)]
    assert [a.samples()[0] for a in later_audio] == [
        1
    ]  # only resp_2's audio (value 1), none of resp_1
    assert later_audio[0].pts == pytest.approx(0.1)  # continuous: no hole for the dropped audio
    trunc = next(m for m in peer.received if m["type"] == "conversation.item.truncate")
    assert (trunc["item_id"], trunc["audio_end_ms"]) == ("item_2", 100)  # what left the stage
    assert "response.cancel" not in peer.sent_types()  # the server's VAD cancels by itself


@aio
async def test_local_barge_in_cancels_and_truncates_at_the_played_position() -> None:
    async def reply(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})
        for i in range(5):
            data = np.full(2400, i + 1, dtype="<i2").tobytes()
            await conn.send(
                type="response.output_audio.delta",
                response_id="resp_1",
                item_id="item_2",
                delta=base64.b64encode(data).decode(),
            )
        await conn.next("response.cancel")
        await conn.send(type="response.done", response={"id": "resp_1", "status": "cancelled"})

    async with ScriptedPeer(reply).running() as peer:
        ctx = context()
        run = Run(ctx, **params(peer.url, turn_detection="none"))
        run.feed.put(Text("talk"))
        await run.until(Audio)
        await run.until(Audio)
        ctx.bus.publish(PLAYED, Played("reply", 0.13))  # the sink has played 130 ms
        ctx.bus.publish(PLAYED, Played("elsewhere", 99.0))  # not our timeline: ignored
        run.feed.put(SpeechStarted(pts=2.0, stage="gate"))
        while "conversation.item.truncate" not in peer.sent_types():
            await asyncio.sleep(0)
        nxt = await run.pull()
        while isinstance(nxt, SpeechStarted):
            nxt = await run.pull()
        assert isinstance(nxt, Interrupt)
        run.feed.end()
        rest = await run.rest()
    assert not any(isinstance(f, Audio) for f in rest)
    cancel = next(m for m in peer.received if m["type"] == "response.cancel")
    trunc = next(m for m in peer.received if m["type"] == "conversation.item.truncate")
    assert cancel["response_id"] == "resp_1"
    assert (trunc["item_id"], trunc["audio_end_ms"]) == ("item_2", 130)
    assert ResponseDone("resp_1", "cancelled") in rest


@aio
async def test_speech_without_assistant_audio_is_no_barge_in() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(SpeechStarted(pts=0.5, stage="gate"))
        run.feed.end()
        out = await run.rest()
    assert out == [SpeechStarted(pts=0.5, stage="gate")]
    assert "response.cancel" not in peer.sent_types()


# ----------------------------------------------------------------------------- faults and lifecycle


@aio
async def test_server_closes_mid_response_reconnects_and_says_so() -> None:
    async def die(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})
        conn.ws.transport.abort()  # no close frame: 1006

    async def fine(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.response("resp_9", chunks=1)

    async with ScriptedPeer(die, fine).running() as peer:
        with structlog.testing.capture_logs() as logs:
            run = Run(context(), **params(peer.url))
            run.feed.put(Text("one"))
            await run.until(ResponseStarted)
            while len(peer.conns) < 2:  # a turn sent into the dying socket would be lost
                await asyncio.sleep(0)
            run.feed.put(Text("two"))
            await run.until(Audio)
            run.feed.end()
            await run.rest()
    assert len(peer.conns) == 2
    assert peer.sent_types().count("session.update") >= 2
    lost = [e for e in logs if "conversation so far carried over" in e["event"]]
    assert lost and lost[0]["log_level"] == "warning"


@aio
async def test_repeated_connect_failures_are_fatal_in_one_line() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        url = peer.url
    run = Run(context(), **params(url, reconnect_attempts=2))  # the server is gone
    run.feed.end()
    with pytest.raises(SessionRemoteError) as info:
        await run.rest()
    text = str(info.value)
    assert text.startswith(f"cannot connect to {url} after 3 attempts")
    assert "\n" not in text and SECRET not in text


@aio
async def test_401_is_fatal_and_never_shows_the_key() -> None:
    async with ScriptedPeer(handshake_only, status=401).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.end()
        with pytest.raises(SessionRemoteError) as info:
            await run.rest()
    text = str(info.value)
    assert text == (
        f"{peer.url} refused the API key from PIPELINE_TEST_KEY (HTTP 401); check that the key "
        "is valid and allowed to use the model"
    )
    assert info.value.code == "401" and info.value.__cause__ is None
    assert len(peer.requests) == 1  # not retried


@aio
async def test_slow_server_never_acknowledges() -> None:
    async def mute(conn: Conn) -> None:
        conn.ack = False
        await conn.handshake()

    async with ScriptedPeer(mute).running() as peer:
        clock = VirtualClock()
        run = Run(context(clock), **params(peer.url, session_timeout_s=5))
        run.feed.put(pcm(20))
        with pytest.raises(SessionRemoteError, match=r"no session\.updated from .* within 5 s"):
            await run.rest()
    assert peer.sent_types() == ["session.update"]  # no audio was sent
    assert clock.now() == 5.0  # virtual seconds: nothing waited for real


@aio
async def test_malformed_json_is_an_error_frame_and_the_session_goes_on() -> None:
    async def garbage(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.ws.send("{this is not json")
        await conn.response(chunks=1)

    async with ScriptedPeer(garbage).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(Text("hi"))
        run.feed.end()
        out = await run.rest()
    errors = [f for f in out if isinstance(f, ErrorReport)]
    assert [e.code for e in errors] == ["malformed_message"]
    assert ResponseDone("resp_1", "completed") in out


@aio
async def test_flat_and_nested_errors_become_error_frames_with_a_warning() -> None:
    async def errs(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(
            type="error",
            event_id="e5845cc2",
            params="Multiple frame rates in the concatenated frames: {24000, 16000}",
            code="internal_error",
            message="ValueError",
            previous_item_id=None,
        )
        await conn.send(
            type="error",
            error={
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "bad voice",
            },
        )
        await conn.send(
            type="error",
            error={"code": "response_cancel_not_active", "message": "nothing to cancel"},
        )
        await conn.send(
            type="rate_limits.updated",
            rate_limits=[{"name": "requests", "limit": 1, "remaining": 1}],
        )
        await conn.send(type="ping", timestamp=1)
        await conn.send(type="mcp_list_tools.in_progress")
        await conn.response(chunks=1)

    async with ScriptedPeer(errs).running() as peer:
        with structlog.testing.capture_logs() as logs:
            run = Run(context(), **params(peer.url))
            run.feed.put(Text("hi"))
            run.feed.end()
            out = await run.rest()
    errors = [f for f in out if isinstance(f, ErrorReport)]
    assert errors == [
        ErrorReport("internal_error", "ValueError"),
        ErrorReport("invalid_value", "bad voice"),
    ]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [w["code"] for w in warnings] == ["internal_error", "invalid_value"]


@aio
async def test_fatal_error_event_ends_the_run() -> None:
    async def refuse(conn: Conn) -> None:
        await conn.handshake()
        await conn.send(
            type="error",
            error={
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "message": "Incorrect API key provided",
            },
        )

    async with ScriptedPeer(refuse).running() as peer:
        run = Run(context(), **params(peer.url))
        with pytest.raises(SessionRemoteError, match="refused the session: invalid_api_key"):
            await run.rest()


@aio
async def test_end_of_input_waits_for_the_response_in_flight_then_closes_cleanly() -> None:
    release = asyncio.Event()

    async def slow(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})
        await release.wait()
        await conn.response("resp_1", chunks=2)

    async with ScriptedPeer(slow).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(Text("hi"))
        run.feed.end()
        await run.until(ResponseStarted)
        release.set()
        out = await run.rest()
        server_side = peer.conns[0].ws
        await asyncio.wait_for(server_side.wait_closed(), SAFETY_S)
    assert sum(isinstance(f, Audio) for f in out) == 2
    assert out[-1] == ResponseDone("resp_1", "completed")
    assert server_side.close_code == 1000  # a clean close, by the client


@aio
async def test_end_of_input_gives_up_on_a_response_that_never_ends() -> None:
    async def stuck(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})

    async with ScriptedPeer(stuck).running() as peer:
        with structlog.testing.capture_logs() as logs:
            clock = VirtualClock()
            run = Run(context(clock), **params(peer.url, response_timeout_s=30))
            run.feed.put(Text("hi"))
            await run.until(ResponseStarted)
            run.feed.end()
            assert await run.rest() == []
    assert any("stopped waiting" in e["event"] for e in logs)
    assert clock.now() == 30.0  # virtual seconds: nothing waited for real


@aio
async def test_asked_to_stop_closes_without_waiting_for_the_response() -> None:
    async def stuck(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "resp_1"})

    async with ScriptedPeer(stuck).running() as peer:
        ctx = context()
        run = Run(ctx, **params(peer.url))  # response_timeout_s: 30 s, not waited for
        run.feed.put(Text("hi"))
        await run.until(ResponseStarted)
        ctx.stopping.set()  # Ctrl-C: the sources end
        run.feed.end()
        assert await run.rest() == []


@aio
async def test_recycles_the_session_after_max_session_s() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        with structlog.testing.capture_logs() as logs:
            run = Run(context(), **params(peer.url, max_session_s=60))  # virtual seconds
            consuming = asyncio.create_task(run.rest())
            while len(peer.conns) < 2:
                await asyncio.sleep(0)
            run.feed.end()
            await consuming
    assert peer.sent_types()[:2] == ["session.update", "session.update"]
    recycled = [e for e in logs if "recycling the session" in e["event"]]
    assert recycled and recycled[0]["max_session_s"] == 60
    assert not [e for e in logs if "connection to the realtime service lost" in e["event"]]


@aio
async def test_closing_early_leaves_no_task_and_closes_the_socket() -> None:
    async def reply(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.response(chunks=5)
        await conn.ws.wait_closed()

    async with ScriptedPeer(reply).running() as peer:
        run = Run(context(), **params(peer.url))
        run.feed.put(Text("hi"))
        await run.until(Audio)
        await run.close()
        no_tasks_left()
        await asyncio.wait_for(peer.conns[0].ws.wait_closed(), SAFETY_S)


@aio
async def test_missing_key_is_a_config_error() -> None:
    run = Run(
        context(), **params("ws://127.0.0.1:9/v1/realtime", api_key_env="PIPELINE_NO_SUCH_KEY")
    )
    run.feed.end()
    with pytest.raises(ConfigError, match="environment variable PIPELINE_NO_SUCH_KEY is not set"):
        await run.rest()


# ----------------------------------------------------------------------------- against the emulator


def utterance(rate: int = 16000) -> list[Audio]:
    """0.5 s silence, 1 s of a loud tone, 1 s silence, as 20 ms frames."""
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    sig = np.concatenate([np.zeros(rate // 2, np.int16), tone, np.zeros(rate, np.int16)])
    n = rate // 50
    return [Audio.from_samples(sig[i : i + n], rate, pts=i / rate) for i in range(0, len(sig), n)]


@aio
async def test_emulator_audio_in_reply_audio_out() -> None:
    run = Run(
        context(),
        provider="emulator",
        input_rate=16000,
        output_rate=24000,
        emulator={"reply": "echo"},
    )
    run.feed.put(*utterance())
    run.feed.end()
    out = await run.rest()
    audio = [f for f in out if isinstance(f, Audio)]
    assert audio and all((a.encoding, a.rate) == ("pcm16", 24000) for a in audio)
    for a, b in itertools.pairwise(audio):
        assert b.pts == pytest.approx(a.end_pts)  # continuous
    total = sum(a.duration for a in audio)
    assert total == pytest.approx(1.333, abs=0.05)  # the utterance, as the emulator heard it
    kinds = [type(f).__name__ for f in out if not isinstance(f, Audio)]
    assert kinds[:3] == ["SpeechStarted", "SpeechStopped", "Transcript"]
    assert "ResponseStarted" in kinds and kinds[-1] == "ResponseDone"


@aio
async def test_emulator_tool_call_round_trip() -> None:
    script = {"tool_calls": [{"turn": 1, "name": "get_time", "arguments": {"city": "Paris"}}]}
    run = Run(
        context(),
        provider="emulator",
        input_rate=16000,
        emulator=script,
        tools=["examples.tools:get_time"],  # the emulator calls only declared tools
    )
    run.feed.put(*utterance())
    call = await run.until(ToolCall)
    assert call.name == "get_time" and orjson.loads(call.arguments) == {"city": "Paris"}  # type: ignore[attr-defined]
    run.feed.put(ToolResult(call.call_id, '{"time": "12:00"}'))  # type: ignore[attr-defined]
    run.ctx.forward_ended.set()
    out = await run.rest()
    assert any(isinstance(f, Audio) for f in out)
    done = [f for f in out if isinstance(f, ResponseDone)]
    assert done and done[-1].status == "completed"


@aio
async def test_emulator_check_stage_conformance() -> None:
    frames = await check_stage_async(
        "realtime_session", utterance(), provider="emulator", input_rate=16000
    )
    assert any(isinstance(f, Audio) for f in frames)


@aio
async def test_emulator_openai_dialect_at_24k() -> None:
    run = Run(context(), provider="emulator", dialect="openai", input_rate=24000)
    run.feed.put(*utterance(24000))
    run.feed.end()
    out = await run.rest()
    assert any(isinstance(f, Audio) and f.rate == 24000 for f in out)


@aio
async def test_no_api_key_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # caplog restores the root's level; websockets' own logger is put back here, since a
    # connection with debug logging on reads every frame through websockets' slow path
    websockets_logger = logging.getLogger("websockets")
    level = websockets_logger.level
    websockets_logger.setLevel(logging.DEBUG)
    try:
        await _no_api_key_anywhere(caplog)
    finally:
        websockets_logger.setLevel(level)


async def _no_api_key_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    captured: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with emulator.run_emulator(emulator.EmulatorConfig(), "127.0.0.1", 0) as emu:
            ctx = context()
            run = Run(ctx, **params(emu.url, input_rate=16000))
            captured.append(repr(ctx))
            run.feed.put(*utterance())
            run.feed.end()
            out = await run.rest()
            captured.append(repr(emu.received) if hasattr(emu, "received") else "")
        async with ScriptedPeer(handshake_only, status=401).running() as peer:
            bad = Run(context(), **params(peer.url))
            bad.feed.end()
            with pytest.raises(SessionRemoteError) as info:
                await bad.rest()
            captured += [str(info.value), repr(info.value)]
    captured += [repr(f) for f in out]
    captured += [repr(e) for e in logs]
    # every record, the emulator's server side included (websockets logs the request headers
    # at debug level on its default loggers); only the scripted test double is left out
    records = [r for r in caplog.records if r.name != _PEER_LOGGER.name]
    captured += [r.getMessage() + repr(r.args) for r in records]
    captured.append(repr(resolve_settings(params(emu.url))))
    captured.append(repr(emu.connections))
    text = "\n".join(captured)
    assert any(isinstance(f, Audio) for f in out)
    # websockets' own loggers were at debug level (they log request headers at that level)
    assert logging.getLogger("websockets.server").isEnabledFor(logging.DEBUG)
    assert "Bearer" not in text or SECRET not in text
    assert SECRET not in text


@aio
async def test_emulator_barge_in_cancels_and_no_audio_follows_the_interrupt() -> None:
    clock = VirtualClock()
    config = emulator.EmulatorConfig(reply="tone", tone_ms=3000, chunk_ms=100, pace=1.0)
    async with emulator.run_emulator(config, "127.0.0.1", 0, clock=clock) as emu:
        run = Run(context(clock), **params(emu.url))
        run.feed.put(*utterance())  # turn 1; the reply is paced in (virtual) real time
        await run.until(Audio)
        later = [
            dataclasses.replace(f, pts=f.pts + 2.5)  # turn 2 while the reply is playing
            for f in utterance()
        ]
        run.feed.put(*later)
        run.feed.end()
        out = await run.rest()
        received = emu.received
    cut = next(i for i, f in enumerate(out) if isinstance(f, Interrupt))
    assert out[cut].response_id == "resp_0001"  # type: ignore[union-attr]
    first_reply_after = [f for f in out[cut:] if isinstance(f, ResponseStarted | Audio)][:1]
    assert not first_reply_after or isinstance(first_reply_after[0], ResponseStarted)
    assert ResponseDone("resp_0001", "cancelled") in out
    truncate = [m for m in received if m["type"] == "conversation.item.truncate"]
    assert len(truncate) == 1 and truncate[0]["audio_end_ms"] > 0


@pytest.mark.parametrize(("law", "wire"), [("pcmu", "audio/pcmu"), ("pcma", "g711_alaw")])
@aio
async def test_emulator_telephony_g711_both_ways(law: str, wire: str) -> None:
    from stages import g711

    encode = g711.encode_ulaw if law == "pcmu" else g711.encode_alaw
    frames = [Audio(encode(f.data), law, 8000, pts=f.pts) for f in utterance(8000)]  # type: ignore[arg-type]
    run = Run(context(), provider="emulator", input_format=law, output_format=wire)
    run.feed.put(*frames)
    run.feed.end()
    out = await run.rest()
    audio = [f for f in out if isinstance(f, Audio)]
    assert audio and {(a.encoding, a.rate) for a in audio} == {(law, 8000)}
    assert sum(a.num_samples for a in audio) == pytest.approx(8000 * 1.333, abs=400)


@aio
async def test_emulator_provider_403_names_the_endpoint() -> None:
    run = Run(context(), provider="emulator", input_rate=16000, emulator={"reject_status": 403})
    run.feed.end()
    with pytest.raises(SessionRemoteError, match=r"^ws://127\.0\.0\.1:\d+/v1/realtime refused"):
        await run.rest()


# ----------------------------------------------------------------------------- pure parts


@given(
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=30),
    rate=st.sampled_from([8000, 16000, 24000]),
)
def test_batcher_pieces_are_20_to_100_ms_whatever_the_frame_sizes(
    sizes: list[int], rate: int
) -> None:
    batcher = AudioBatcher(AudioFormat("pcm16", rate), fill_gaps=False)
    frames, pts = [], 0.0
    for i, n in enumerate(sizes):
        frames.append(Audio(np.full(n, i, "<i2").tobytes(), "pcm16", rate, pts=pts))
        pts += n / rate
    pieces = [piece for f in frames for piece in batcher.push(f)] + batcher.flush()
    data = b"".join(d for _, d in pieces)
    assert data == b"".join(f.data for f in frames)
    ms = [len(d) / 2 / rate * 1000 for _, d in pieces]
    assert all(m <= 100 for m in ms)
    assert all(m >= 20 for m in ms[:-1])
    position = 0
    for piece_pts, d in pieces:  # each piece's pts is where its first sample is
        assert piece_pts == pytest.approx(position / 2 / rate)
        position += len(d)


def test_batcher_fills_gaps_and_pads_with_the_codec_silence() -> None:
    batcher = AudioBatcher(AudioFormat("pcmu", 8000), fill_gaps=True)
    a = Audio(b"\x01" * 160, "pcmu", 8000, pts=0.0)
    b = Audio(b"\x02" * 160, "pcmu", 8000, pts=0.1)  # 80 ms gap
    pieces = batcher.push(a) + batcher.push(b) + batcher.pad(0.05) + batcher.flush()
    data = b"".join(d for _, d in pieces)
    assert data == b"\x01" * 160 + b"\xff" * 640 + b"\x02" * 160 + b"\xff" * 400


def test_batcher_caps_a_long_gap() -> None:
    batcher = AudioBatcher(AudioFormat("pcm16", 8000), fill_gaps=True)
    batcher.push(Audio(b"\x00\x00" * 160, "pcm16", 8000, pts=0.0))
    pieces = batcher.push(Audio(b"\x01\x00" * 160, "pcm16", 8000, pts=60.0)) + batcher.flush()
    assert sum(len(d) for _, d in pieces) == (8000 + 160 + 160) * 2 - 320  # 1 s of silence, not 60


def test_playout_interrupt_jumps_ahead_of_audio_and_drops_it() -> None:
    out = ReplyPlayout(AudioFormat("pcm16", 8000))
    out.put(ReplyAudio(b"\x00\x00" * 800, "item_1", "r1"))
    out.put(ReplyAudio(b"\x00\x00" * 800, "item_1", "r1"))
    out.put(Transcript("assistant", "hi", True))
    first = out.take()
    assert isinstance(first, Audio) and first.pts == 0.0
    assert out.interrupt(Interrupt(pts=out.pts, response_id="r1")) == 1
    assert out.take() == Transcript("assistant", "hi", True)  # queued before it
    assert out.take() == Interrupt(pts=0.1, response_id="r1")
    assert not out.has_audio()
    assert out.heard_ms("item_1") == 100
    out.on_played(Played("sink", 0.04))
    assert out.heard_ms("item_1") == 40
    out.on_played(Played("other timeline", 7.0))  # ignored
    assert out.heard_ms("item_1") == 40
    assert out.heard_ms("never_played") == 0


def test_playout_interrupt_never_overtakes_a_queued_tool_call() -> None:
    """A tool call queued behind audio stays ahead of the interrupt (``on_interrupt: finish``
    runs calls the router saw before the interrupt); audio queued after it is dropped."""
    out = ReplyPlayout(AudioFormat("pcm16", 8000))
    call = ToolCall("call_1", "get_time", "{}", "r1")
    out.put(ReplyAudio(b"\x01\x00" * 80, "item_1", "r1"))
    out.put(call)
    out.put(ReplyAudio(b"\x02\x00" * 80, "item_1", "r1"))
    out.put(Transcript("assistant", "let me check", False))
    out.put(ReplyAudio(b"\x03\x00" * 80, "item_1", "r1"))
    assert out.interrupt(Interrupt(pts=0.0, response_id="r1")) == 3
    out.put(ResponseDone("r1", "cancelled"))
    got = [out.take() for _ in range(4)]
    assert got == [
        call,
        Transcript("assistant", "let me check", False),
        Interrupt(pts=0.0, response_id="r1"),
        ResponseDone("r1", "cancelled"),
    ]
    assert not out.has_audio() and out.pts == 0.0


@aio
async def test_server_vad_gate_mode_turn_is_answered_before_the_caller_speaks_again() -> None:
    # A gate in `gate` mode passes speech plus its hangover (400 ms here), then nothing: shorter
    # than the 500 ms of silence the server's VAD needs. Its speech_stopped must end the turn.
    rate = 16000
    t = np.arange(int(0.8 * rate)) / rate
    tone = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    sig = np.concatenate([tone, np.zeros(int(0.4 * rate), np.int16)])  # speech + hangover
    n = rate // 50
    run = Run(context(), provider="emulator", input_rate=rate, emulator={"reply": "echo"})
    run.feed.put(
        *(Audio.from_samples(sig[i : i + n], rate, pts=i / rate) for i in range(0, len(sig), n))
    )
    run.feed.put(SpeechStopped(pts=0.8))  # the gate's offset; the input stays open
    started = await run.until(ResponseStarted)  # fails on the safety timeout without the pad
    assert started.response_id
    run.feed.end()
    await run.rest()


def test_batcher_turn_end_pad_and_overlap_keep_the_input_timeline() -> None:
    fmt = AudioFormat("pcm16", 16000)
    b = AudioBatcher(fmt, fill_gaps=True)
    pieces = b.push(pcm(100, pts=0.0))  # speech 0–0.1 s (its 400 ms hangover included)
    pieces += b.pad_turn_end(0.0, 0.6)  # offset at 0: 100 ms heard, 500 ms of silence added
    assert b.next_pts == pytest.approx(0.6)
    pieces += b.push(pcm(200, pts=0.5))  # annotate-mode audio already covered until 0.6
    pieces += b.flush()
    total = sum(len(d) for _, d in pieces) // 2
    assert total == int(0.7 * 16000)  # 0–0.7 s, nothing twice
    data = b"".join(d for _, d in pieces)
    samples = np.frombuffer(data, "<i2")
    assert np.all(samples[1600:9600] == 0) and np.all(samples[9600:] == 1000)
    assert b.pad_turn_end(0.0, 0.6) == []  # already heard enough silence


@pytest.mark.parametrize("interruptible", [True, False])
@aio
async def test_a_forced_message_not_interruptible_stays_uncut_while_it_plays_out_here(
    interruptible: bool,
) -> None:
    """The service sent all of the forced message and said it is done, but the sink is still
    playing it: the caller speaking (heard by a local VAD) does not cut it when it is marked
    ``interruptible: false`` (xAI drops their audio until it has been played), and does when
    it is not."""
    cfg = emulator.EmulatorConfig(dialect="xai", reply="tone", tone_ms=3000, pace=0)
    greeting = {"text": "Please listen.", "interruptible": interruptible}
    async with emulator.run_emulator(cfg) as emu:
        ctx = context()
        run = Run(
            ctx,
            **params(
                emu.url, provider="xai", turn_detection="none", output_rate=16000,
                greeting=greeting,
            ),
        )  # fmt: skip
        done = await run.until(ResponseDone)
        assert done.status == "completed"  # all 3 s arrived at once
        ctx.bus.publish(PLAYED, Played("reply", 0.5))  # the sink has played 0.5 s of it
        run.feed.put(SpeechStarted(pts=0.6, stage="gate"))
        run.feed.end()
        rest = await run.rest()
    assert any(isinstance(f, Interrupt) for f in rest) is interruptible
    received = [e["type"] for e in emu.connections[0].received]
    assert ("conversation.item.truncate" in received) is interruptible
