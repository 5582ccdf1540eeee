"""Channels and inboxes: overflow policies, statistics, control frames, close, merging."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from pipeline.channels import (
    Channel,
    ChannelStatistics,
    ClosedResourceError,
    EndOfStream,
    Inbox,
)
from pipeline.frames import Audio, Frame, Interrupt, Text


def audio(i: int) -> Audio:
    return Audio(bytes([i, 0]), "pcm16", 8000, pts=float(i))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def take(inbox: Inbox, n: int) -> list[Frame]:
    return [await inbox.get() for _ in range(n)]


async def drain(inbox: Inbox) -> list[Frame]:
    out = []
    while True:
        try:
            out.append(await inbox.get())
        except EndOfStream:
            return out


# ---------------------------------------------------------------- overflow policies


def test_block_waits_for_room_and_resumes() -> None:
    async def main() -> None:
        ch = Channel("a -> b", capacity=2)
        inbox = Inbox([ch])
        await ch.send(audio(0))
        await ch.send(audio(1))
        third = asyncio.create_task(ch.send(audio(2)))
        await turns()
        assert not third.done()  # full: the producer waits
        assert ch.depth == 2
        assert await inbox.get() == audio(0)
        await turns()
        assert third.done()  # room again: it resumed
        assert ch.depth == 2
        ch.close()
        assert await drain(inbox) == [audio(1), audio(2)]
        assert ch.statistics() == ChannelStatistics(
            name="a -> b",
            capacity=2,
            overflow="block",
            depth=0,
            peak=2,
            sent=3,
            received=3,
            dropped=0,
            purged=0,
            closed=True,
        )

    run(main())


def test_block_send_nowait_refuses_when_full() -> None:
    async def main() -> None:
        ch = Channel(capacity=1)
        assert ch.send_nowait(audio(0)) is True
        assert ch.send_nowait(audio(1)) is False
        assert ch.send_nowait(Interrupt()) is True  # control frames never wait
        assert ch.depth == 1  # the interrupt purged audio(0): only it is queued
        assert ch.purged == 1

    run(main())


def test_drop_oldest_keeps_the_newest_frames() -> None:
    async def main() -> None:
        ch = Channel("live", capacity=3, overflow="drop_oldest")
        inbox = Inbox([ch])
        for i in range(7):
            await ch.send(audio(i))  # never waits
        ch.close()
        assert await drain(inbox) == [audio(4), audio(5), audio(6)]
        st = ch.statistics()
        assert (st.sent, st.received, st.dropped, st.peak, st.depth) == (7, 3, 4, 3, 0)

    run(main())


def test_drop_newest_keeps_the_oldest_frames() -> None:
    async def main() -> None:
        ch = Channel("live", capacity=3, overflow="drop_newest")
        inbox = Inbox([ch])
        for i in range(7):
            await ch.send(audio(i))
        ch.close()
        assert await drain(inbox) == [audio(0), audio(1), audio(2)]
        st = ch.statistics()
        assert (st.sent, st.received, st.dropped, st.peak, st.depth) == (7, 3, 4, 3, 0)

    run(main())


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
def test_counters_add_up(overflow: Any) -> None:
    """Every frame sent is received, dropped, purged or still queued."""

    async def main() -> None:
        ch = Channel("x", capacity=4, overflow=overflow)
        inbox = Inbox([ch])
        got = 0
        for i in range(20):
            if overflow == "block" and ch.depth == ch.capacity:
                await inbox.get()
                got += 1
            await ch.send(Interrupt() if i == 13 else audio(i % 200))
            if i % 5 == 0:
                await inbox.get()
                got += 1
        st = ch.statistics()
        assert st.received == got
        assert st.sent == 20
        assert st.sent == st.received + st.dropped + st.purged + st.depth
        assert st.peak <= 4 + 1  # capacity, plus the control lane

    run(main())


def test_drop_policies_never_drop_control_frames() -> None:
    async def main() -> None:
        for overflow in ("drop_oldest", "drop_newest"):
            ch = Channel(capacity=2, overflow=overflow)
            inbox = Inbox([ch])
            await ch.send(Text("a"))
            await ch.send(Text("b"))
            for _ in range(3):
                await ch.send(Interrupt(pts=1.0))
            await ch.send(Text("c"))  # full: drops a text, never a queued interrupt
            ch.close()
            got = await drain(inbox)
            # events queued before an interrupt stay ahead of it
            if overflow == "drop_oldest":
                assert got == [Text("b"), *[Interrupt(pts=1.0)] * 3, Text("c")], overflow
            else:
                assert got == [Text("a"), Text("b"), *[Interrupt(pts=1.0)] * 3], overflow
            assert ch.dropped == 1

    run(main())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        Channel(capacity=0)
    with pytest.raises(ValueError, match="overflow must be one of block, drop_oldest, drop_newest"):
        Channel(overflow="drop_all")  # type: ignore[arg-type]


# ---------------------------------------------------------------- control frames


def test_interrupt_purges_audio_and_keeps_queued_events_ahead_of_it() -> None:
    async def main() -> None:
        ch = Channel(capacity=8)
        inbox = Inbox([ch])
        await ch.send(audio(0))
        await ch.send(Text("kept"))
        await ch.send(audio(1))
        await ch.send(Interrupt(pts=2.0))
        await ch.send(audio(3))  # after the interrupt: not purged
        ch.close()
        # it overtakes audio only: a queued event (a tool call, say) keeps its place
        assert await drain(inbox) == [Text("kept"), Interrupt(pts=2.0), audio(3)]
        st = ch.statistics()
        assert (st.sent, st.received, st.purged, st.dropped, st.peak) == (5, 3, 2, 0, 3)

    run(main())


def test_interrupt_does_not_wait_on_a_full_link_and_frees_a_blocked_producer() -> None:
    async def main() -> None:
        ch = Channel(capacity=2)
        inbox = Inbox([ch])
        await ch.send(audio(0))
        await ch.send(audio(1))
        blocked = asyncio.create_task(ch.send(audio(2)))
        await turns()
        assert not blocked.done()
        await asyncio.wait_for(ch.send(Interrupt()), timeout=1)  # returns at once
        await turns()
        assert blocked.done()  # the purge made room
        ch.close()
        assert await drain(inbox) == [Interrupt(), audio(2)]

    run(main())


def test_control_lanes_are_read_before_any_data_lane() -> None:
    async def main() -> None:
        a, b = Channel("a"), Channel("b")
        inbox = Inbox([a, b])
        await a.send(Text("a0"))
        await b.send(audio(0))
        await b.send(Interrupt(pts=9.0))  # purges b's audio; nothing on b to stay ahead of it
        assert await inbox.get() == Interrupt(pts=9.0)
        assert await take(inbox, 1) == [Text("a0")]

    run(main())


# ---------------------------------------------------------------- close


def test_close_semantics() -> None:
    async def main() -> None:
        ch = Channel("a -> b", capacity=4)
        inbox = Inbox([ch])
        await ch.send(audio(0))
        ch.close()
        ch.close()  # idempotent
        with pytest.raises(ClosedResourceError, match="link a -> b was closed by its producer"):
            await ch.send(audio(1))
        assert await inbox.get() == audio(0)  # what was queued is still delivered
        with pytest.raises(EndOfStream):
            await inbox.get()
        with pytest.raises(EndOfStream):  # and stays ended
            await inbox.get()

    run(main())


def test_closed_receiver_discards_and_releases_a_blocked_producer() -> None:
    async def main() -> None:
        ch = Channel(capacity=1)
        inbox = Inbox([ch])
        await ch.send(audio(0))
        blocked = asyncio.create_task(ch.send(audio(1)))
        await turns()
        assert not blocked.done()
        inbox.close()  # the consumer is gone
        await turns()
        assert blocked.done() and blocked.exception() is None
        await ch.send(audio(2))  # discarded, no error
        assert ch.depth == 0

    run(main())


def test_get_waits_and_wakes_on_send_and_on_close() -> None:
    async def main() -> None:
        ch = Channel()
        inbox = Inbox([ch])
        getter = asyncio.create_task(inbox.get())
        await turns()
        assert not getter.done()
        await ch.send(Text("x"))
        assert await getter == Text("x")
        getter = asyncio.create_task(inbox.get())
        await turns()
        assert not getter.done()
        ch.close()
        with pytest.raises(EndOfStream):
            await getter

    run(main())


# ---------------------------------------------------------------- inbox


def test_inbox_merges_round_robin_and_ends_when_all_links_end() -> None:
    async def main() -> None:
        a, b, c = Channel("a"), Channel("b"), Channel("c")
        inbox = Inbox([a, b, c])
        for i in range(3):
            await a.send(Text(f"a{i}"))
        await b.send(Text("b0"))
        await c.send(Text("c0"))
        await c.send(Text("c1"))
        a.close()
        b.close()
        got = await take(inbox, 6)
        assert [f.text for f in got if isinstance(f, Text)] == ["a0", "b0", "c0", "a1", "c1", "a2"]
        getter = asyncio.create_task(inbox.get())
        await turns()
        assert not getter.done()  # c is still open
        c.close()
        with pytest.raises(EndOfStream):
            await getter
        assert [f async for f in Inbox([])] == []  # no links: ended at once

    run(main())


def test_inbox_is_an_async_iterator() -> None:
    async def main() -> None:
        ch = Channel()
        inbox = Inbox([ch])
        await ch.send(Text("1"))
        await ch.send(Text("2"))
        ch.close()
        assert [f async for f in inbox] == [Text("1"), Text("2")]

    run(main())


def test_forward_end_ends_a_plain_stage_even_with_feedback_open() -> None:
    async def main() -> None:
        fwd, fb = Channel("src -> a"), Channel("b -> a", feedback=True)
        inbox = Inbox([fwd, fb], stop_at_forward_end=True)
        ended = asyncio.Event()
        inbox.on_forward_end.append(ended)
        await fwd.send(Text("f"))
        await fb.send(Text("fb"))
        fwd.close()
        assert await take(inbox, 1) == [Text("f")]
        assert not ended.is_set()
        with pytest.raises(EndOfStream):
            # the feedback link is still open, and a frame on it is not waited for: frames
            # going round a cycle of plain stages could otherwise keep it alive for ever
            await inbox.get()
        assert ended.is_set()

    run(main())


def test_forward_end_is_signalled_to_a_cycle_aware_stage_which_goes_on() -> None:
    async def main() -> None:
        fwd, fb = Channel("src -> a"), Channel("b -> a", feedback=True)
        inbox = Inbox([fwd, fb], stop_at_forward_end=False)
        ended = asyncio.Event()
        inbox.on_forward_end.append(ended)
        await fwd.send(Text("f"))
        fwd.close()
        assert await inbox.get() == Text("f")
        getter = asyncio.create_task(inbox.get())
        await turns()
        assert ended.is_set() and not getter.done()  # told, and still listening
        await fb.send(Text("answer"))
        assert await getter == Text("answer")
        fb.close()
        with pytest.raises(EndOfStream):
            await inbox.get()

    run(main())


def test_only_feedback_links() -> None:
    """A stage whose only inputs are feedback links has no forward input to end."""

    async def main() -> None:
        fb = Channel(feedback=True)
        inbox = Inbox([fb], stop_at_forward_end=True)
        ended = asyncio.Event()
        inbox.on_forward_end.append(ended)
        await fb.send(Text("x"))
        fb.close()
        assert await drain(inbox) == [Text("x")]

    run(main())
