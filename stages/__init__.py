"""The built-in stage library. Importing this package registers every built-in stage."""

from __future__ import annotations

import importlib
import importlib.util

# Each module registers its stages with @stage when imported.
_MODULES = (
    "sources",
    "sinks",
    "g711",
    "resample",
    "vad",
    "realtime",
    "tools",
    "twilio",
    "browser",
)

for _name in _MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
