"""Every pipeline the project ships, drawn by `pipeline graph` in both formats and read back by
the renderers' own parsers: Mermaid's (under node) and Graphviz's `dot`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import pipeline_names
from tests.renderers import assert_dot_parses, assert_mermaid_parses

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "pipelines.yaml", ROOT / "tests" / "fixtures" / "good.yaml"]


def _charts(
    fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    charts = []
    monkeypatch.setenv("KIT_KEY", "k")  # good.yaml reads it
    for path in FILES:
        for name in pipeline_names(path.read_text()):
            assert main(["graph", str(path), name, "--format", fmt]) == 0, name
            charts.append(capsys.readouterr().out)
    assert len(charts) >= 4
    return charts


def test_every_shipped_pipeline_is_valid_mermaid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    charts = _charts("mermaid", capsys, monkeypatch)
    assert all(c.startswith("flowchart LR\n") for c in charts)
    assert_mermaid_parses(*charts)


def test_every_shipped_pipeline_is_valid_dot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_dot_parses(*_charts("dot", capsys, monkeypatch))


def test_labels_with_quotes_brackets_and_pipes_stay_text() -> None:
    from pipeline.report import _dq, _mm

    assert _mm('a "b" <c> & d') == "a #quot;b#quot; #lt;c#gt; #amp; d"
    assert _dq('say "hi"\\now\nnext') == '"say \\"hi\\"\\\\now\\nnext"'
    label = _mm('audio [pcmu 8000 Hz] | "q" <b>')
    chart = 'flowchart LR\n    a["x"]\n    a -->|"' + label + '"| b\n'
    assert_mermaid_parses(chart)
