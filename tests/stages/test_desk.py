"""mic_source, speaker_sink and ``pipeline devices``: the choosing and the player without a
sound card, then everything on a virtual one.

The virtual device is a PulseAudio server the fixture starts in a folder of its own, with two
null sinks: ``caller`` (its monitor is the default microphone: what plays into it is heard) and
``room`` (the default speaker). PortAudio reaches it through the ALSA pulse plugin. Processes
are waited on by the lines they log, never by time."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import soundfile
import soxr

from stages.desk.devices import Device, DeviceError, device_table, pick
from stages.desk.stages import Player

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = [sys.executable, "-m", "pipeline"]
TIMEOUT_S = 60

DEVICES = [
    Device(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 2, 48000),
    Device(1, "USB Headset: Audio (hw:1,0)", "ALSA", 1, 2, 44100),
    Device(2, "HDMI 0", "ALSA", 0, 8, 48000),
    Device(3, "default", "ALSA", 32, 32, 44100, default_input=True, default_output=True),
]


# ---------------------------------------------------------------------------- without a card


def test_pick_a_device() -> None:
    assert pick(DEVICES, None, "input").index == 3
    assert pick(DEVICES, 1, "input").name.startswith("USB Headset")
    assert pick(DEVICES, "usb", "output").index == 1  # part of the name, any case
    assert pick(DEVICES, "HDMI 0", "output").index == 2
    assert pick(DEVICES[:3], None, "input").index == 0  # no default: the first that records


@pytest.mark.parametrize(
    ("wanted", "kind", "message"),
    [
        (7, "input", "no device with index 7; the devices are:\n"),
        (2, "input", "device 2 ('HDMI 0') has no input channels; the devices are:\n"),
        ("hw:", "input", "2 input devices match 'hw:'; the devices are:\n"),
        ("bluetooth", "output", "no output device named 'bluetooth'; the devices are:\n"),
    ],
)
def test_a_device_that_is_not_there_lists_the_devices(
    wanted: str | int, kind: str, message: str
) -> None:
    with pytest.raises(DeviceError) as err:
        pick(DEVICES, wanted, kind)  # type: ignore[arg-type]
    assert str(err.value) == message + device_table(DEVICES)


def test_device_table() -> None:
    assert device_table(DEVICES).splitlines() == [
        "    index  name                              host api  in   out  rate",
        "        0  HDA Intel PCH: ALC3246 Analog (h  ALSA        2    2  48000",
        "        1  USB Headset: Audio (hw:1,0)       ALSA        1    2  44100",
        "        2  HDMI 0                            ALSA        0    8  48000",
        "><      3  default                           ALSA       32   32  44100",
    ]


def test_the_player_plays_in_order_and_drops_on_interrupt() -> None:
    p = Player(8000)
    p.push(np.arange(1, 11, dtype="<i2").tobytes())
    out = bytearray(8)
    assert p.fill(out) == 4
    assert np.frombuffer(out, "<i2").tolist() == [1, 2, 3, 4]
    assert (p.played, p.queued, p.position) == (4, 6, 4)
    assert p.clear() == 4  # playing stopped after 4 samples; 6 dropped
    assert (p.queued, p.dropped, p.position) == (0, 6, 10)
    out = bytearray(b"\xff" * 8)
    assert p.fill(out) == 0
    assert out == bytes(8)  # silence when there is nothing to play
    p.push(np.array([7, 8], dtype="<i2").tobytes())
    out = bytearray(8)
    assert p.fill(out) == 2
    assert np.frombuffer(out, "<i2").tolist() == [7, 8, 0, 0]
    assert p.position == 12


# ---------------------------------------------------------------------------- a virtual card


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private PulseAudio server; the environment that points a process at it."""
    missing = [t for t in ("pulseaudio", "pactl", "paplay") if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (Debian: apt-get install pulseaudio "
            "libasound2-plugins libportaudio2; .ci/run does)"
        )
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        pytest.skip(f"PortAudio cannot be loaded ({exc}): apt-get install libportaudio2")
    folder = tmp_path_factory.mktemp("pulse")
    socket = folder / "native"
    (folder / "default.pa").write_text(
        f"load-module module-native-protocol-unix socket={socket}\n"
        "load-module module-null-sink sink_name=caller\n"
        "load-module module-null-sink sink_name=room\n"
        "set-default-sink room\n"
        "set-default-source caller.monitor\n"
    )
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_RUNTIME_DIR": str(folder),
        "PULSE_RUNTIME_PATH": str(folder),
        "PULSE_SERVER": f"unix:{socket}",
    }
    # -D returns once the daemon is up and listening (or has failed to start)
    started = subprocess.run(
        ["pulseaudio", "-D", "-n", "-F", str(folder / "default.pa"), "--exit-idle-time=-1",
         "--use-pid-file=yes", "--log-target=stderr"],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.skip(f"PulseAudio did not start: {started.stderr.strip()[-300:]}")
    try:
        yield {k: v for k, v in env.items() if k.startswith(("PULSE", "XDG", "HOME"))}
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, timeout=TIMEOUT_S, check=False)


def run_env(pulse: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **pulse, **extra}
    env.pop("HOME", None)
    env["HOME"] = pulse["HOME"]
    return env


def log_entry(line: str) -> dict[str, object] | None:
    """The JSON log entry a line starts with (ALSA may write its own notes after it on the same
    line: both write to standard error)."""
    if not line.startswith("{"):
        return None
    entry, _ = json.JSONDecoder().raw_decode(line)
    return dict(entry)


def _next_line(stream: IO[str], deadline: float, what: str) -> str | None:
    """The stream's next line, read on a helper thread so a silent process cannot hang the test:
    None at end of stream; an AssertionError naming ``what`` once ``deadline`` passes."""
    entry = _READERS.get(id(stream))
    if entry is not None and entry[0] is stream:
        lines = entry[1]
    else:  # a new stream (an id can be reused once a stream of an earlier test is freed)
        lines = queue.Queue()
        _READERS[id(stream)] = (stream, lines)

        def pump(q: queue.Queue[str | None] = lines) -> None:
            for line in stream:
                q.put(line)
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        raise AssertionError(f"no {what} within {TIMEOUT_S} s") from None


_READERS: dict[int, tuple[IO[str], queue.Queue[str | None]]] = {}


def wait_line(proc: subprocess.Popen[str], event: str) -> dict[str, object]:
    """Read the process's JSON log lines until one whose event is ``event`` (at most TIMEOUT_S)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT_S
    while (line := _next_line(proc.stderr, deadline, f"'{event}' log line")) is not None:
        entry = log_entry(line)
        if entry is not None and entry.get("event") == event:
            return entry
    raise AssertionError(
        f"the process ended (code {proc.wait(TIMEOUT_S)}) without logging '{event}'"
    )


def test_devices_lists_the_virtual_card(pulse: dict[str, str]) -> None:
    out = subprocess.run(
        [*PIPELINE, "devices"], env=run_env(pulse), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["index", "name", "host", "api", "in", "out", "rate"]
    assert any(line.split()[:2] == ["0", "pulse"] for line in lines[1:]), out.stdout
    assert any(line.startswith("><") for line in lines), out.stdout


def test_what_the_speaker_plays_the_microphone_hears(pulse: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "pipelines:\n"
        "  record:\n"
        "    stages:\n"
        "      mic: {type: mic_source, device: pulse, rate: 16000}\n"
        "      vad: {type: vad_gate, engine: energy, mode: annotate, hangover_ms: 100}\n"
        "      wav: {type: wav_sink, path: heard.wav}\n"
        "      log: {type: jsonl_sink, path: '-'}\n"
        "    links: [mic -> vad -> wav, vad -> log]\n"
        "  play:\n"
        "    stages:\n"
        "      tone: {type: wav_source, path: tone.wav}\n"
        "      speaker: {type: speaker_sink, device: pulse}\n"
        "    links: [tone -> speaker]\n"
    )
    # a second of 440 Hz between half-seconds of silence: the silence before it is what the
    # energy VAD's noise floor settles on (a monitor source may deliver nothing before playback)
    t = np.arange(16000) / 16000
    sine = np.rint(0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    gap = np.zeros(8000, np.int16)
    soundfile.write(tmp_path / "tone.wav", np.concatenate([gap, sine, gap]), 16000, "PCM_16")
    log = ["--log-format", "json", "--no-live"]
    rec = subprocess.Popen(
        [*PIPELINE, "run", "p.yaml", "record", *log], cwd=tmp_path, text=True,
        env=run_env(pulse), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        opened = wait_line(rec, "microphone open")
        assert opened["rate"] == 16000
        play = subprocess.run(
            [*PIPELINE, "run", "p.yaml", "play", *log], cwd=tmp_path, text=True,
            env=run_env(pulse, PULSE_SINK="caller"), capture_output=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert play.returncode == 0, play.stderr[-2000:]
        entries = [e for e in map(log_entry, play.stderr.splitlines()) if e is not None]
        assert [e["played_s"] for e in entries if e["event"] == "speaker closed"] == [2.0]
        # the tone comes back through the server: wait until the VAD heard it end
        assert rec.stdout is not None
        deadline = time.monotonic() + TIMEOUT_S
        while (line := _next_line(rec.stdout, deadline, "speech_stopped event")) is not None:
            if json.loads(line)["type"] == "speech_stopped":
                break
        rec.send_signal(signal.SIGINT)
        mic = wait_line(rec, "microphone closed")
        assert rec.wait(TIMEOUT_S) == 130
    finally:
        rec.kill()
        rec.wait()
    heard, rate = soundfile.read(tmp_path / "heard.wav", dtype="int16")
    assert rate == 16000
    x = heard.astype(np.float64)
    # 20 ms blocks that hold the tone (a sine of peak 0.5 has an RMS of 0.354 of full scale)
    blocks = x[: len(x) // 320 * 320].reshape(-1, 320)
    rms = np.sqrt((blocks**2).mean(axis=1)) / 32768
    tone = blocks[rms > 0.25]
    # The second of tone comes back whole on a quiet machine. On a busy one (other test runs on
    # the same two cores) the sound server falls behind and drops blocks, so this asks for the
    # tone's level and pitch in what did come back, and for no more than was played.
    assert 0.04 <= len(tone) * 0.02 <= 1.05, f"{len(tone) * 0.02:.2f} s of tone heard; {mic}"
    assert 0.3 < np.median(rms[rms > 0.25]) < 0.4
    crossings = (np.diff(np.signbit(tone), axis=1) != 0).sum(axis=1)
    assert abs(np.median(crossings) / 2 / 0.02 - 440) <= 25  # ±1 crossing in a 20 ms block


def test_the_desk_pipeline_on_the_virtual_card(pulse: dict[str, str], tmp_path: Path) -> None:
    # the caller's first question, then a pause long enough for the reply
    pcm, rate = soundfile.read(ROOT / "examples" / "caller_8k_ulaw.wav", dtype="int16")
    first = np.concatenate([pcm[: int(2.8 * rate)], np.zeros(int(2.5 * rate), np.int16)])
    caller = tmp_path / "caller.wav"
    soundfile.write(caller, soxr.resample(first, rate, 48000).astype(np.int16), 48000)
    desk = subprocess.Popen(
        [*PIPELINE, "run", str(ROOT / "pipelines.yaml"), "desk", "--log-format", "json",
         "--no-live"],
        cwd=tmp_path, text=True, env=run_env(pulse), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_line(desk, "microphone open")
        said = subprocess.run(
            ["paplay", "--device=caller", str(caller)], env=run_env(pulse), timeout=TIMEOUT_S
        )
        assert said.returncode == 0
        desk.send_signal(signal.SIGINT)  # hang up: the reply in flight plays out, then it ends
        closed = wait_line(desk, "speaker closed")
        out, _ = desk.communicate(timeout=TIMEOUT_S)
    finally:
        desk.kill()
        desk.wait()
    assert desk.returncode == 130
    assert closed["played_s"] > 1.0  # the echo of the question (about 1.9 s) played
    assert "get_time" in out and "in Tokyo" in out  # the tool call and its result
