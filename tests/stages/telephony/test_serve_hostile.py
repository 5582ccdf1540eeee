"""``pipeline serve`` against hostile callers on loopback: sockets that never authenticate,
floods of bad messages and bad HTTP, audio faster than real time, unsupported formats."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stages.telephony.serve import run_server
from stages.telephony.twilio import Connected, encode
from tests.stages.telephony.test_serve import assert_echoed, call, http_get, loop_pipeline


async def closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Read until the server closes ``ws``; its close code and reason."""
    async with asyncio.timeout(timeout):
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------------------- (2) the call cap


def test_unauthenticated_sockets_do_not_lock_out_the_real_caller() -> None:
    """With --token-parameter and --max-calls 3, three sockets that never show a token hold
    no call slot: the real caller (whose token comes in 'start') gets through, closing the
    socket that has waited longest; silent ones are closed after the short auth deadline."""

    async def main() -> None:
        options: dict[str, Any] = dict(
            token="s3cret", token_parameter=True, max_calls=3, max_unauthenticated=3
        )
        async with run_server(loop_pipeline(), auth_timeout_s=30.0, **options) as server:
            url = server.url + "/media"
            squatters = [await connect(url) for _ in range(3)]
            assert len(server.front.awaiting_token) == 3
            assert server.active == 0
            status, _, body = await http_get(server.port, "/readyz")
            assert status == 200 and '"ready": true' in body
            rec = await call(url, custom_parameters={"token": "s3cret"})
            assert_echoed(rec)
            assert await closed(squatters[0]) == (1008, "no token shown in time")
            for ws in squatters[1:]:
                await ws.close()
            async with asyncio.timeout(10):
                await server.front.wait_awaiting(0)
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="completed"}') == 1.0
            refused = 'pipeline_connections_refused_total{reason="unauthenticated_evicted"}'
            assert metric(text, refused) == 1.0
        async with run_server(loop_pipeline(), auth_timeout_s=0.2, **options) as server:
            ws = await connect(server.url + "/media")
            await ws.send(encode(Connected()))
            assert await closed(ws) == (1008, "no start message")
            async with asyncio.timeout(10):
                await server.front.wait_awaiting(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="no_start"}') == 1.0

    asyncio.run(main())
