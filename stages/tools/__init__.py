"""Tools the model may call: :mod:`.schema` loads them and describes them as JSON schema,
:mod:`.router` is the ``tool_router`` stage that runs the calls."""

from __future__ import annotations

from .router import (
    CallLedger,
    CallOutcome,
    cancelled_text,
    current_tool_call,
    not_run_text,
    run_tool,
    tool_router,
)
from .schema import (
    Tool,
    ToolArgumentError,
    ToolConfigError,
    ToolSpec,
    check_tools,
    load_tool,
    load_tools,
    tool_schemas,
)

__all__ = [
    "CallLedger",
    "CallOutcome",
    "Tool",
    "ToolArgumentError",
    "ToolConfigError",
    "ToolSpec",
    "cancelled_text",
    "check_tools",
    "current_tool_call",
    "load_tool",
    "load_tools",
    "not_run_text",
    "run_tool",
    "tool_router",
    "tool_schemas",
]
