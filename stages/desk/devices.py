"""Sound devices through PortAudio (``sounddevice``): listing, choosing, checking a format.

The choosing and the messages are plain functions of a device list (:func:`pick`,
:func:`device_table`), so they are tested without a sound card; :func:`query` and
:func:`check_format` are the thin edge that asks PortAudio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from pipeline.errors import PipelineError

__all__ = ["Device", "DeviceError", "check_format", "device_table", "pick", "portaudio", "query"]

Kind = Literal["input", "output"]


class DeviceError(PipelineError):
    """A sound device that cannot be found, opened, or does not give the format asked for."""


@dataclass(frozen=True, slots=True)
class Device:
    """One PortAudio device, as ``pipeline devices`` lists it."""

    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_rate: int
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs


def portaudio() -> ModuleType:
    """The ``sounddevice`` module, or a DeviceError saying how to get PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # the package is there, the PortAudio library is not
        raise DeviceError(
            f"PortAudio cannot be loaded ({exc}); install it (Debian/Ubuntu: apt-get install "
            "libportaudio2, macOS: brew install portaudio)"
        ) from None
    module: ModuleType = sounddevice
    return module


def query() -> list[Device]:
    """Every device PortAudio sees, with the system's defaults marked."""
    sd = portaudio()
    apis = [str(a["name"]) for a in sd.query_hostapis()]
    default_in, default_out = sd.default.device
    out = []
    for d in sd.query_devices():
        i = int(d["index"])
        out.append(
            Device(
                i,
                str(d["name"]),
                apis[int(d["hostapi"])],
                int(d["max_input_channels"]),
                int(d["max_output_channels"]),
                round(float(d["default_samplerate"])),
                i == default_in,
                i == default_out,
            )
        )
    return out


def device_table(devices: Sequence[Device]) -> str:
    """The devices as a text table (``>`` marks the default input, ``<`` the default output)."""
    if not devices:
        return "no sound devices (PortAudio sees none)\n"
    rows = ["    index  name                              host api  in   out  rate"]
    for d in devices:
        mark = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
        rows.append(
            f"{mark}  {d.index:>5}  {d.name[:32]:<32}  {d.hostapi[:8]:<8}  {d.inputs:>3}  "
            f"{d.outputs:>3}  {d.default_rate}"
        )
    return "\n".join(rows) + "\n"


def pick(devices: Sequence[Device], wanted: str | int | None, kind: Kind) -> Device:
    """The device to use: the system's default (``None``), by index, by exact name, or by a
    part of its name that only one device of the right kind has."""
    usable = [d for d in devices if d.channels(kind) > 0]
    found: Device | None = None
    if wanted is None:
        found = next((d for d in usable if getattr(d, f"default_{kind}")), None)
        if found is None and usable:
            found = usable[0]
        what = f"no default {kind} device"
    elif isinstance(wanted, int):
        found = next((d for d in devices if d.index == wanted), None)
        what = f"no device with index {wanted}"
        if found is not None and found.channels(kind) == 0:
            what = f"device {wanted} ('{found.name}') has no {kind} channels"
            found = None
    else:
        exact = [d for d in usable if d.name == wanted]
        part = [d for d in usable if wanted.lower() in d.name.lower()]
        if exact or len(part) == 1:
            found = (exact or part)[0]
        what = (
            f"{len(part)} {kind} devices match '{wanted}'"
            if len(part) > 1
            else f"no {kind} device named '{wanted}'"
        )
    if found is None:
        raise DeviceError(f"{what}; the devices are:\n{device_table(devices)}")
    return found


def check_format(device: Device, kind: Kind, rate: int) -> None:
    """Raise a DeviceError unless ``device`` takes pcm16 mono at ``rate`` Hz."""
    sd = portaudio()
    check: Any = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device.index, channels=1, dtype="int16", samplerate=rate)
    except Exception as exc:
        raise DeviceError(
            f"{kind} device {device.index} ('{device.name}') cannot {_verb(kind)} pcm16 mono at "
            f"{rate} Hz ({exc}); its own rate is {device.default_rate} Hz: use rate "
            f"{device.default_rate} and resample in the pipeline, or pick another device:\n"
            + device_table(query())
        ) from None


def _verb(kind: Kind) -> str:
    return "record" if kind == "input" else "play"
