"""Which event loop a long-running server runs on.

``uvloop`` (libuv under asyncio's API) takes fewer CPU cycles per socket read and write than
asyncio's own selector loop; a telephony server, which handles several small WebSocket
messages per call every 20 ms, spends much of its time there. It is an optional extra
(``pip install 'pipeline[fast]'``): ``auto`` uses it when it is installed and asyncio's loop
otherwise, ``asyncio`` never uses it, ``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from .errors import UsageError

__all__ = ["LOOPS", "LoopName", "loop_factory", "loop_in_use", "run"]

T = TypeVar("T")
LoopName = Literal["auto", "asyncio", "uvloop"]
LOOPS: tuple[LoopName, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(name: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop ``name`` stands for: (``"uvloop"`` or ``"asyncio"``, its factory; None for
    asyncio's default). Raises UsageError for ``uvloop`` when it is not installed."""
    if name not in LOOPS:
        raise UsageError(f"unknown event loop {name!r}; choose one of {', '.join(LOOPS)}")
    if name == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise UsageError(
                "event loop 'uvloop' asked for but uvloop is not installed: "
                "pip install 'pipeline[fast]' (or choose --loop asyncio)"
            ) from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``loop`` names (see :func:`loop_factory`)."""
    _, factory = loop_factory(loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_in_use() -> str:
    """``uvloop`` or ``asyncio``: the running loop's kind, for logs and metrics."""
    mod = type(asyncio.get_running_loop()).__module__
    return "uvloop" if mod.startswith("uvloop") else "asyncio"
