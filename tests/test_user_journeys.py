"""User journeys through the ``pipeline`` command, run as a user runs them: real subprocesses in a
fresh folder with the user's own YAML and WAV files, asserting on exit codes and the exact text.

Most commands are independent, so the ``batch`` fixture starts them together (a few at a time)
and each test reads its own result; the journeys that need timing (Ctrl-C, a server) run on their
own and wait on output markers, never on sleeps.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.renderers import assert_mermaid_parses

ROOT = Path(__file__).resolve().parents[1]
_EXE = Path(sys.executable).parent / "pipeline"
PIPELINE = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "pipeline"]
SECRET = "xai-QA-do-not-print-7f3a9c"  # a fake key; it must never be printed anywhere
TIMEOUT = 60


@dataclass(frozen=True)
class Result:
    """What one command did."""

    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """stderr without the structured log lines (JSON, as stderr is not a terminal)."""
        return [ln for ln in self.err.splitlines() if not ln.startswith("{")]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("CALLER_PACE", None)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run ``pipeline ARGS`` in ``cwd`` and wait for it."""
    p = subprocess.run(
        [*PIPELINE, *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t)


# ------------------------------------------------------------------------------ the files


def make_files(d: Path) -> None:
    """The user's folder: WAVs of every kind, good and bad, and the YAML files."""
    shutil.copytree(ROOT / "examples", d / "examples")
    shutil.copy(ROOT / "pipelines.yaml", d / "pipelines.yaml")
    x = tone(0.2, 16000)
    sf.write(d / "pcm16.wav", x, 16000, subtype="PCM_16")
    sf.write(d / "ulaw.wav", tone(0.2, 8000), 8000, subtype="ULAW")
    sf.write(d / "stereo_float.wav", np.stack([x, -x / 2], 1).astype(np.float32), 16000, "FLOAT")
    sf.write(d / "adpcm.wav", tone(0.2, 8000), 8000, subtype="IMA_ADPCM")
    good = (d / "pcm16.wav").read_bytes()
    (d / "truncated.wav").write_bytes(good[:-1001])
    (d / "empty.wav").write_bytes(b"")
    (d / "song.wav").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000))  # an MP3
    with wave.open(str(d / "zero.wav"), "wb") as w:  # no samples at all
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    (d / "afile").write_text("not a folder")
    (d / "latin1.yaml").write_bytes(b"version: 1\n# caf\xe9\n")

    write(
        d,
        "mistakes.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              t: {type: signal_source, seconds: "abc", frq: 3}
              s: {type: null_snk}
              t: {type: null_sink}
            links: [t -> s, t -> x, "t ->", 5, "s --> t"]
        """,
    )
    write(
        d,
        "syntax.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              t: {type: signal_source, seconds: 0.1
              s: {type: null_sink}
        """,
    )
    write(
        d,
        "problems.yaml",
        """
        version: 1
        pipelines:
          truncated:
            stages:
              src: {type: wav_source, path: truncated.wav}
              out: {type: null_sink}
            links: [src -> out]
          empty:
            stages:
              src: {type: wav_source, path: empty.wav}
              out: {type: null_sink}
            links: [src -> out]
          mp3:
            stages:
              src: {type: wav_source, path: song.wav}
              out: {type: null_sink}
            links: [src -> out]
          adpcm:
            stages:
              src: {type: wav_source, path: adpcm.wav}
              out: {type: null_sink}
            links: [src -> out]
          missing:
            stages:
              src: {type: wav_source, path: nowhere.wav}
              out: {type: null_sink}
            links: [src -> out]
          ulaw-to-resample:
            stages:
              src: {type: wav_source, path: ulaw.wav}
              up: {type: resample, rate: 16000}
              out: {type: null_sink}
            links: [src -> up -> out]
          pcm16k-to-encode:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              enc: {type: g711_encode}
              out: {type: null_sink}
            links: [src -> enc -> out]
          session-rate:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              agent: {type: realtime_session, provider: emulator, input_rate: 24000}
              out: {type: null_sink}
            links: [src -> agent -> out]
          audio-to-log:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              log: {type: jsonl_sink, path: out/e.jsonl}
            links: [src -> log]
          numbers:
            stages:
              t: {type: signal_source, rate: -5, seconds: .inf, amplitude: 2, frame_ms: 0}
              n: {type: signal_source, rate: 8000, freq: 5000, seconds: .nan}
              w: {type: wav_source, path: pcm16.wav, frame_ms: -20}
              s: {type: null_sink}
            links: [t -> s, n -> s, w -> s]
          types:
            stages:
              t: {type: 5}
              s: {}
            links: [t -> s]
          vad:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              v: {type: vad_gate, threshold: 7, prefix_ms: -1}
              out: {type: null_sink}
            links: [src -> v -> out]
          paths:
            stages:
              src: {type: wav_source, path: [a, b]}
              out: {type: null_sink}
            links: [src -> out]
          broken-module:
            stages:
              src: {type: signal_source}
              x: {type: "broken:thing"}
            links: [src -> x]
          unions:
            stages:
              src: {type: signal_source, rate: 24000}
              agent: {type: realtime_session, provider: emulator, turn_detection: 5}
              tools: {type: tool_router, tools: [5]}
              out: {type: null_sink}
            links: [src -> agent -> out, agent -> tools -> agent]
        """,
    )
    write(
        d,
        "outputs.yaml",
        """
        version: 1
        pipelines:
          one-file-two-writers:
            stages:
              src: {type: wav_source, path: examples/caller_8k_ulaw.wav}
              vad: {type: vad_gate, engine: energy, mode: annotate}
              audio: {type: wav_sink, path: out/x.wav}
              log: {type: jsonl_sink, path: out/x.wav}
            links: [src -> vad -> audio, vad -> log]
          not-a-file:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              here: {type: wav_sink, path: ""}
              folder: {type: wav_sink, path: examples}
              under-a-file: {type: wav_sink, path: afile/x.wav}
              discard1: {type: wav_sink, path: /dev/null}
              discard2: {type: wav_sink, path: /dev/null}
              stdout: {type: wav_sink, path: "-"}
            links: [src -> here, src -> folder, src -> under-a-file, src -> discard1,
                    src -> discard2, src -> stdout]
          self-loop:
            stages:
              src: {type: wav_source, path: pcm16.wav}
              down: {type: resample, rate: 8000}
              out: {type: null_sink}
            links: [src -> down -> down -> out]
        """,
    )
    write(
        d,
        "names.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              my-src: {type: wav_source, path: ulaw.wav}
              my_src: {type: signal_source, seconds: 0.1, rate: 24000}
              agent: {type: realtime_session, provider: emulator}
              tools: {type: tool_router, tools: ["examples.tools:get_time"]}
              out: {type: null_sink}
              end: {type: null_sink}
            links: [my-src -> out, my_src -> agent -> end, agent -> tools -> agent]
        """,
    )
    write(
        d,
        "full.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              tone: {type: signal_source, seconds: 0.1, rate: 8000}
              disk: {type: wav_sink, path: /dev/full}
            links: [tone -> disk]
        """,
    )
    write(
        d,
        "convert.yaml",
        """
        version: 1
        pipelines:
          convert:
            stages:
              stereo: {type: wav_source, path: stereo_float.wav, pace: fast}
              zero: {type: wav_source, path: zero.wav, pace: fast}
              mono: {type: wav_sink, path: out/new/mono.wav}
              nothing: {type: wav_sink, path: out/new/nothing.wav}
              tone: {type: signal_source, seconds: 0.1, rate: 8000, amplitude: 0.5}
              quieter: {type: "mystages:gain", db: -6}
              gain: {type: wav_sink, path: out/gain.wav}
              caller: {type: wav_source, path: examples/caller_8k_ulaw.wav, pace: fast}
              vad: {type: vad_gate, engine: energy, mode: annotate}
              drop: {type: null_sink}
              log: {type: jsonl_sink, path: "-"}
            links: [stereo -> mono, zero -> nothing, tone -> quieter -> gain,
                    caller -> vad -> drop, vad -> log]
        """,
    )
    write(
        d,
        "env.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              t: {type: signal_source, seconds: "${QA_SECONDS}", rate: "${QA_RATE:-8000}"}
              s: {type: wav_sink, path: "${QA_OUT:-out}/env.wav"}
            links: [t -> s]
        """,
    )
    write(
        d,
        "grok.yaml",
        """
        version: 1
        pipelines:
          grok:
            stages:
              src: {type: signal_source, seconds: 0.1, rate: 16000}
              agent: {type: realtime_session, provider: xai, input_rate: 16000,
                      reconnect_attempts: 1, connect_timeout_s: 2}
              out: {type: wav_sink, path: out/grok.wav}
              log: {type: jsonl_sink, path: out/grok.jsonl}
            links: [src -> agent -> out, agent -> log]
        """,
    )
    # The README's own code, copied as written.
    write(
        d,
        "mystages.py",
        '''
        # mystages.py
        from collections.abc import AsyncIterator
        from pipeline import Audio, Frame, stage

        @stage("gain", accepts=(Audio,), emits=(Audio,), passthrough=True)
        async def gain(frames: AsyncIterator[Frame], *, db: float = 0.0) -> AsyncIterator[Frame]:
            """Scale pcm16 audio.

            Parameters:
                db: gain in decibels
            """
            k = 10 ** (db / 20)
            async for f in frames:
                yield Audio.from_samples(f.samples() * k, f.rate, f.pts) if isinstance(f, Audio) else f
        ''',  # noqa: E501 (the README's line, as written)
    )
    write(d, "broken.py", 'import os\nraise ValueError("not today")\n')
    write(
        d,
        "explode.py",
        '''
        from collections.abc import AsyncIterator
        from pipeline import Audio, Frame, stage

        @stage("explode", accepts=(Audio,), emits=(Audio,), passthrough=True)
        async def explode(frames: AsyncIterator[Frame], *, after: int = 3) -> AsyncIterator[Frame]:
            """Fail after some frames."""
            n = 0
            async for f in frames:
                n += 1
                if n > after:
                    raise ValueError(f"exploded after {after} frames")
                yield f
        ''',
    )
    write(
        d,
        "explode.yaml",
        """
        version: 1
        pipelines:
          a:
            stages:
              src: {type: signal_source, seconds: 1, rate: 8000}
              x: {type: "explode:explode", after: 5}
              out: {type: wav_sink, path: out/explode.wav}
            links: [src -> x -> out]
        """,
    )
    write(
        d,
        "compose.py",
        """
        from mystages import gain
        from pipeline import Pipeline

        p = Pipeline("tone")
        p.add("tone", "signal_source", kind="sine", freq=440, rate=8000, seconds=2)
        p.add("louder", gain, db=6)
        p.add("out", "wav_sink", path="out/tone.wav")
        p.link("tone", "louder", "out")
        summary = p.run()             # or: await p.run_async()
        print(summary.stage("louder").frames_out, summary.realtime_factor)
        """,
    )


# The independent commands: name -> (args, extra environment).
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default_run": (["run", "pipelines.yaml"], {"CALLER_PACE": "fast"}),
    "validate_repo": (["validate", "pipelines.yaml"], {}),
    "mistakes": (["validate", "mistakes.yaml"], {}),
    "problems": (["validate", "problems.yaml"], {}),
    "outputs": (["validate", "outputs.yaml"], {}),
    "syntax": (["run", "syntax.yaml"], {}),
    "no_file": (["run", "nofile.yaml"], {}),
    "latin1": (["graph", "latin1.yaml"], {}),
    "convert": (["run", "convert.yaml", "--log-level", "INFO"], {}),
    "env_set": (
        ["run", "env.yaml", "--set", "t.rate=16000", "--set", "t.seconds=0.04"],
        {"QA_SECONDS": "0.1", "QA_OUT": "out/env"},
    ),
    "set_abuse": (
        [
            "validate",
            "env.yaml",
            *["--set", "t.rat=1", "--set", "x.y=1", "--set", "noequals", "--set", "t.rate=abc"],
        ],
        {},
    ),
    "explode": (["run", "explode.yaml"], {}),
    "disk_full": (["run", "full.yaml"], {}),
    "grok_no_key": (["run", "grok.yaml"], {}),
    "grok_fake_key": (["run", "grok.yaml", "--log-level", "debug"], {"XAI_API_KEY": SECRET}),
    "stages_all": (["stages"], {}),
    "stages_unknown": (["stages", "nope"], {}),
    "stages_user": (["stages", "mystages:gain"], {}),
    "graph_names": (["graph", "names.yaml"], {}),
    "graph_dot": (["graph", "pipelines.yaml", "--pipeline", "tone", "--format", "dot"], {}),
    "two_names": (["run", "pipelines.yaml", "tone", "--pipeline", "grok"], {}),
    "emu_port": (["emulator", "--port", "99999"], {}),
    "emu_config": (["emulator", "--config", "mistakes.yaml"], {}),
    "compose": (["python", "compose.py"], {}),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("user")
    make_files(d)
    return d


@pytest.fixture(scope="module")
def batch(folder: Path) -> dict[str, Result]:
    """Every independent command, run a few at a time."""

    def one(item: tuple[str, tuple[list[str], dict[str, str]]]) -> tuple[str, Result]:
        name, (args, extra) = item
        if args[0] == "python":  # the user's own script
            p = subprocess.run(
                [sys.executable, *args[1:]],
                cwd=folder,
                env=_env(**extra),
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            return name, Result(p.returncode, p.stdout, p.stderr)
        return name, cli(*args, cwd=folder, env=_env(**extra))

    # the slowest first, so the pool ends together
    order = sorted(COMMANDS.items(), key=lambda item: item[0] != "default_run")
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, order))


# ------------------------------------------------------------------------------ the journeys


def test_default_pipeline_runs_end_to_end(batch: dict[str, Result], folder: Path) -> None:
    r = batch["default_run"]
    assert r.rc == 0, r.err
    assert r.out.startswith("pipeline 'phone-agent' completed: 7.57 s of media in ")
    info = sf.info(folder / "out" / "reply.wav")
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
    assert info.duration > 1.0
    events = [json.loads(ln) for ln in (folder / "out" / "events.jsonl").read_text().splitlines()]
    calls = [e["name"] for e in events if e["type"] == "tool_call"]
    assert calls == ["get_time", "lookup_order"]
    results = [e for e in events if e["type"] == "tool_result"]
    assert [e["is_error"] for e in results] == [False, False]
    assert '"status":"out for delivery"' in results[1]["output"]


def test_validate_the_repo_pipelines_without_a_key(batch: dict[str, Result]) -> None:
    from pipeline.config import pipeline_names

    n = len(list(pipeline_names((ROOT / "pipelines.yaml").read_text(encoding="utf-8"))))
    assert n >= 10  # grok, openai, the phone pipelines, ...
    assert batch["validate_repo"] == Result(0, f"pipelines.yaml: ok ({n} pipelines)\n", "")


def test_every_mistake_of_a_file_at_once(batch: dict[str, Result]) -> None:
    r = batch["mistakes"]
    assert r.rc == 2
    assert r.out.splitlines() == [
        "mistakes.yaml:5:41: stage 't' (signal_source): parameter 'seconds' (float): Input "
        "should be a valid number, unable to parse string as a number, got 'abc'",
        "mistakes.yaml:5:53: stage 't' (signal_source): stage type 'signal_source' has no "
        "parameter 'frq'; did you mean 'freq'?",
        "mistakes.yaml:6:17: stage 's': unknown stage type 'null_snk'; did you mean 'null_sink'?",
        "mistakes.yaml:7:7: duplicate stage id key 't' (first at line 5); give each a unique name",
        "mistakes.yaml:8:21: link 't -> x' names unknown stage 'x'; define it under stages",
        "mistakes.yaml:8:29: cannot read link 't ->'; write 'a -> b -> c'",
        "mistakes.yaml:8:37: cannot read link 5; write 'a -> b' or {chain: 'a -> b', capacity: 8}",
        "mistakes.yaml:8:40: cannot read link 's --> t': an arrow is '->', one dash; write "
        "'s -> t'",
        "8 problems found",
    ]


def test_yaml_syntax_error_names_the_line(batch: dict[str, Result]) -> None:
    r = batch["syntax"]
    assert (r.rc, r.out) == (2, "")
    assert r.err_lines == [
        "syntax.yaml:6:8: YAML syntax error: expected ',' or '}', but got ':'; fix the YAML syntax"
    ]


def test_unreadable_pipeline_files_give_one_line(batch: dict[str, Result]) -> None:
    assert batch["no_file"] == Result(2, "", "nofile.yaml: no such file; check the path\n")
    assert batch["latin1"] == Result(
        2, "", "latin1.yaml: not UTF-8 text (bad byte at offset 16); save it as UTF-8 YAML\n"
    )


def test_bad_files_formats_and_numbers_found_before_running(
    batch: dict[str, Result], folder: Path
) -> None:
    r = batch["problems"]
    assert r.rc == 2
    assert r.out.splitlines() == [
        # bad WAVs
        "problems.yaml:5:37: stage 'src' (wav_source): truncated.wav: data chunk says 6400 "
        "bytes, file has 5399; the file is truncated",
        "problems.yaml:10:37: stage 'src' (wav_source): empty.wav: empty file (0 bytes), not a "
        "WAV file; give a WAV file, or convert this one with e.g. 'sox IN OUT.wav'",
        "problems.yaml:15:37: stage 'src' (wav_source): song.wav: not a WAV file (starts with "
        "b'ID3\\x04'); give a WAV file, or convert this one with e.g. 'sox IN OUT.wav'",
        "problems.yaml:20:37: stage 'src' (wav_source): adpcm.wav: IMA ADPCM (WAV format tag "
        "0x0011) is not supported; convert it with e.g. 'sox IN.wav -e signed-integer -b 16 "
        "OUT.wav'",
        "problems.yaml:25:37: stage 'src' (wav_source): input file 'nowhere.wav' does not exist "
        f"(looked for {folder / 'nowhere.wav'}); check the path (relative paths start at the "
        "YAML file's folder)",
        # format mismatches
        "problems.yaml:33:13: link 'src -> up': stage 'up' (resample) gets pcmu 8000 Hz audio; "
        "resample needs pcm16; add {type: g711_decode} before it",
        "problems.yaml:39:13: link 'src -> enc': stage 'enc' (g711_encode) gets 16000 Hz audio; "
        "G.711 needs 8000 Hz; add {type: resample, rate: 8000} before it",
        "problems.yaml:45:13: link 'src -> agent': stage 'agent' (realtime_session) gets pcm16 "
        "16000 Hz audio; its input is pcm16 24000 Hz (input_format/input_rate); add {type: "
        "resample, rate: 24000} before it, or set input_rate: 16000",
        "problems.yaml:50:13: link 'src -> log' can carry nothing: 'src' (wav_source) emits "
        "audio; 'log' (jsonl_sink) accepts error, interrupt, response_done, response_started, "
        "speech_started, speech_stopped, text, tool_call, tool_cancel, tool_result, transcript; "
        "remove the link or put a converting stage between them",
        # impossible numbers: found by validate (exit 2), not once the run has started
        "problems.yaml:53:38: stage 't' (signal_source): rate must be a positive number of Hz, "
        "got -5",
        "problems.yaml:53:51: stage 't' (signal_source): seconds must be a finite number, got inf",
        "problems.yaml:53:68: stage 't' (signal_source): amplitude is a fraction of full scale "
        "(0 to 1), got 2",
        "problems.yaml:53:81: stage 't' (signal_source): frame_ms must be at least 1, got 0",
        "problems.yaml:54:50: stage 'n' (signal_source): freq must be between 0 and half the "
        "rate (4000 Hz) or the tone aliases, got 5000",
        "problems.yaml:54:65: stage 'n' (signal_source): seconds must be a finite number, got nan",
        "problems.yaml:55:56: stage 'w' (wav_source): frame_ms must be at least 1, got -20",
        # a bad type: said once, and links to the stage are not "unknown stage" problems
        "problems.yaml:60:17: stage 't': type must be a stage type name, got 5; see 'pipeline "
        "stages'",
        "problems.yaml:61:7: stage 's' has no type; add 'type: <stage type>' (see 'pipeline "
        "stages')",
        # a gate that would drop everything (silero scores are 0..1)
        "problems.yaml:66:38: stage 'v' (vad_gate): the silero threshold is a speech "
        "probability between 0 and 1; got 7",
        "problems.yaml:66:52: stage 'v' (vad_gate): prefix_ms must be 0 or more, got -1",
        "problems.yaml:71:37: stage 'src' (wav_source): parameter 'path' (path): a file path "
        "is text, got ['a', 'b']",
        # the user's stage module raises while it is imported: one line, no traceback
        "problems.yaml:77:17: stage 'x': importing module 'broken' for stage type "
        "'broken:thing' failed: ValueError: not today (broken.py, line 2); fix the error in "
        "that module",
        # a value that fits no member of a union: one line, not one per member
        "problems.yaml:82:75: stage 'agent' (realtime_session): parameter 'turn_detection' "
        "(str | dict[str, any] | null): Input should be str or dict[str,any], got 5",
        "problems.yaml:83:41: stage 'tools' (tool_router): parameter 'tools' "
        "(list[str | dict[str, any]]): item 1: Input should be str or dict[str,any], got 5",
        "24 problems found",
    ]


def test_unwritable_outputs_and_self_loops_found_before_running(
    batch: dict[str, Result], folder: Path
) -> None:
    r = batch["outputs"]
    assert r.rc == 2
    assert r.out.splitlines() == [
        "outputs.yaml:8:37: stage 'log' (jsonl_sink): output path 'out/x.wav' is written by "
        "stage 'audio' too; give each stage its own file",
        f"outputs.yaml:13:36: stage 'here' (wav_sink): output path '' is a folder ({folder}); "
        "name a file in it",
        "outputs.yaml:14:38: stage 'folder' (wav_sink): output path 'examples' is a folder "
        f"({folder / 'examples'}); name a file in it",
        "outputs.yaml:15:44: stage 'under-a-file' (wav_sink): output path 'afile/x.wav': "
        f"{folder / 'afile'} is a file, not a folder; choose another path",
        # `stdout: {type: wav_sink, path: "-"}` (line 18) is fine: a WAV stream on stdout
        "outputs.yaml:26:13: link 'down -> down' links stage 'down' to itself: it would take "
        "back everything it emits and the run would never end; remove the link",
        "5 problems found",
    ]


def test_converted_wavs_an_empty_wav_and_a_user_stage_run(
    batch: dict[str, Result], folder: Path
) -> None:
    r = batch["convert"]
    assert r.rc == 0, r.err
    assert "2 channels mixed to mono by their mean" in r.err
    assert '"pipeline starting"' in r.err  # --log-level INFO (any case)
    # the event log on stdout stays JSON lines: the summary goes to stderr
    events = [json.loads(line) for line in r.out.splitlines()]
    assert [e["type"] for e in events] == ["speech_started", "speech_stopped"] * 2
    assert "pipeline 'convert' completed" in r.err
    mono, rate = sf.read(folder / "out" / "new" / "mono.wav", dtype="int16")
    assert (rate, mono.shape) == (16000, (3200,))
    x = tone(0.2, 16000).astype(np.float32).astype(np.float64)
    expected = np.clip(np.rint((x - x / 2) / 2 * 32768), -32768, 32767)
    assert np.abs(mono - expected).max() <= 1
    info = sf.info(folder / "out" / "new" / "nothing.wav")
    assert (info.frames, info.samplerate) == (0, 16000)
    data, _ = sf.read(folder / "out" / "gain.wav", dtype="int16")
    assert abs(int(np.abs(data).max()) - round(0.5 * 32767 * 10 ** (-6 / 20))) <= 2


def test_environment_variables_and_set(batch: dict[str, Result], folder: Path) -> None:
    r = batch["set_abuse"]  # QA_SECONDS unset as well
    assert r.rc == 2
    assert r.out.splitlines() == [
        # a --set value is located at its stage, not at the value in the file it replaced
        "env.yaml:5:7: stage 't' (signal_source): parameter 'rate' (int): Input should be a "
        "valid integer, unable to parse string as an integer, got 'abc' (from --set t.rate)",
        "env.yaml:5:7: stage 't' (signal_source): stage type 'signal_source' has no parameter "
        "'rat'; did you mean 'rate'? (from --set t.rat)",
        "env.yaml:5:41: environment variable QA_SECONDS is not set; export QA_SECONDS=... or "
        "write ${QA_SECONDS:-default}",
        "<command line>: --set 'noequals': expected ID.PARAM=VALUE; e.g. --set agent.voice=rex",
        "env.yaml: --set x.y: no stage 'x' in pipeline 'a'; check the stage id",
        "5 problems found",
    ]
    r = batch["env_set"]
    assert r.rc == 0, r.err
    data, rate = sf.read(folder / "out" / "env" / "env.wav", dtype="int16")
    assert (rate, len(data)) == (16000, 640)


def test_a_user_stage_failing_while_running(batch: dict[str, Result], folder: Path) -> None:
    r = batch["explode"]
    assert r.rc == 1
    assert r.err_lines == ["error: stage 'x' failed: ValueError: exploded after 5 frames"]
    assert r.out.startswith("pipeline 'a' failed: ")
    assert sf.info(folder / "out" / "explode.wav").frames == 5 * 160  # what came before


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line_naming_the_file(batch: dict[str, Result]) -> None:
    r = batch["disk_full"]
    assert r.rc == 1
    assert r.err_lines == [
        "error: stage 'disk' failed: cannot write /dev/full: No space left on device; check the "
        "path, its permissions and the free space"
    ]


def test_grok_without_a_key(batch: dict[str, Result]) -> None:
    r = batch["grok_no_key"]
    assert r.rc == 2
    # found before any stage starts: one located line, as for any bad input
    (line,) = r.err_lines
    assert line.startswith("grok.yaml:")
    assert line.endswith(
        " stage 'agent' (realtime_session): environment variable XAI_API_KEY is not set (or "
        "blank), and every session with provider xai needs the API key there; export "
        "XAI_API_KEY=... (or name another variable with api_key_env)"
    )


def test_grok_with_a_fake_key_and_no_network(batch: dict[str, Result], folder: Path) -> None:
    r = batch["grok_fake_key"]
    assert r.rc == 1
    assert r.err_lines[-1].startswith(
        "error: stage 'agent' failed: cannot connect to wss://api.x.ai/v1/realtime after "
    )
    assert r.err_lines[-1].endswith("; check the url and the network")
    assert "Traceback" not in r.err
    for text in (r.out, r.err):
        assert SECRET not in text
    # it failed before any frame: no empty reply or event log is left behind
    assert not (folder / "out" / "grok.wav").exists()
    assert not (folder / "out" / "grok.jsonl").exists()


def test_stage_catalogue(batch: dict[str, Result]) -> None:
    r = batch["stages_all"]
    assert r.rc == 0
    for name in ("wav_source", "signal_source", "resample", "g711_decode", "g711_encode"):
        assert f"│ {name} " in r.out
    for name in ("vad_gate", "realtime_session", "tool_router", "wav_sink", "jsonl_sink"):
        assert f"│ {name} " in r.out
    assert "pace (realtime | fast) = 'realtime'" in r.out
    assert "timestamps); ends when the call" in " ".join(r.out.split())  # a 2-line summary
    assert batch["stages_unknown"] == Result(
        2,
        "",
        "error: unknown stage type 'nope'; see 'pipeline stages' for the list, or use "
        "'package.module:function'\n",
    )
    # the README's stage, from the folder that holds mystages.py
    assert batch["stages_user"].rc == 0
    assert "db (float) = 0.0: gain in decibels" in batch["stages_user"].out


def test_graph_both_formats(batch: dict[str, Result]) -> None:
    assert batch["graph_dot"] == Result(
        0,
        'digraph "tone" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box];\n"
        '    "tone" [label="tone\\nsignal_source"];\n'
        '    "sink" [label="sink\\nnull_sink"];\n'
        '    "tone" -> "sink" [label="audio [pcm16 8000 Hz]"];\n'
        "}\n",
        "",
    )


def test_two_different_pipeline_names_are_refused(batch: dict[str, Result]) -> None:
    assert batch["two_names"] == Result(
        2,
        "",
        "<command line>: two pipeline names: 'tone' and --pipeline 'grok'; give one of them\n",
    )


def test_mermaid_with_formats_a_feedback_link_and_awkward_ids(batch: dict[str, Result]) -> None:
    # 'my-src' and 'my_src' stay two nodes; 'end' (a Mermaid keyword) is renamed
    assert batch["graph_names"] == Result(
        0,
        "flowchart LR\n"
        '    my_src["my-src<br/><small>wav_source</small>"]\n'
        '    my_src_2["my_src<br/><small>signal_source</small>"]\n'
        '    agent["agent<br/><small>realtime_session</small>"]\n'
        '    tools["tools<br/><small>tool_router</small>"]\n'
        '    out["out<br/><small>null_sink</small>"]\n'
        '    end_["end<br/><small>null_sink</small>"]\n'
        '    my_src -->|"audio [pcmu 8000 Hz]"| out\n'
        '    my_src_2 -->|"audio [pcm16 24000 Hz]"| agent\n'
        '    agent -->|"audio, error, interrupt, response_done, response_started, speech_started, '
        'speech_stopped, tool_call, tool_cancel, transcript [pcm16 24000 Hz]"| end_\n'
        '    agent -->|"interrupt, response_done, response_started, tool_call, tool_cancel"| '
        "tools\n"
        '    tools -.->|"tool_result"| agent\n'
        '    tools -.-|"provides: tools"| agent\n',  # the session uses what the router provides
        "",
    )
    assert_mermaid_parses(batch["graph_names"].out)


def test_readme_composition_in_python(batch: dict[str, Result], folder: Path) -> None:
    r = batch["compose"]
    assert r.rc == 0, r.err
    frames, factor = r.out.splitlines()[-1].split()
    assert frames == "100" and float(factor) > 1
    data, rate = sf.read(folder / "out" / "tone.wav", dtype="int16")
    assert (rate, len(data)) == (8000, 16000)
    assert abs(int(np.abs(data).max()) - round(0.5 * 32767 * 10 ** (6 / 20))) <= 2


def test_emulator_refuses_bad_flags(batch: dict[str, Result]) -> None:
    assert batch["emu_port"] == Result(
        2,
        "",
        "pipeline emulator: --port 99999 is not a port; give 0 to 65535 (0 picks a free one)\n",
    )
    assert batch["emu_config"] == Result(
        2,
        "",
        'pipeline emulator: bad settings: mistakes.yaml:7:7: found duplicate key "t" with value '
        '"{}" (original value: "{}"); fix the YAML syntax\n',
    )


# ------------------------------------------------------------------------ timed journeys


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PIPELINE, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _wait_for(stream: Iterator[str], marker: Callable[[str], bool]) -> list[str]:
    seen = []
    for line in stream:
        seen.append(line)
        if marker(line):
            return seen
    raise AssertionError("marker never came; output:\n" + "".join(seen))


def test_ctrl_c_during_the_default_pipeline(folder: Path) -> None:
    p = _start(["run", "pipelines.yaml", "--log-format", "json"], folder, _env())
    try:
        assert p.stderr is not None
        _wait_for(p.stderr, lambda line: '"session ready"' in line)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        p.kill()
    assert p.returncode == 130
    assert "draining the pipeline" in err
    assert "Traceback" not in err
    assert out.startswith("pipeline 'phone-agent' interrupted: ")
    info = sf.info(folder / "out" / "reply.wav")
    assert (info.samplerate, info.subtype) == (8000, "ULAW")
    for line in (folder / "out" / "events.jsonl").read_text().splitlines():
        json.loads(line)


def test_an_emulator_that_refuses_the_key(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "reject.yaml").write_text("reject_status: 401\n")
    emu = _start(["emulator", "--port", "0", "--config", "reject.yaml"], tmp_path, _env())
    try:
        assert emu.stderr is not None
        (line,) = _wait_for(emu.stderr, lambda line: "listening on" in line)
        url = line.split("listening on ")[1].strip()
        assert url.startswith("ws://127.0.0.1:")
        write(
            tmp_path,
            "p.yaml",
            f"""
            version: 1
            pipelines:
              a:
                stages:
                  src: {{type: signal_source, seconds: 0.1, rate: 16000}}
                  agent: {{type: realtime_session, provider: xai, url: "{url}",
                          input_rate: 16000}}
                  out: {{type: wav_sink, path: out.wav}}
                links: [src -> agent -> out]
            """,
        )
        r = cli("run", "p.yaml", "--log-level", "debug", cwd=tmp_path, env=_env(XAI_API_KEY=SECRET))
        emu.send_signal(signal.SIGINT)  # Ctrl-C stops the emulator: exit 130, no traceback
        _, emu_err = emu.communicate(timeout=TIMEOUT)
        assert (emu.returncode, emu_err) == (130, "")
    finally:
        emu.kill()
    assert r.rc == 1
    assert r.err_lines[-1] == (
        f"error: stage 'agent' failed: {url} refused the API key from XAI_API_KEY (HTTP 401); "
        "check that the key is valid and allowed to use the model"
    )
    assert SECRET not in r.out + r.err
