"""The built-in stage library. Importing this package registers every built-in stage.

The runtime finds it through the ``pipeline.stages`` entry point ``builtin = "stages"`` in
``pyproject.toml`` (an entry point naming a module is a stage library: importing it registers
its stages); ``pipeline/`` itself never imports ``stages``.
"""

from __future__ import annotations

import importlib

# Each module registers its stages with @stage when imported.
_MODULES = (
    "sources",
    "sinks",
    "g711",
    "resample",
    "vad",
    "turn",
    "denoise",
    "realtime",
    "tools",
    "telephony",
    "browser",
    "desk",
)

for _name in _MODULES:
    importlib.import_module(f"{__name__}.{_name}")
