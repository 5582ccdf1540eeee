"""Ctrl-C and SIGTERM for a command that runs an event loop, written once.

``pipeline run``, ``pipeline serve``, the serve worker pool and ``pipeline playground`` all stop
the same way: the first SIGINT or SIGTERM asks to stop gracefully (drain: the sources end, the
calls finish), any further one stops now. :func:`stop_signals` installs that on the running
loop for the length of a ``with`` block and removes it after, and records which signals came, so
the command can exit 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Stops", "stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Stops:
    """The stop signals received so far, in order."""

    received: list[signal.Signals] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Whether the first one was Ctrl-C (SIGINT): the command then exits 130."""
        return bool(self.received) and self.received[0] == signal.SIGINT


@contextlib.contextmanager
def stop_signals(
    drain: Callable[[], None], now: Callable[[], None] | None = None
) -> Iterator[Stops]:
    """Within the block, the first SIGINT/SIGTERM calls ``drain()``, every later one ``now()``
    (``drain()`` again when ``now`` is None). Call from inside the running loop."""
    loop = asyncio.get_running_loop()
    stops = Stops()

    def on_signal(sig: signal.Signals) -> None:
        stops.received.append(sig)
        if len(stops.received) == 1 or now is None:
            drain()
        else:
            now()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield stops
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
