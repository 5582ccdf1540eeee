"""The compiled kernels: found when built, None when not (or when told not to use them).

A hot-path kernel (building an Audio frame, the polyphase filter, G.711, the VAD's
pre-emphasis, the realtime wire's base64 messages) has a C version, built with the package
(``setup.py``), and a pure-Python one that computes the same bytes. The modules that use a kernel
ask :func:`load` once at import; ``None`` means "use the pure one". Set
``PIPELINE_PURE_PYTHON=1`` to run on the pure versions only (to compare, or to rule the C out).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: The kernels the package builds (module names); see setup.py.
KERNELS = (
    "pipeline._cframes",
    "stages._cresample",
    "stages._cg711",
    "stages.vad._cvad",
    "stages.realtime.wire._cwire",
)
#: True when told to run the pure-Python versions only
PURE = os.environ.get("PIPELINE_PURE_PYTHON", "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None if it was not built or PIPELINE_PURE_PYTHON is set."""
    if PURE:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def status() -> dict[str, bool]:
    """Each kernel: whether its compiled version is in use."""
    return {name: load(name) is not None for name in KERNELS}
