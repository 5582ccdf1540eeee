"""Which call tools a pipeline's carrier can do, and withholding the others from the model.

A pipeline names its carrier in its phone stages (``twilio_source`` or ``phone_source: {carrier:
...}``) and its call tools under a ``tool_router`` (``stages.telephony.call_tools:...``). A tool
the carrier cannot do (``transfer_call`` on Exotel) is not offered to the model on its calls:
``pipeline validate`` says so in one warning line at the router's ``tools``, and ``pipeline
serve`` drops it from the router before the pipeline is checked, so the session never advertises
it (:func:`withhold_unavailable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.spec import register_pipeline_warning

from .carriers.rest import unavailable

__all__ = ["call_tool_name", "pipeline_carrier", "unoffered", "withhold_unavailable"]

_PREFIX = "stages.telephony.call_tools:"
_PHONE = {"phone_source", "phone_sink"}
_TWILIO = {"twilio_source", "twilio_sink"}

Nodes = Mapping[str, tuple[str, Mapping[str, Any]]]


def call_tool_name(spec: Any) -> str | None:
    """``end_call``, ``transfer_call`` or ``send_dtmf`` for a tool entry naming one."""
    ref = spec.get("ref") if isinstance(spec, Mapping) else spec
    if isinstance(ref, str) and ref.startswith(_PREFIX):
        return ref[len(_PREFIX) :]
    return None


def pipeline_carrier(nodes: Nodes) -> str | None:
    """The carrier the phone stages name (None: no phone stage, or more than one carrier,
    which serve refuses on its own)."""
    seen = set()
    for type_name, params in nodes.values():
        if type_name in _PHONE:
            seen.add(str(params.get("carrier") or "twilio"))
        elif type_name in _TWILIO:
            seen.add("twilio")
    return next(iter(seen)) if len(seen) == 1 else None


def unoffered(nodes: Nodes, tools: frozenset[str] | None = None) -> list[tuple[str, int, str]]:
    """(router id, index in its tools, the one line why) for each call tool the carrier
    cannot do (``tools``: what the deployment's call-control client can do, if known)."""
    carrier = pipeline_carrier(nodes)
    if carrier is None:
        return []
    out = []
    for nid, (type_name, params) in nodes.items():
        if type_name != "tool_router" or not isinstance(params.get("tools"), list):
            continue
        for i, spec in enumerate(params["tools"]):
            name = call_tool_name(spec)
            why = unavailable(carrier, name, tools) if name else ""
            if why:
                out.append((nid, i, why))
    return out


@register_pipeline_warning
def _warnings(nodes: Nodes) -> list[tuple[str, str, str]]:
    return [(nid, "tools", why) for nid, _i, why in unoffered(nodes)]


def withhold_unavailable(nodes: Mapping[str, Any], rest: Any = None) -> list[str]:
    """Drop from each router's ``tools`` the call tools the carrier cannot do, in place
    (``nodes``: a pipeline's ``Node``s by id; ``rest``: the call-control client, whose
    ``tools`` may say less, as Plivo's without a public URL); the one-line reasons, to log."""
    view = {nid: (n.type_name, n.raw_params) for nid, n in nodes.items()}
    found = unoffered(view, getattr(rest, "tools", None))
    for nid, i, _why in sorted(found, key=lambda f: -f[1]):
        tools = list(nodes[nid].raw_params["tools"])
        del tools[i]
        nodes[nid].raw_params["tools"] = tools
    return [why for _nid, _i, why in found]
