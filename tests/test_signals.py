"""stop_signals: the first SIGINT/SIGTERM drains, the next stops now (run, serve, playground)."""

from __future__ import annotations

import asyncio
import os
import signal

from pipeline.signals import stop_signals


def test_first_signal_drains_the_next_stops_now_and_handlers_go_away() -> None:
    calls: list[str] = []

    async def main() -> list[signal.Signals]:
        drained, stopped = asyncio.Event(), asyncio.Event()

        def drain() -> None:
            calls.append("drain")
            drained.set()

        def now() -> None:
            calls.append("now")
            stopped.set()

        with stop_signals(drain, now) as stops:
            os.kill(os.getpid(), signal.SIGTERM)
            await drained.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await stopped.wait()
        assert not stops.interrupted  # the first was SIGTERM: exit 0 after the drain
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the loop's handler is gone
        return stops.received

    assert asyncio.run(main()) == [signal.SIGTERM, signal.SIGINT]
    assert calls == ["drain", "now"]


def test_without_a_second_action_every_signal_drains() -> None:
    async def main() -> bool:
        seen = asyncio.Event()
        with stop_signals(seen.set) as stops:
            os.kill(os.getpid(), signal.SIGINT)
            await seen.wait()
        return stops.interrupted

    assert asyncio.run(main()) is True
