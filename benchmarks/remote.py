"""Runs measured in another Python process, taking turns with this process's runs.

Some settings are read once at import: ``PIPELINE_PURE_PYTHON=1`` makes every module use the
pure-Python twins of the compiled kernels. To show what the kernels buy in the same run, the
same measurement runs in a child process started with that setting, and its runs take their turn
in :func:`benchmarks.inplace.paired` beside this process's: a burst of load from elsewhere
falls on both alike.

The child (``python -m benchmarks.remote FACTORY ARGS``) enters ``FACTORY(*ARGS)``, a context
manager that yields a dict of runs (``run(k)`` does ``k`` items), prints one line of JSON (the
kernels in use there, :func:`pipeline.native.status`), then answers each line ``NAME K`` read
from its standard input with the CPU nanoseconds ``runs[NAME](K)`` took in that process (or
``error: ...``), until its input ends.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


class RemoteError(RuntimeError):
    """The child process failed: its message says where and why."""


class Remote:
    """A child process holding the runs of ``factory(*args)`` (``"module:function"``), with
    ``env`` added to this process's environment. Use as a context manager; :meth:`run` gives a
    callable for :func:`benchmarks.inplace.paired` that returns the child's CPU ns."""

    def __init__(self, factory: str, args: list[Any], env: dict[str, str]) -> None:
        self.factory = factory
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.remote", factory, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": _pythonpath()},
        )
        first = self._read()
        try:
            #: the kernels in use in the child (``pipeline.native.status()`` there)
            self.kernels: dict[str, bool] = json.loads(first)
        except ValueError:
            self.close()
            raise RemoteError(f"{factory} in a child process: {first}") from None

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self._stderr_tail()
            raise RemoteError(f"{self.factory} in a child process exited: {err}")
        return line.strip()

    def _stderr_tail(self) -> str:
        self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        lines = self.proc.stderr.read().strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.returncode}, no message"

    def run(self, name: str) -> Callable[[int], int]:
        """``run(k)``: the child runs ``runs[name](k)`` and the CPU ns it took come back."""

        def go(k: int) -> int:
            stdin = self.proc.stdin
            assert stdin is not None
            stdin.write(f"{name} {k}\n")
            stdin.flush()
            got = self._read()
            if not got.isdigit():
                raise RemoteError(f"{self.factory} in a child process, run {name!r}: {got}")
            return int(got)

        return go

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def optional(factory: str, args: list[Any], env: dict[str, str]) -> Iterator[Remote | RemoteError]:
    """A :class:`Remote`, or the error that kept it from starting (so that the rows it would
    have given say why they are missing, and the rest of the benchmark goes on)."""
    try:
        child = Remote(factory, args, env)
    except RemoteError as exc:
        yield exc
        return
    with child:
        yield child


def _pythonpath() -> str:
    """The repository first, so the child imports the same ``benchmarks`` package."""
    rest = os.environ.get("PYTHONPATH", "")
    return str(ROOT) + (os.pathsep + rest if rest else "")


def serve(factory: str, args: list[Any], lines: IO[str], out: IO[str]) -> int:
    """The child's loop (see the module docstring)."""
    from pipeline import native

    mod_name, _, fn_name = factory.partition(":")
    make = getattr(importlib.import_module(mod_name), fn_name)
    cpu = time.process_time_ns
    with make(*args) as runs:
        out.write(json.dumps(native.status()) + "\n")
        out.flush()
        for line in lines:
            name, _, k = line.strip().rpartition(" ")
            try:
                fn = runs[name]
                gc.collect()  # as the parent does before its runs: none pays for another's garbage
                t0 = cpu()
                fn(int(k))
                out.write(f"{cpu() - t0}\n")
            except Exception as exc:  # reported to the parent, which raises it
                msg = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
                out.write(msg + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], json.loads(sys.argv[2]), sys.stdin, sys.stdout))
