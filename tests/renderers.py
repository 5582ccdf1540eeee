"""Independent checks of the charts `pipeline graph` draws: Mermaid's own parser (the `mermaid`
npm package under node, installed into tests/js by the test set-up) and Graphviz's `dot`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"


def mermaid_errors(charts: list[str]) -> list[str | None]:
    """Mermaid's verdict on each chart: None where it parses, else the parser's message.
    Skips the test where node or the npm packages are missing (npm unreachable)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: Mermaid's parser cannot run (apt-get install nodejs)")
    if not (JS / "node_modules" / "mermaid").is_dir():
        pytest.skip(f"the mermaid npm package is not installed: run `npm ci --prefix {JS}`")
    run = subprocess.run(
        [node, str(JS / "mermaid_parse.mjs")],
        input=json.dumps(charts),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[str | None] = json.loads(run.stdout)
    return result


def assert_mermaid_parses(*charts: str) -> None:
    errors = mermaid_errors(list(charts))
    bad = [f"{chart}\n-> {err}" for chart, err in zip(charts, errors, strict=True) if err]
    assert not bad, "\n\n".join(bad)


def assert_dot_parses(*charts: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip(
            "graphviz is not installed: `dot` cannot check the chart (apt-get install graphviz)"
        )
    for chart in charts:
        run = subprocess.run(
            [dot, "-Tsvg"], input=chart, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0 and "<svg" in run.stdout, f"{chart}\n-> {run.stderr}"
