"""Tools for the barge-in end-to-end test: a lookup that is still running when the caller
speaks over the assistant. Loaded by the tool router as ``barge_tools:...`` (this folder is the
pipeline's base dir). ``reset()`` before each run: the events belong to one event loop."""

from __future__ import annotations

import asyncio

STATE: dict[str, asyncio.Event] = {}


def reset() -> None:
    STATE["started"] = asyncio.Event()
    STATE["release"] = asyncio.Event()


async def slow_time(city: str) -> str:
    """The local time in a city, from a slow service.

    Args:
        city: the city
    """
    STATE["started"].set()
    await STATE["release"].wait()  # only a barge-in (the test's watcher) lets it answer
    return f"It is 12:00 in {city}."
