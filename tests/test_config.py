"""Loading pipelines.yaml: every check of contract section 4, each located and with its fix;
${VAR}; --set; relative paths; user stages by module path and by entry point."""

from __future__ import annotations

import asyncio
import importlib
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import ConfigError, VirtualClock
from pipeline.config import load, load_text
from pipeline.errors import Problem
from pipeline.graph import Pipeline
from tests import stagekit as kit

stage_mod = importlib.import_module("pipeline.spec")

FIXTURES = Path(__file__).parent / "fixtures"


def problems_of(path: Path, name: str | None = None, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(path, name, **kw)
    return [str(p) for p in e.value.problems]


def write(tmp_path: Path, text: str, name: str = "pipelines.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ulaw_wav(path: Path, samples: int = 800) -> Path:
    """A mono 8 kHz μ-law WAV (format tag 7), written by hand."""
    data = bytes([0xFF]) * samples
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# ---------------------------------------------------------------- section 4, one by one


def test_yaml_syntax_error() -> None:
    path = FIXTURES / "bad_syntax.yaml"
    assert problems_of(path) == [
        f"{path}:6:10: YAML syntax error: expected ',' or '}}', but got ':'; fix the YAML syntax"
    ]


def test_every_problem_of_a_file_is_reported_together() -> None:
    path = FIXTURES / "bad_everything.yaml"
    got = problems_of(path)
    f = str(path)
    assert got == [
        f"{f}:7:22: stage 'rs': unknown stage type 'resampel'; did you mean 'resample'?",
        f"{f}:8:7: stage 'up' (resample): missing required parameter 'rate' (int) "
        "(output sample rate in Hz); add it",
        f"{f}:9:58: stage 'vad' (vad_gate): stage type 'vad_gate' has no parameter "
        "'treshold'; did you mean 'threshold'?",
        f"{f}:10:45: stage 'vad2' (vad_gate): parameter 'hangover_ms' (int): Input should be "
        "a valid integer, unable to parse string as an integer, got 'soon'",
        f"{f}:11:40: stage 'wav' (wav_source): input file 'missing.wav' does not exist "
        f"(looked for {FIXTURES / 'missing.wav'}); check the path (relative paths start at "
        "the YAML file's folder)",
        f"{f}:13:7: duplicate stage id key 'tone' (first at line 5); give each a unique name",
        f"{f}:14:7: stage 'lonely' (null_sink) is not connected; link it, e.g. "
        "'... -> lonely', or remove it",
        f"{f}:15:7: stage 'spare' (resample) is not connected; link it, e.g. "
        "'spare -> ...', or remove it",
        f"{f}:18:9: link 'tone -> enc': stage 'enc' (g711_encode) gets 16000 Hz audio; "
        "G.711 needs 8000 Hz; add {type: resample, rate: 8000} before it",
        f"{f}:20:9: link 'enc -> nowhere' names unknown stage 'nowhere'; define it under stages",
        f"{f}:21:9: link 'wav -> log' can carry nothing: 'wav' (wav_source) emits audio; "
        "'log' (jsonl_sink) accepts error, interrupt, response_done, response_started, "
        "speech_started, speech_stopped, text, tool_call, tool_cancel, tool_result, transcript; "
        "remove the link or put a converting stage between them",
    ]


def test_link_problems() -> None:
    path = FIXTURES / "bad_links.yaml"
    f = str(path)
    assert problems_of(path) == [
        f"{f}:9:7: stage 'spare' (g711_decode) is not connected; link it, e.g. "
        "'spare -> ...', or remove it",
        f"{f}:11:9: link 'tone -> log' can carry nothing: 'tone' (signal_source) emits audio; "
        "'log' (jsonl_sink) accepts error, interrupt, response_done, response_started, "
        "speech_started, speech_stopped, text, tool_call, tool_cancel, tool_result, transcript; "
        "remove the link or put a converting stage between them",
        f"{f}:14:9: link 'words -> ot' names unknown stage 'ot'; did you mean 'out'?",
        f"{f}:15:9: link 'out -> tone': 'out' (null_sink) is a sink and emits nothing; link "
        "from a stage that emits frames",
        f"{f}:15:9: link 'out -> tone': 'tone' (signal_source) is a source and takes no input; "
        "link into a stage that accepts frames",
    ]


def test_format_mismatches_name_the_link_and_the_stage_to_insert() -> None:
    path = FIXTURES / "bad_formats.yaml"
    got = problems_of(path)
    f = str(path)
    assert got[0] == (
        f"{f}:15:9: link 'tone -> vad': stage 'vad' (vad_gate) gets 48000 Hz audio; VAD "
        "engine 'silero' takes 8000 or 16000 Hz; add {type: resample, rate: 16000} before it"
    )
    assert got[1] == (
        f"{f}:16:9: link 'law -> up': stage 'up' (resample) gets pcmu 8000 Hz audio; "
        "resample needs pcm16; add {type: g711_decode} before it"
    )
    assert got[2].startswith(f"{f}:17:9: link 'phone -> agent': stage 'agent' (realtime_session)")
    assert "pcm16 8000 Hz" in got[2] and "pcm16 16000 Hz" in got[2]
    assert got[2].endswith("add {type: resample, rate: 16000} before it, or set input_rate: 8000")
    assert len(got) == 3


def test_ulaw_wav_into_resample_is_found_from_the_wav_header(tmp_path: Path) -> None:
    ulaw_wav(tmp_path / "caller.wav")
    path = write(
        tmp_path,
        """\
version: 1
pipelines:
  p:
    stages:
      caller: {type: wav_source, path: caller.wav}
      up: {type: resample, rate: 16000}
      out: {type: null_sink}
    links:
      - caller -> up -> out
""",
    )
    assert problems_of(path) == [
        f"{path}:9:9: link 'caller -> up': stage 'up' (resample) gets pcmu 8000 Hz audio; "
        "resample needs pcm16; add {type: g711_decode} before it"
    ]
    fixed = path.read_text().replace("caller -> up", "caller -> dec -> up")
    fixed = fixed.replace("      out:", "      dec: {type: g711_decode}\n      out:")
    path.write_text(fixed)
    p = load(path)
    assert p.check().stages["up"].input_format is not None
    assert str(p.check().stages["up"].input_format) == "pcm16 8000 Hz"
    assert str(p.check().stages["up"].output_format) == "pcm16 16000 Hz"


def test_parameter_problems_point_at_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
version: 1
pipelines:
  p:
    stages:
      tone:
        type: signal_source
        kind: square
        seconds: [1]
        rate: 8000
      enc: {type: g711_encode, law: mulaw}
      out: {type: null_sink}
    links:
      - tone -> enc -> out
""",
    )
    got = problems_of(path)
    assert got[0].startswith(f"{path}:7:15: stage 'tone' (signal_source): parameter 'kind' ")
    assert "'sine', 'silence' or 'noise'" in got[0] and got[0].endswith("got 'square'")
    assert got[1].startswith(f"{path}:8:18: stage 'tone' (signal_source): parameter 'seconds' ")
    assert got[2].startswith(f"{path}:10:37: stage 'enc' (g711_encode): parameter 'law'")
    assert len(got) == 3


def test_duplicate_pipeline_keys_and_unknown_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
version: 2
pipelines:
  p:
    stages:
      tone: {type: signal_source, rate: 8000}
      out: {type: null_sink}
    links:
      - tone -> out
      - tone -> out
    lnks: []
extra: 1
""",
    )
    assert problems_of(path) == [
        f"{path}:1:10: unsupported version 2; write 'version: 1'",
        f"{path}:9:9: link 'tone -> out' is declared twice; remove one",
        f"{path}:10:5: pipeline 'p': unknown key 'lnks'; a pipeline has description, stages "
        "and links",
        f"{path}:11:1: unknown top-level key 'extra'; only 'version' and 'pipelines' are read",
    ]


def test_bad_link_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
version: 1
pipelines:
  p:
    stages:
      tone: {type: signal_source, rate: 8000}
      out: {type: null_sink}
    links:
      - {chain: "tone -> out", capacity: 0, overflow: drop_all, prio: 1}
""",
    )
    assert problems_of(path) == [
        f"{path}:8:9: unknown link option 'prio'; use chain, capacity, overflow",
        f"{path}:8:9: link 'tone -> out': capacity must be a whole number ≥ 1, got 0; "
        "e.g. capacity: 8",
        f"{path}:8:9: link 'tone -> out': unknown overflow 'drop_all'; use one of block, "
        "drop_oldest, drop_newest",
    ]


def test_unknown_pipeline_name() -> None:
    with pytest.raises(ConfigError) as e:
        load(FIXTURES / "good.yaml", "secnd", env={"KIT_KEY": "k"})
    assert str(e.value) == (
        f"{FIXTURES / 'good.yaml'}: no pipeline named 'secnd'; did you mean 'second'?"
    )


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file; check the path"):
        load(FIXTURES / "nope.yaml")


# ---------------------------------------------------------------- variables and overrides


def test_env_substitution_defaults_and_unset() -> None:
    path = FIXTURES / "good.yaml"
    p = load(path, env={"KIT_KEY": "mine"})
    assert p.check().stages["src"].values["n"] == 4  # ${KIT_FRAMES:-4}, read as the int it must be
    assert p.check().stages["out"].values["key"] == "mine"
    p = load(path, env={"KIT_KEY": "mine", "KIT_FRAMES": "9"})
    assert p.check().stages["src"].values["n"] == 9
    assert problems_of(path, env={}) == [
        f"{path}:9:51: environment variable KIT_KEY is not set; export KIT_KEY=... or write "
        "${KIT_KEY:-default}"
    ]


def test_env_inside_a_longer_string() -> None:
    text = """\
pipelines:
  p:
    stages:
      src: {type: "tests.stagekit:source"}
      out: {type: "tests.stagekit:collect", key: "run-${RUN:-0}-${USER_X}"}
    links: [src -> out]
"""
    p = load_text(text, env={"USER_X": "ada"})
    assert p.check().stages["out"].values["key"] == "run-0-ada"


def test_set_overrides_typed_as_yaml() -> None:
    p = load(
        FIXTURES / "good.yaml",
        "second",
        overrides=["tone.rate=8000", "tone.seconds=0.5", "enc.law=ulaw", "tone.kind=noise"],
    )
    tone = p.check().stages["tone"].values
    assert (tone["rate"], tone["seconds"], tone["kind"]) == (8000, 0.5, "noise")
    assert p.check().stages["enc"].values["law"] == "ulaw"
    assert str(p.check().stages["enc"].output_format) == "pcmu 8000 Hz"


def test_set_problems() -> None:
    path = FIXTURES / "good.yaml"
    got = problems_of(path, "second", overrides=["tone.rate=16000", "ghost.x=1", "oops"])
    assert "<command line>: --set 'oops': expected ID.PARAM=VALUE; e.g. --set agent.voice=rex" in (
        got
    )
    assert f"{path}: --set ghost.x: no stage 'ghost' in pipeline 'second'; check the stage id" in (
        got
    )
    assert any("stage 'enc' (g711_encode) gets 16000 Hz audio" in g for g in got)


def test_relative_paths_start_at_the_yaml_folder(tmp_path: Path, monkeypatch: Any) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    ulaw_wav(folder / "caller.wav")
    path = write(
        folder,
        """\
pipelines:
  p:
    stages:
      caller: {type: wav_source, path: caller.wav, pace: fast}
      dec: {type: g711_decode}
      wav: {type: wav_sink, path: out/reply.wav}
      words: {type: "tests.stagekit:events"}
      log: {type: jsonl_sink, path: "-"}
    links:
      - caller -> dec -> wav
      - words -> log
""",
    )
    monkeypatch.chdir(tmp_path)  # somewhere else
    p = load(path)
    assert p.check().stages["caller"].values["path"] == folder / "caller.wav"
    assert p.check().stages["wav"].values["path"] == folder / "out" / "reply.wav"
    assert p.check().stages["log"].values["path"] == Path("-")  # standard output stays as it is


# ---------------------------------------------------------------- user stages


def test_user_stage_by_module_path_runs() -> None:
    kit.SEEN.clear()
    p = load(FIXTURES / "good.yaml", env={"KIT_KEY": "yaml", "KIT_FRAMES": "3"})
    assert p.nodes["src"].spec is not None and p.nodes["src"].spec.func is kit.source
    summary = asyncio.run(p.run_async(clock=VirtualClock()))
    assert [f.data[0] for f in kit.SEEN["yaml"]] == [0, 1, 2]  # type: ignore[union-attr]
    assert summary.stage("pass").frames_in == 3


def test_user_stage_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
pipelines:
  p:
    stages:
      a: {type: "tests.stagekit:nothing_here"}
      b: {type: "tests.no_such_module:f"}
      c: {type: "tests.stagekit:OPEN"}
    links: [a -> b -> c]
""",
    )
    got = problems_of(path)
    assert got[0] == (
        f"{path}:4:17: stage 'a': module 'tests.stagekit' has no 'nothing_here'; check the "
        "name after the ':'"
    )
    assert got[1].startswith(
        f"{path}:5:17: stage 'b': cannot import module 'tests.no_such_module' for stage type "
        "'tests.no_such_module:f': No module named 'tests.no_such_module'"
    )
    assert got[2] == f"{path}:6:17: stage 'c': 'tests.stagekit:OPEN' is not a function"


EP_MODULE = '''\
from collections.abc import AsyncIterator
from pipeline import Frame, Text, stage


@stage("ep_hello", emits=(Text,), register=False)
async def hello(*, n: int = 2) -> AsyncIterator[Frame]:
    """Say hello n times.

    Parameters:
        n: how many times
    """
    for i in range(n):
        yield Text(f"hello {i}")
'''


@pytest.fixture
def entry_point_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed distribution on sys.path: a module plus a .dist-info whose
    entry_points.txt registers the stage under the group pipeline.stages."""
    site = tmp_path / "site"
    (site / "ep_pkg_stages").mkdir(parents=True)
    (site / "ep_pkg_stages" / "__init__.py").write_text(EP_MODULE)
    info = site / "ep_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[pipeline.stages]\ngreeter = ep_pkg_stages:hello\nbroken = ep_pkg_gone:stage\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(stage_mod, "_entry_points_loaded", False)
    monkeypatch.setattr(stage_mod, "_BROKEN_ENTRY_POINTS", {})
    yield site
    stage_mod.REGISTRY.pop("greeter", None)
    sys.modules.pop("ep_pkg_stages", None)


def test_user_stage_by_entry_point(entry_point_dist: Path, tmp_path: Path) -> None:
    kit.SEEN.clear()
    path = write(
        tmp_path,
        """\
pipelines:
  p:
    stages:
      hi: {type: greeter, n: 3}
      out: {type: "tests.stagekit:collect", key: ep}
    links: [hi -> out]
""",
    )
    p = load(path)
    spec = p.nodes["hi"].spec
    assert spec is not None and spec.name == "greeter"
    assert "greeter" in stage_mod.builtin_names()
    asyncio.run(p.run_async(clock=VirtualClock()))
    assert [f.text for f in kit.SEEN["ep"]] == ["hello 0", "hello 1", "hello 2"]  # type: ignore[union-attr]
    assert problems_of(write(tmp_path, path.read_text().replace("greeter", "greter"))) == [
        f"{tmp_path / 'pipelines.yaml'}:4:18: stage 'hi': unknown stage type 'greter'; "
        "did you mean 'greeter'?"
    ]


# ---------------------------------------------------------------- Python == YAML


def test_python_and_yaml_build_the_same_graph(tmp_path: Path) -> None:
    from_yaml = load(FIXTURES / "good.yaml", "second")
    p = Pipeline("second", base_dir=FIXTURES)
    p.add("tone", "signal_source", rate=8000, seconds=0.1, pace="fast")
    p.add("enc", "g711_encode", law="alaw")
    p.add("wav", "wav_sink", path="out/second.wav")
    p.link("tone", "enc", capacity=4, overflow="drop_oldest")
    p.chain("enc -> wav")
    plan, yaml_plan = p.check(), from_yaml.check()
    assert plan.problems == ()
    assert [(lk.name, lk.capacity, lk.overflow, lk.format) for lk in plan.links] == [
        (lk.name, lk.capacity, lk.overflow, lk.format) for lk in yaml_plan.links
    ]
    assert {n: st.values for n, st in plan.stages.items()} == {
        n: st.values for n, st in yaml_plan.stages.items()
    }


def test_python_problems_have_no_file() -> None:
    p = Pipeline("py")
    p.add("tone", "signal_source", rate=8000)
    p.add("tone", "null_sink")
    p.add("x", "resampel")
    p.chain("tone -> ")
    assert [str(q) for q in p.check().problems] == [
        "<pipeline>: duplicate stage id 'tone' (first defined at line 0); give each stage a "
        "unique id",
        "<pipeline>: stage 'x': unknown stage type 'resampel'; did you mean 'resample'?",
        "<pipeline>: cannot read link 'tone -> '; write 'a -> b -> c'",
        "<pipeline>: stage 'tone' (signal_source) is not connected; link it, e.g. "
        "'tone -> ...', or remove it",
    ]
    with pytest.raises(ConfigError):
        p.validate()
    assert str(Problem("m", "f", "x.yaml", 3, 0)) == "x.yaml:3:1: m; f"


def test_fixture_yaml_files_are_copied_cleanly(tmp_path: Path) -> None:
    """The fixtures stay valid YAML apart from the one syntax case."""
    for f in FIXTURES.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        x.name for x in FIXTURES.glob("*.yaml")
    )


def test_a_broken_entry_point_is_a_problem_not_a_crash(
    entry_point_dist: Path, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        """\
pipelines:
  p:
    stages:
      hi: {type: greeter}
      b: {type: broken}
      out: {type: null_sink}
    links: [hi -> b -> out]
""",
    )
    assert problems_of(path) == [
        f"{path}:5:17: stage 'b': stage type 'broken' (entry point 'ep_pkg_gone:stage' of "
        "group pipeline.stages) cannot be loaded: ModuleNotFoundError: No module named "
        "'ep_pkg_gone'; reinstall or fix the package that provides it"
    ]
    assert "greeter" in stage_mod.builtin_names() and "broken" not in stage_mod.builtin_names()
