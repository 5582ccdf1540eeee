"""Progress of a run: media time, percent and time left, in the live view and in the log."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from pipeline import Pipeline
from pipeline.clock import VirtualClock
from pipeline.frames import AudioFormat
from pipeline.progress import Progress, ProgressLog, measure, of_runner
from pipeline.report import live_table
from pipeline.runtime import Runner
from stages.wavfile import WavWriter


def test_progress_figures() -> None:
    p = Progress(media_s=12.5, total_s=30.0, elapsed_s=2.5)
    assert p.percent == pytest.approx(41.6667, abs=1e-3)
    assert p.left_s == pytest.approx(3.5)  # 17.5 s of media to go at 5x real time
    assert p.text() == "media 0:12.5 of 0:30.0 (41.7%), 0:03.5 left"
    assert p.fields() == {"media_s": 12.5, "total_s": 30.0, "percent": 41.7, "left_s": 3.5}
    assert Progress(0.0, 30.0, 0.0).text() == "media 0:00.0 of 0:30.0 (0.0%)"
    assert Progress(75.25, None, 1.0).text() == "media 1:15.2"
    assert Progress(3725.0, 7200.0, 10.0).text().startswith("media 1:02:05 of 2:00:00 (51.7%)")


def test_the_longest_source_of_known_length_sets_the_pace() -> None:
    assert measure([], 1.0) is None
    assert measure([(1.0, None), (4.0, 10.0), (2.0, 20.0)], 1.0) == Progress(2.0, 20.0, 1.0)
    assert measure([(1.0, None), (3.0, None)], 1.0) == Progress(3.0, None, 1.0)


def _realtime_tone(tmp_path: Path, seconds: float = 30.0) -> Pipeline:
    wav = tmp_path / "in.wav"
    with WavWriter(wav, AudioFormat("pcm16", 8000)) as w:
        w.write(b"\0\0" * round(8000 * seconds))
    p = Pipeline("call", base_dir=tmp_path)
    p.add("caller", "wav_source", path=str(wav), pace="realtime")
    p.add("out", "null_sink")
    p.link("caller", "out")
    p.validate()
    return p


def test_a_log_line_every_five_seconds_of_the_run_clock(tmp_path: Path) -> None:
    """A 30 s file at real-time pace on a virtual clock: progress lines at 5, 10, ... 25 s."""
    p = _realtime_tone(tmp_path)

    async def main() -> list[dict[str, object]]:
        clock = VirtualClock()
        runner = Runner(p, clock=clock)
        log_lines: list[dict[str, object]] = []

        class Log:
            def info(self, event: str, **kw: object) -> None:
                log_lines.append({"event": event, **kw})

        progress_log = ProgressLog(Log(), clock)
        task = asyncio.create_task(runner.run())
        progress_log(runner)  # the first tick, at 0 s, starts the interval
        for second in range(1, 30):
            # between two 20 ms frames, so which frames are out is not a tie
            await clock.sleep_until(second + 0.01)
            progress_log(runner)
        await task
        return log_lines

    lines = asyncio.run(main())
    assert [line["media_s"] for line in lines] == [5.02, 10.02, 15.02, 20.02, 25.02]
    assert {line["event"] for line in lines} == {"progress"}
    assert lines[0] == {
        "event": "progress",
        "pipeline": "call",
        "media_s": 5.02,  # the frames up to pts 5.00 s, released by 5.01 s
        "total_s": 30.0,
        "percent": 16.7,
        "left_s": 24.9,  # 5.01 s * 24.98 / 5.02
    }


def test_the_live_view_shows_media_percent_and_time_left(tmp_path: Path) -> None:
    p = _realtime_tone(tmp_path, seconds=10.0)

    async def main() -> str:
        clock = VirtualClock()
        runner = Runner(p, clock=clock)
        task = asyncio.create_task(runner.run())
        await clock.sleep_until(2.51)
        progress = of_runner(runner, elapsed_s=2.5)
        buf = io.StringIO()
        Console(file=buf, width=120).print(live_table(runner))
        runner.cancel()
        await task
        assert progress is not None
        return progress.text() + "\n" + buf.getvalue()

    text = asyncio.run(main())
    first, _, table = text.partition("\n")
    assert first == "media 0:02.5 of 0:10.0 (25.2%), 0:07.4 left"
    assert "of 0:10.0 (" in table and "left" in table


def test_the_cli_logs_progress_without_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pipeline run` without a terminal hangs a ProgressLog on the runner's clock."""
    from pipeline import cli

    seen: list[object] = []
    real = cli.ProgressLog

    def spy(log: object, clock: object, *a: object) -> object:
        seen.append(clock)
        return real(log, clock, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "ProgressLog", spy)
    (tmp_path / "p.yaml").write_text(
        "version: 1\npipelines:\n  t:\n    stages:\n"
        "      s: {type: signal_source, seconds: 0.1}\n      o: {type: null_sink}\n"
        "    links: [s -> o]\n",
        encoding="utf-8",
    )
    with capture_logs():
        assert cli.main(["run", str(tmp_path / "p.yaml"), "--no-live"]) == 0
    assert len(seen) == 1
