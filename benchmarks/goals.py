"""The hot path's goals, and one verdict per goal from a run's rows.

A row that measures a goal carries the goal's key (``Row.goal``); :func:`verdicts` reads the
rows of one run and says, per goal, met or missed with the numbers (or not measured, and why),
so that a reader of ``pipeline bench`` need not compute it. A goal may rest on several rows
(every stage's overhead): it is met when every one of them is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .harness import Row


@dataclass(frozen=True)
class Goal:
    """What is promised. ``on``: the row's ``median`` or its ``ratio`` to its baseline;
    ``at_least``: the figure must be ≥ ``limit`` (else ≤)."""

    key: str
    text: str
    limit: float
    on: str = "median"
    at_least: bool = False

    def met(self, r: Row) -> bool | None:
        """Whether ``r`` meets the goal; None when it holds no figure (not measured)."""
        x = self.figure(r)
        if x is None:
            return None
        return x >= self.limit if self.at_least else x <= self.limit

    def figure(self, r: Row) -> float | None:
        x = r.median if self.on == "median" else r.ratio
        return x if x is not None and math.isfinite(x) else None

    def show(self, r: Row) -> str:
        x = self.figure(r)
        if x is None:
            return "not measured"
        return f"{x:.2f}×" if self.on == "ratio" else f"{x:.2f} µs"


#: The hot path's goals (issue 14), in the order the verdicts are printed.
GOALS: dict[str, Goal] = {
    g.key: g
    for g in (
        Goal("overhead", "every built-in stage's in-place overhead ≤ 1 µs per 20 ms frame", 1.0),
        Goal("wav", "wav_source → null_sink ≤ 1 µs per frame", 1.0),
        Goal("chain", "the chain ≤ 1.5× the plain loop over the libraries", 1.5, "ratio"),
        Goal("call", "the whole call, both directions, ≤ 1.2× the raw library path", 1.2, "ratio"),
        Goal(
            "resampler",
            "the low-latency resampler no dearer than soxr's stream call, every ratio",
            1.0,
            "ratio",
        ),
        Goal("pipecat", "≥ 8× less CPU per frame than Pipecat on the same path", 8, "ratio", True),
    )
}


def mark(r: Row, key: str) -> Row:
    """Make ``r`` a measurement of goal ``key``: the goal's key on the row, and its threshold and
    met/missed at the end of the row's note."""
    goal = GOALS[key]
    r.goal = key
    met = goal.met(r)
    sign = "≥" if goal.at_least else "≤"
    limit = f"{goal.limit:g}×" if goal.on == "ratio" else f"{goal.limit:g} µs"
    state = "not measured" if met is None else "met" if met else "MISSED"
    r.note = (f"{r.note}; " if r.note else "") + f"goal {sign} {limit}: {state}"
    return r


@dataclass(frozen=True)
class Verdict:
    """One goal's outcome in a run: ``met`` is None when no row measured it."""

    key: str
    goal: str
    met: bool | None
    detail: str

    def line(self) -> str:
        state = "not measured" if self.met is None else "met" if self.met else "MISSED"
        return f"{state:>12}  {self.goal}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdicts(rows: list[Row]) -> list[Verdict]:
    """Per goal, met or missed with the numbers, from the rows that carry its key."""
    out = []
    for key, goal in GOALS.items():
        mine = [r for r in rows if r.goal == key]
        measured = [r for r in mine if goal.met(r) is not None]
        if not measured:
            why = "; ".join(sorted({r.note for r in mine if r.note})) or "its suite did not run"
            out.append(Verdict(key, goal.text, None, why))
            continue
        missed = [r for r in measured if not goal.met(r)]
        if len(measured) == 1:
            (r,) = measured
            detail = goal.show(r)
            base = next((b for b in rows if b.name == r.baseline), None)
            if goal.on == "ratio" and base is not None:
                detail += f": {r.median:.2f} against {base.median:.2f} {r.unit}"
        else:
            figures = [goal.figure(r) or 0.0 for r in measured]
            worst = measured[figures.index(max(figures) if not goal.at_least else min(figures))]
            detail = (
                f"{len(measured) - len(missed)} of {len(measured)} rows; worst {goal.show(worst)} "
                f"({worst.name.strip()})"
            )
            if missed:
                detail += "; missed by: " + ", ".join(
                    f"{r.name.strip()} {goal.show(r)}" for r in missed
                )
        unmeasured = len(mine) - len(measured)
        if unmeasured:
            detail += f"; {unmeasured} row(s) not measured"
        out.append(Verdict(key, goal.text, not missed, detail))
    return out
