"""Talk to a pipeline from a browser tab: ``browser_source``, ``browser_sink`` and the
``pipeline playground`` server that runs one pipeline per tab (see ``docs/playground.md``)."""

from __future__ import annotations

from .connection import BrowserConnection, bind_connection, current_connection
from .stages import browser_sink, browser_source

__all__ = [
    "BrowserConnection",
    "bind_connection",
    "browser_sink",
    "browser_source",
    "current_connection",
]
