"""The `pipeline` command: in-process through pipeline.cli.main, and as a real process for
the exit codes and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from rich.console import Console

import pipeline.cli as cli
from pipeline.cli import main
from pipeline.spec import builtin_names, resolve
from tests.renderers import assert_dot_parses, assert_mermaid_parses

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]

RUN_YAML = """\
version: 1
pipelines:
  tone:
    description: half a second of tone, encoded and written
    stages:
      tone: {type: signal_source, rate: 8000, seconds: 0.5, pace: fast}
      enc:  {type: g711_encode}
      wav:  {type: wav_sink, path: out/tone.wav}
    links:
      - tone -> enc -> wav
  fails:
    stages:
      src:  {type: "tests.stagekit:source", n: 10}
      bad:  {type: "tests.stagekit:fail_after", after: 2}
      out:  {type: "tests.stagekit:collect"}
    links:
      - src -> bad -> out
  fan:
    stages:
      src:  {type: "tests.stagekit:source", n: 3}
      ev:   {type: "tests.stagekit:events", n: 2}
      mix:  {type: "tests.stagekit:passthrough"}
      out:  {type: null_sink}
    links:
      - src -> mix -> out
      - {chain: "ev -> mix", capacity: 4, overflow: drop_newest}
  long:
    stages:
      tone: {type: signal_source, rate: 8000, seconds: 600, pace: realtime}
      wav:  {type: wav_sink, path: out/long.wav}
    links:
      - tone -> wav
"""


@pytest.fixture
def run_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "200")  # rich: no wrapping of the tables
    path = tmp_path / "pipelines.yaml"
    path.write_text(RUN_YAML)
    return path


def text_lines(err: str) -> list[str]:
    """stderr without the JSON log lines."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("{")]


# ---------------------------------------------------------------- validate


def test_validate_ok(run_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(run_yaml)]) == 0
    assert capsys.readouterr().out == f"{run_yaml}: ok (4 pipelines)\n"


def test_validate_reports_every_problem_with_file_line_col(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    path = FIXTURES / "bad_everything.yaml"
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "11 problems found"
    assert [ln.split(": ", 1)[0] for ln in out[:-1]] == [
        f"{path}:{lc}"
        for lc in (
            "7:22",
            "8:7",
            "9:58",
            "10:45",
            "11:40",
            "13:7",
            "14:7",
            "15:7",
            "18:9",
            "20:9",
            "21:9",
        )
    ]
    assert out[0].endswith("unknown stage type 'resampel'; did you mean 'resample'?")


def test_validate_syntax_error_and_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = FIXTURES / "bad_syntax.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{path}:6:10: YAML syntax error: expected ',' or '}}', but got ':'; fix the YAML syntax"
    )
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().out


def test_validate_one_pipeline_with_set(run_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(run_yaml), "tone", "--set", "tone.rate=16000"]) == 2
    out = capsys.readouterr().out
    assert f"{run_yaml}:10:9: link 'tone -> enc': stage 'enc' (g711_encode) gets 16000 Hz" in out


# ---------------------------------------------------------------- run


def test_run_prints_the_summary_and_exits_0(
    run_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(run_yaml), "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "pipeline 'tone' completed: 0.50 s of media in" in out
    for row in ("│ tone  │ signal_source │  0 │  25 │", "│ enc   │ g711_encode   │ 25 │  25 │"):
        assert row in out
    assert "│ wav   │ wav_sink      │ 25 │   0 │" in out
    assert "│ tone -> enc │ fused │     25 │" in out and "│ enc -> wav  │ fused │     25 │" in out
    info = sf.info(str(run_yaml.parent / "out" / "tone.wav"))
    assert (info.samplerate, info.frames, info.subtype) == (8000, 4000, "ULAW")


def test_run_by_name_shows_queues(run_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(run_yaml), "--pipeline", "fan", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "pipeline 'fan' completed" in out
    assert "│ ev -> mix  │ queue 4 drop_newest │      2 │" in out
    assert "│ src -> mix │ queue 8 block       │      3 │" in out


def test_failing_stage_exit_1_one_line_no_traceback(
    run_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(run_yaml), "fails", "--no-live"]) == 1
    cap = capsys.readouterr()
    assert text_lines(cap.err) == ["error: stage 'bad' failed: ValueError: boom after 2"]
    assert "Traceback" not in cap.err + cap.out
    assert "pipeline 'fails' failed" in cap.out  # the summary still appears


def test_bad_config_on_run_exit_2(run_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(run_yaml), "tone", "--set", "enc.law=mulaw"]) == 2
    err = text_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"{run_yaml}:7:7: stage 'enc' (g711_encode)")
    assert "parameter 'law' (ulaw | alaw)" in err[0]


# ---------------------------------------------------------------- stages and graph


def test_stages_lists_every_stage_with_its_parameters(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def wide(*args: Any, **kwargs: Any) -> Console:
        return Console(*args, **{**kwargs, "width": 2000})  # no wrapping inside table cells

    monkeypatch.setattr(cli, "Console", wide)
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    for name in builtin_names():
        spec = resolve(name)
        assert f" {name} " in out, name
        for p in spec.params.values():
            assert f"{p.name} ({p.type_text})" in out, (name, p.name)
    assert "rate (int) required: output sample rate in Hz" in out


def test_stages_one_type_and_a_typo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stages", "g711_encode"]) == 0
    out = capsys.readouterr().out
    assert "g711_encode" in out and "law (ulaw | alaw) = 'ulaw'" in out
    assert "resample" not in out
    assert main(["stages", "g711_encod"]) == 2
    cap = capsys.readouterr()
    assert cap.err.strip() == "error: unknown stage type 'g711_encod'; did you mean 'g711_encode'?"


def test_graph_mermaid(run_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(run_yaml)]) == 0
    assert capsys.readouterr().out == (
        "flowchart LR\n"
        '    tone["tone<br/><small>signal_source</small>"]\n'
        '    enc["enc<br/><small>g711_encode</small>"]\n'
        '    wav["wav<br/><small>wav_sink</small>"]\n'
        '    tone -->|"audio [pcm16 8000 Hz]"| enc\n'
        '    enc -->|"audio [pcmu 8000 Hz]"| wav\n'
    )


def test_graph_dot_with_types_and_feedback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text(
        """\
pipelines:
  cycle:
    stages:
      src: {type: "tests.stagekit:events"}
      agent: {type: "tests.stagekit:loop_head"}
      tools: {type: "tests.stagekit:echo_events"}
      out: {type: null_sink}
    links:
      - src -> agent -> tools -> agent
      - agent -> out
"""
    )
    assert main(["graph", str(path), "--format", "dot"]) == 0
    chart = capsys.readouterr().out
    assert_dot_parses(chart)
    assert chart == (
        'digraph "cycle" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box];\n"
        '    "src" [label="src\\ntests.stagekit:events"];\n'
        '    "agent" [label="agent\\ntests.stagekit:loop_head"];\n'
        '    "tools" [label="tools\\ntests.stagekit:echo_events"];\n'
        '    "out" [label="out\\nnull_sink"];\n'
        '    "src" -> "agent" [label="text"];\n'
        '    "agent" -> "tools" [label="text"];\n'
        '    "tools" -> "agent" [label="speech_started", style=dashed];\n'
        '    "agent" -> "out" [label="speech_started, text"];\n'
        "}\n"
    )
    assert main(["graph", str(path)]) == 0
    chart = capsys.readouterr().out
    assert '    tools -.->|"speech_started"| agent\n' in chart
    assert_mermaid_parses(chart)


# ---------------------------------------------------------------- a real process


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    return env


def test_subprocess_exit_codes(run_yaml: Path) -> None:
    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            capture_output=True,
            text=True,
            cwd=run_yaml.parent,
            env=_env(),
            timeout=60,
        )

    ok = pipeline("validate", "pipelines.yaml")
    assert (ok.returncode, ok.stdout) == (0, "pipelines.yaml: ok (4 pipelines)\n")
    bad = pipeline("validate", str(FIXTURES / "bad_formats.yaml"))
    assert bad.returncode == 2
    assert bad.stdout.splitlines()[0].startswith(f"{FIXTURES / 'bad_formats.yaml'}:15:9: link")
    fails = pipeline("run", "pipelines.yaml", "fails", "--log-format", "json")
    assert fails.returncode == 1
    assert text_lines(fails.stderr) == ["error: stage 'bad' failed: ValueError: boom after 2"]
    assert all(json.loads(ln) for ln in fails.stderr.splitlines() if ln.startswith("{"))


def test_ctrl_c_drains_closes_sinks_and_exits_130(run_yaml: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "pipelines.yaml", "long", "--log-format", "json"],
        cwd=run_yaml.parent,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        started = json.loads(proc.stderr.readline())  # the run is going: handlers installed
        assert started["event"] == "pipeline starting"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "pipeline 'long' interrupted" in out  # the summary, after draining
    events = [json.loads(ln)["event"] for ln in err.splitlines() if ln.startswith("{")]
    assert "stopping: draining the pipeline (press Ctrl-C again to stop now)" in events
    assert "Traceback" not in err
    wav = sf.info(str(run_yaml.parent / "out" / "long.wav"))  # closed: a valid WAV
    assert wav.samplerate == 8000 and 0 < wav.frames < 8000 * 60


def test_validate_all_with_set_for_a_stage_of_one_pipeline(
    run_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(run_yaml), "--set", "enc.law=alaw"]) == 0  # only 'tone' has enc
    assert capsys.readouterr().out == f"{run_yaml}: ok (4 pipelines)\n"
    assert main(["validate", str(run_yaml), "--set", "ghost.x=1"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{run_yaml}: --set ghost.x: no stage 'ghost' in pipeline 'tone'; check the stage id",
        "1 problem found",
    ]


def test_bad_usage_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run"])
    assert e.value.code == 2
    assert "usage: pipeline run" in capsys.readouterr().err


CMD_MODULE = """
def register(subparsers):
    p = subparsers.add_parser("hello", help="say hello")
    p.add_argument("--times", type=int, default=1)
    p.set_defaults(handler=run)


def run(args):
    print("hello " * args.times)
    return 3
"""


@pytest.fixture
def command_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed distribution on sys.path whose entry_points.txt adds two subcommands
    under the group pipeline.commands: one that works, one whose module does not exist."""
    site = tmp_path / "site"
    (site / "ep_cmd_pkg").mkdir(parents=True)
    (site / "ep_cmd_pkg" / "__init__.py").write_text(CMD_MODULE)
    info = site / "ep_cmd_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-cmd-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[pipeline.commands]\nhello = ep_cmd_pkg:register\nbroken = ep_cmd_gone:register\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("ep_cmd_pkg", None)


def test_builtin_plugin_commands_come_from_the_entry_point_group() -> None:
    from importlib import metadata

    eps = {ep.name: ep.value for ep in metadata.entry_points(group=cli.COMMANDS_GROUP)}
    assert eps["serve"] == "stages.telephony.serve:register"
    assert eps["bench"] == "benchmarks.cli:register"
    assert "emulator" in eps
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"run", "validate", "stages", "graph", "serve", "emulator", "bench"} <= set(
        sub.choices  # type: ignore[arg-type]
    )


def test_a_plugin_command_runs_and_a_broken_one_says_why_in_one_line(
    command_dist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hello", "--times", "2"]) == 3
    assert capsys.readouterr().out == "hello hello \n"
    assert main(["broken", "--any", "args"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: command 'broken' (entry point 'ep_cmd_gone:register' of group "
        "pipeline.commands) cannot be loaded: ModuleNotFoundError: No module named "
        "'ep_cmd_gone'; reinstall or fix the package that provides it"
    ]


def test_the_runtime_imports_nothing_from_the_stage_library() -> None:
    """pipeline/ is the core; stages/ (and benchmarks/) build on it, never the other way."""
    import ast

    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            for name in names:
                if str(name).split(".")[0] in ("stages", "benchmarks"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == []
