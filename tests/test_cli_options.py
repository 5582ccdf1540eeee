"""Options where a user types them, and the messages for the usual slips."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from rich.console import Console

from benchmarks import cli as bench_cli
from pipeline.cli import build_parser, main

YAML = """\
version: 1
pipelines:
  tone:
    stages:
      caller: {type: signal_source, rate: 8000, seconds: 0.1}
      out: {type: null_sink}
    links:
      - caller -> out
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points structlog at this test's captured stderr: put the old set-up back."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def test_every_command_takes_the_logging_options_after_its_name() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"run", "validate", "serve", "emulator", "bench"} <= set(sub.choices)
    for name, command in sub.choices.items():
        options = {o for a in command._actions for o in a.option_strings}
        assert {"--log-format", "--log-level", "--debug"} <= options, name
    for argv in (["serve", "f.yaml"], ["emulator"], ["run", "f.yaml"], ["bench"]):
        args = parser.parse_args([*argv, "--log-format", "json", "--log-level", "WARNING"])
        assert (args.log_format, args.log_level) == ("json", "warning"), argv
        # before the command still works, and is not reset by the command's own defaults
        args = parser.parse_args(["--log-format", "json", *argv])
        assert args.log_format == "json", argv


def test_set_with_a_misspelt_stage_id_says_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(YAML, encoding="utf-8")
    assert main(["validate", str(path), "--set", "caler.pace=fast"]) == 2
    out = capsys.readouterr().out
    assert (
        "--set caler.pace: no stage 'caler' in pipeline 'tone'; did you mean 'caller.pace'?"
    ) in out


def test_bench_png_without_matplotlib_prints_the_pip_command_with_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(bench_cli, "run_all", lambda *a, **k: [])
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    args = argparse.Namespace(
        quick=True,
        only=[],
        json_path=None,
        md_path=None,
        png_path=str(Path("never-written.png")),
        log_level="warning",
    )
    assert bench_cli.cmd_bench(args, console) == 0
    assert "no chart: matplotlib is not installed; pip install 'pipeline[bench]'" in buf.getvalue()


LINKS_AS_A_PIPELINE = """\
version: 1
pipelines:
  tone:
    stages:
      src: {type: signal_source, seconds: 1}
      up: {type: resample, rate: 16000}
      out: {type: wav_sink, path: out.wav}
  links:
    - src -> up -> out
"""

LINKS_AS_A_STAGE = """\
version: 1
pipelines:
  tone:
    stages:
      src: {type: signal_source, seconds: 1}
      up: {type: resample, rate: 16000}
      out: {type: wav_sink, path: out.wav}
      links:
        - src -> up -> out
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            LINKS_AS_A_PIPELINE,
            "p.yaml:8:3: 'links:' is indented as a pipeline name, so it is not part of pipeline "
            "'tone' above it (which then has no links); indent 'links:' to column 5, lined up "
            "with 'stages:'",
        ),
        (
            LINKS_AS_A_STAGE,
            "p.yaml:8:7: 'links:' is indented inside 'stages:' of pipeline 'tone', so it is read "
            "as a stage (and the pipeline has no links); indent 'links:' to column 5, lined up "
            "with 'stages:'",
        ),
    ],
    ids=["as-a-pipeline", "as-a-stage"],
)
def test_misindented_links_is_one_problem_not_its_consequences(
    text: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(text, encoding="utf-8")
    assert main(["validate", "p.yaml"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [expected, "1 problem found"]
    assert main(["run", "p.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    # a second, independent problem is still reported, after the structural one
    Path("p.yaml").write_text(text.replace("rate: 16000", "rate: 16000, qualty: HQ"), "utf-8")
    assert main(["validate", "p.yaml"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == expected
    assert "has no parameter 'qualty'; did you mean 'quality'?" in out[1]
    assert out[2] == "2 problems found"
