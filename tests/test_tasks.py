"""StageTasks: a stage's inner tasks with a bounded output and a clean cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline import Frame, StageContext, Text, UsageError, stage
from pipeline.tasks import StageTasks
from pipeline.testing import check_stage, run_stage

TEXTS = [Text(f"t{i}") for i in range(20)]


@stage("shout_tasks", accepts=(Text,), emits=(Text,), register=False)
async def shout(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Upper-case text, read in a task of its own and a helper task beside it."""
    async with StageTasks[Frame](ctx, capacity=2) as tasks:

        async def read() -> None:
            async for f in frames:
                assert isinstance(f, Text)
                await tasks.send(Text(f.text.upper()))

        tasks.start(read(), name="reader", ends_output=True)
        tasks.start(asyncio.Event().wait(), name="idle helper")  # runs until the stage ends
        async for frame in tasks:
            yield frame


def test_a_stage_built_on_it_passes_check_stage() -> None:
    out = check_stage(shout, TEXTS)
    assert [f.text for f in out] == [f"T{i}" for i in range(20)]  # type: ignore[union-attr]


def test_output_is_bounded_the_producer_waits() -> None:
    async def main() -> tuple[int, list[str]]:
        sent = 0
        async with StageTasks[str](capacity=3) as tasks:

            async def produce() -> None:
                nonlocal sent
                for i in range(10):
                    await tasks.send(f"x{i}")
                    sent += 1

            tasks.start(produce(), ends_output=True)
            for _ in range(20):
                await asyncio.sleep(0)
            before = sent  # nobody read yet: exactly `capacity` items went in
            got = [item async for item in tasks]
        return before, got

    before, got = asyncio.run(main())
    assert before == 3
    assert got == [f"x{i}" for i in range(10)]


def test_a_failing_task_fails_the_stage_after_what_it_sent_and_stops_the_others() -> None:
    cleaned: list[str] = []
    seen: list[str] = []

    async def main() -> None:
        async with StageTasks[str](capacity=8) as tasks:

            async def fail() -> None:
                await tasks.send("a")
                await tasks.send("b")
                raise RuntimeError("socket gone")

            async def other() -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    cleaned.append("other")

            tasks.start(other(), name="other")
            tasks.start(fail(), name="failing", ends_output=True)
            async for item in tasks:
                seen.append(item)

    with pytest.raises(RuntimeError, match="socket gone"):
        asyncio.run(main())
    assert seen == ["a", "b"]
    assert cleaned == ["other"]


def test_a_failure_reaches_a_stage_that_only_calls_check() -> None:
    async def main() -> None:
        async with StageTasks[str]() as tasks:
            failed = asyncio.Event()

            async def flusher() -> None:
                failed.set()
                raise ConnectionError("send failed")

            tasks.start(flusher(), name="flusher")
            await failed.wait()
            await asyncio.sleep(0)
            tasks.check()

    with pytest.raises(ConnectionError, match="send failed"):
        asyncio.run(main())


def test_a_failure_nobody_asked_about_comes_out_at_the_end_of_the_block() -> None:
    async def main() -> None:
        async with StageTasks[str]() as tasks:

            async def boom() -> None:
                raise KeyError("late")

            tasks.start(boom())
            await asyncio.sleep(0)

    with pytest.raises(KeyError, match="late"):
        asyncio.run(main())


def test_a_cancelled_task_is_not_a_failure() -> None:
    async def main() -> list[str]:
        async with StageTasks[str]() as tasks:
            t = tasks.start(asyncio.Event().wait(), name="dropped call")

            async def work() -> None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
                await tasks.send("done")

            tasks.start(work(), ends_output=True)
            return [item async for item in tasks]

    assert asyncio.run(main()) == ["done"]


def test_cancelling_the_stage_cancels_and_awaits_every_task() -> None:
    finished: list[str] = []

    async def main() -> None:
        entered = asyncio.Event()

        async def consumer() -> None:
            async with StageTasks[str]() as tasks:

                async def slow_close(name: str) -> None:
                    try:
                        await asyncio.Event().wait()
                    finally:
                        await asyncio.sleep(0)  # clean-up that itself awaits
                        finished.append(name)

                tasks.start(slow_close("a"), name="a")
                tasks.start(slow_close("b"), name="b")
                entered.set()
                async for _ in tasks:
                    pass

        before = set(asyncio.all_tasks())
        task = asyncio.create_task(consumer())
        await entered.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [t for t in asyncio.all_tasks() if t not in before] == []

    asyncio.run(main())
    assert sorted(finished) == ["a", "b"]


def test_tasks_are_named_after_the_stage() -> None:
    seen: list[str] = []

    @stage("named_tasks", accepts=(Text,), emits=(Text,), register=False)
    async def named(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
        async with StageTasks[Frame](ctx) as tasks:
            t = tasks.start(asyncio.sleep(0), name="tick")
            seen.append(t.get_name())
            async for f in frames:
                yield f

    assert run_stage(named, [Text("x")]) == [Text("x")]
    assert seen == ["named_tasks: tick"]


def test_misuse_says_so() -> None:
    with pytest.raises(UsageError, match="capacity must be at least 1, got 0"):
        StageTasks[str](capacity=0)
