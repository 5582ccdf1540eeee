"""A hostile or broken model server on loopback: a message of 50 MB, an hour of "reply" in a
burst, a session that opens and closes again and again, a plain-text URL that would carry the
key. Each ends the run with one line (exit 1, or 2 for a bad url) in bounded, virtual time."""

from __future__ import annotations

import asyncio
import base64

import pytest

from pipeline.clock import VirtualClock
from pipeline.errors import ConfigError, SessionRemoteError
from pipeline.frames import Audio, Text
from stages.realtime.connection import plain_text_key_problem
from tests.stages.realtime.test_session import (
    SECRET,
    Conn,
    Run,
    ScriptedPeer,
    aio,
    context,
    handshake_only,
    params,
)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TEST_KEY", SECRET)


def delta(rid: str, seconds: float, rate: int = 24000) -> dict[str, str]:
    data = b"\x01\x00" * int(rate * seconds)
    return {
        "type": "response.output_audio.delta",
        "response_id": rid,
        "item_id": "item_1",
        "delta": base64.b64encode(data).decode(),
    }


@aio
async def test_an_oversized_message_is_refused_in_one_line() -> None:
    async def huge(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "r1"})
        await conn.send(**delta("r1", 30.0))  # 1.44 MB of PCM, 1.9 MB of base64 in one message

    async with ScriptedPeer(huge).running() as peer:
        run = Run(context(), **params(peer.url, max_message_bytes=1_000_000))
        run.feed.put(Text("hi"))
        with pytest.raises(SessionRemoteError) as info:
            await run.rest()
    assert str(info.value) == (
        f"{peer.url} sent a message of more than 1000000 bytes (max_message_bytes); refused and "
        "closed: realtime events are far smaller, raise max_message_bytes only if the service "
        "really sends such"
    )
    assert info.value.code == "message_too_big"
    assert not any(isinstance(f, Audio) for f in run.out)
    assert len(peer.conns) == 1  # not retried


@aio
async def test_more_audio_than_real_time_allows_is_misbehaviour() -> None:
    async def flood(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.send(type="response.created", response={"id": "r1"})
        for _ in range(100):  # 200 s of reply at once, in messages of a normal size
            await conn.send(**delta("r1", 2.0))

    clock = VirtualClock()
    async with ScriptedPeer(flood).running() as peer:
        run = Run(context(clock), **params(peer.url, max_audio_ahead_s=60))
        run.feed.put(Text("hi"))
        with pytest.raises(SessionRemoteError) as info:
            await run.rest()
    assert str(info.value) == (
        f"{peer.url} sent 62.0 s of audio in 0.0 s, more than 60 s ahead of real time "
        "(max_audio_ahead_s): the service is misbehaving"
    )
    heard = sum(f.duration for f in run.out if isinstance(f, Audio))
    assert heard <= 60.0


@aio
async def test_a_service_that_opens_then_closes_backs_off_and_gives_up() -> None:
    async def open_then_close(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("session.update")  # acknowledged by the peer: the session is ready
        await conn.ws.close(1011, "internal error")

    clock = VirtualClock()
    async with ScriptedPeer(open_then_close).running() as peer:
        run = Run(context(clock), **params(peer.url, reconnect_attempts=3))
        run.feed.put(Text("hi"))
        with pytest.raises(SessionRemoteError) as info:
            await run.rest()
    assert str(info.value) == (
        f"{peer.url} closed the connection 4 times in a row without delivering a response "
        "(last close: 1011 internal error); check the service's status, the model and the "
        "session parameters"
    )
    assert info.value.code == "no_response"
    assert len(peer.conns) == 4
    assert clock.now() == 0.5 + 1.0 + 2.0  # backoff between the attempts, on the run's clock


@aio
async def test_a_session_that_delivers_resets_the_backoff() -> None:
    async def answer_then_close(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("session.update")
        await conn.response(f"r{conn.index}", chunks=1)  # its VAD heard a turn: a reply
        await conn.ws.close(1011, "internal error")

    clock = VirtualClock()
    scripts = [answer_then_close] * 4 + [handshake_only]
    async with ScriptedPeer(*scripts).running() as peer:
        run = Run(context(clock), **params(peer.url, reconnect_attempts=1))
        consuming = asyncio.create_task(run.rest())
        while len(peer.conns) < 5:
            await asyncio.sleep(0)
        assert clock.now() == 0.0  # every connection delivered a response: no backoff
        run.feed.end()
        await consuming
    assert sum(isinstance(f, Audio) for f in run.out) == 4


@aio
async def test_the_key_never_goes_over_plain_ws_to_another_machine() -> None:
    # refused before any connection (the .test domain never resolves: nothing leaves the host)
    url = "ws://models.example.test/v1/realtime"
    run = Run(context(), **params(url, connect_timeout_s=0.5, reconnect_attempts=0))
    run.feed.end()
    with pytest.raises(ConfigError) as info:
        await run.rest()
    assert str(info.value) == (
        "parameter 'url': refusing to send the API key from PIPELINE_TEST_KEY over unencrypted "
        "ws:// to models.example.test; use a wss:// url (plain ws:// is allowed to loopback only)"
    )


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("ws://127.0.0.1:8080/v1/realtime", False),
        ("ws://127.9.9.9/v1/realtime", False),
        ("ws://[::1]:8080/v1/realtime", False),
        ("ws://LocalHost:8080/v1/realtime", False),
        ("wss://api.x.ai/v1/realtime", False),
        ("ws://192.0.2.1:9/v1/realtime", True),
        ("ws://10.0.0.7/v1/realtime", True),
        ("ws://127.0.0.1.example.test/v1/realtime", True),
    ],
)
def test_which_urls_may_carry_the_key_in_clear(url: str, refused: bool) -> None:
    assert (plain_text_key_problem(url, "KEY") is not None) == refused


@aio
async def test_plain_ws_to_loopback_by_name_is_allowed() -> None:
    async with ScriptedPeer(handshake_only).running() as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        run = Run(context(), **params(url))
        run.feed.end()
        assert await run.rest() == []
    assert peer.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_validate_reports_a_plain_text_url_before_running() -> None:
    from pathlib import Path

    from stages.realtime.settings import check_params

    found = check_params({"provider": "openai", "url": "ws://models.example.test/rt"}, Path())
    assert found == [
        (
            "url",
            "refusing to send the API key from OPENAI_API_KEY over unencrypted ws:// to "
            "models.example.test; use a wss:// url (plain ws:// is allowed to loopback only)",
        )
    ]
    assert check_params({"provider": "openai", "url": "ws://127.0.0.1:9/rt"}, Path()) == []


@aio
async def test_input_ending_during_a_storm_is_no_success() -> None:
    """The input ends (a short file) while the service keeps accepting the session and closing
    it: the run must not end quietly, exit 0, with an empty reply."""

    async def open_then_close(conn: Conn) -> None:
        await conn.handshake()
        await conn.next("response.create")
        await conn.ws.close(1011, "internal error")

    clock = VirtualClock()
    async with ScriptedPeer(open_then_close).running() as peer:
        run = Run(context(clock), **params(peer.url))
        run.feed.put(Text("hi"))
        run.feed.end()
        with pytest.raises(SessionRemoteError) as info:
            await run.rest()
    assert str(info.value) == (
        f"{peer.url} closed the connection before delivering a response (last close: 1011 "
        "internal error), and the input has ended; check the service's status, the model and "
        "the session parameters"
    )
    assert info.value.code == "no_response"
