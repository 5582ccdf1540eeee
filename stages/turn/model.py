"""The Smart Turn v3 model: 8 s of 16 kHz audio in, the probability that the turn is complete out.

The ONNX file (``smart-turn-v3.2-cpu.onnx``, BSD 2-Clause, see ``data/SMART_TURN_LICENSE``)
ships inside this package. One onnxruntime session per model file is shared by every detector in
the process (created on first use under a lock, one thread); ``InferenceSession.run`` may be
called from several threads at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError

from .features import RATE, fit_to_window, log_mel

SMART_TURN_MODEL = Path(__file__).with_name("data") / "smart-turn-v3.2-cpu.onnx"

_SESSIONS: dict[str, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def smart_turn_session(model_path: Path | None = None) -> Any:
    """The process-wide onnxruntime session for a Smart Turn model (the packaged one by
    default), created on first use."""
    path = Path(model_path) if model_path is not None else SMART_TURN_MODEL
    key = str(path.resolve())
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            if not path.is_file():
                fix = (
                    "reinstall pipeline (the file ships in stages/turn/data/)"
                    if model_path is None
                    else "check model_path, or drop it to use the model shipped with pipeline"
                )
                raise InputError(f"{path}: Smart Turn model file not found; {fix}")
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise InputError(f"{path}: cannot load the Smart Turn model: {exc}") from None
            _SESSIONS[key] = session
    return session


class SmartTurnModel:
    """``probability(samples)``: how likely the speaker has finished, from the end of the audio.

    ``samples`` are 16 kHz mono, int16 or float (full scale ±1); only the last 8 s count, and
    shorter audio is padded with silence in front."""

    rate = RATE

    def __init__(self, model_path: Path | None = None) -> None:
        self._session = smart_turn_session(model_path)

    def features(self, samples: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """The model's input for ``samples``: ``(1, 80, 800)``."""
        x = samples.astype(np.float32)
        if samples.dtype == np.int16:
            x /= 32768.0
        return log_mel(fit_to_window(x))[None]

    def probability(self, samples: npt.NDArray[Any]) -> float:
        out = self._session.run(None, {"input_features": self.features(samples)})
        return float(np.asarray(out[0]).reshape(-1)[0])
