"""A stage's inner tasks: one task group, a bounded output, a clean cancel.

A stage that must do several things at once (read its input while a server talks, run tool
calls while more arrive, flush audio on a timer while frames come in) starts tasks of its own.
By hand that takes a queue, sentinel objects for "ended" and "failed", bare ``create_task``
calls and a cancel-and-gather in ``finally``; :class:`StageTasks` is all of it, once::

    @stage("shout", accepts=(Text,), emits=(Text,))
    async def shout(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
        async with StageTasks[Frame](ctx, capacity=4) as tasks:

            async def read() -> None:
                async for f in frames:
                    await tasks.send(Text(f.text.upper()))  # type: ignore[union-attr]

            tasks.start(read(), name="reader", ends_output=True)
            async for frame in tasks:  # what the tasks send, in order
                yield frame

Theory of operation
-------------------
* ``start(coro)`` runs ``coro`` as a task of the group, named after the stage.
* ``send(item)`` queues an item for the stage to yield, and waits while ``capacity`` items are
  queued: a slow consumer slows the producers down, nothing piles up.
* ``async for item in tasks`` yields the items in the order they were sent. Waiting for them
  is marked as waiting (``ctx.waiting()``), not as the stage's work. It ends once the output
  has ended (every task started with ``ends_output=True`` has returned, or :meth:`end` was
  called) and the queue is empty.
* A task that raises fails the stage: once the items it sent before have been yielded, the
  exception comes out of the ``async for`` (or :meth:`check`, or the end of the ``async with``
  block) in the stage's own task, so the runner names the stage. A task that is cancelled
  (a tool call dropped by a barge-in) fails nothing.
* Leaving the block in any way (the output ended, an error, the stage cancelled or closed
  early) cancels every task still running and waits until each has finished: no task
  outlives its stage, and a cancel arriving during that wait is passed on after it.

The scaffolding is checked once, here and in ``tests/test_tasks.py`` through
:func:`pipeline.testing.check_stage` (which fails a stage that leaves a task running after it is
cancelled or closed); a stage built on it inherits the guarantees.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from .context import StageContext

T = TypeVar("T")

__all__ = ["StageTasks", "wait_first"]


class StageTasks(Generic[T]):
    """The inner tasks of one stage and the bounded output they feed. Use as ``async with``."""

    def __init__(self, ctx: StageContext | None = None, *, capacity: int = 1) -> None:
        if capacity < 1:
            from .errors import UsageError

            raise UsageError(f"StageTasks capacity must be at least 1, got {capacity}")
        self._ctx = ctx
        self._prefix = ctx.id if ctx is not None else "stage"
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._enders: set[asyncio.Task[Any]] = set()
        self._ended = False
        self._closed = False
        self._failure: BaseException | None = None
        self._reported = False
        self._readable = asyncio.Event()  # an item, the end, or a failure
        self._writable = asyncio.Event()
        self._writable.set()

    async def __aenter__(self) -> StageTasks[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        for task in await self._cancel_all():
            if not task.cancelled() and (exc := task.exception()) is not None:
                self._fail(exc)  # failed before its done-callback ran
        if exc_type is None and self._failure is not None and not self._reported:
            self._reported = True
            raise self._failure

    # ------------------------------------------------------------------ tasks

    def start(
        self, coro: Coroutine[Any, Any, Any], *, name: str = "", ends_output: bool = False
    ) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this stage. With ``ends_output`` the output ends once it
        (and every other task started so) has returned."""
        if self._closed:
            coro.close()
            from .errors import UsageError

            raise UsageError(f"stage '{self._prefix}': a task was started after its group closed")
        task = asyncio.get_running_loop().create_task(
            coro, name=f"{self._prefix}: {name}" if name else self._prefix
        )
        self._tasks.add(task)
        if ends_output:
            self._enders.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._fail(exc)
                return
        if task in self._enders:
            self._enders.discard(task)
            if not self._enders:
                self.end()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._readable.set()
            self._writable.set()

    @property
    def running(self) -> int:
        """How many tasks of the group are still running."""
        return len(self._tasks)

    def check(self) -> None:
        """Raise the failure of a task, if one has failed (for a stage that reads its own input
        and yields itself, and only starts helpers: call it once per frame)."""
        if self._failure is not None and not self._reported:
            self._reported = True
            raise self._failure

    async def _cancel_all(self) -> set[asyncio.Task[Any]]:
        """Cancel every task still running and wait for each; returns them."""
        every = pending = set(self._tasks)
        for task in pending:
            task.cancel()
        interrupted = False
        while pending:
            try:
                _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError:
                interrupted = True  # finish the clean-up first, then let the cancel through
                for task in pending:
                    task.cancel()
        if interrupted:
            raise asyncio.CancelledError
        return every

    # ------------------------------------------------------------------ output

    async def send(self, item: T) -> None:
        """Queue ``item`` for the stage to yield; waits while the output is full."""
        while len(self._items) >= self._capacity:
            self._writable.clear()
            await self._writable.wait()
        self._items.append(item)
        self._readable.set()

    def end(self) -> None:
        """End the output: the stage's ``async for`` ends once the queued items are out."""
        self._ended = True
        self._readable.set()

    def __aiter__(self) -> StageTasks[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._items:
                item = self._items.popleft()
                self._writable.set()
                return item
            if self._failure is not None and not self._reported:
                self._reported = True
                raise self._failure
            if self._ended:
                raise StopAsyncIteration
            self._readable.clear()
            if self._ctx is not None:
                with self._ctx.waiting():
                    await self._readable.wait()
            else:
                await self._readable.wait()


async def wait_first(*events: asyncio.Event, timeout: float | None) -> None:
    """Wait until any of ``events`` is set, or ``timeout`` seconds pass (the caller reads which
    events are set). The waiters are cancelled on the way out, whatever happens."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
