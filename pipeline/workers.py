"""Many worker processes on one port: the machinery under ``pipeline serve --workers N``.

Theory of operation
-------------------
A Python process answers its calls on one core. To use every core of a box, a *supervisor*
process starts N *workers*, each a full server with its own event loop, all listening on the same
port:

* **SO_REUSEPORT** (Linux, the BSDs): each worker binds its own listening socket to the port and
  the kernel spreads new connections over them. The supervisor keeps one socket bound to the port
  (never listening) so the port stays reserved while a worker restarts, and so that port 0
  resolves to one free port shared by all.
* **Inherited socket** (elsewhere): the supervisor listens once and every worker inherits the
  socket (its file descriptor number is in ``PIPELINE_LISTEN_FD``); whichever worker's loop is
  free accepts.

Workers are the same command line run again with ``PIPELINE_WORKER=i/N`` in the environment
(:meth:`WorkerLink.from_environ` reads it). A worker writes :data:`READY_LINE` to its stdout once
it listens; the supervisor forwards any other stdout line. Workers run in a session of their own
(a Ctrl-C in the terminal reaches the supervisor only, which forwards one SIGTERM) and ask the
kernel for a SIGTERM should the supervisor die (``PR_SET_PDEATHSIG``): they drain rather than run
on unsupervised.

The supervisor restarts a worker that dies, at once the first time and with a growing delay
when it keeps dying young, and logs why (its exit status or the signal that killed it) with the
number of calls it had: those calls are lost, the other workers' calls never notice. SIGTERM (or
Ctrl-C) drains: every worker gets SIGTERM, stops listening and lets its calls end; the
supervisor exits once they all have.

Workers share a small table in a memory-mapped file (:class:`SharedState`): per worker its pid,
calls in progress, call cap, whether it drains, and how often its slot was restarted. Any worker
can so answer for the whole process: ``/readyz`` is 200 while some worker can take a call, and
``/metrics`` is the text of every worker, each sample labelled ``worker="i"``: the worker that
gets the scrape asks the others over Unix sockets in the shared directory
(:meth:`WorkerLink.metrics`). A restarted worker starts its counters from zero under the same
label, which Prometheus' ``rate()`` and ``increase()`` read as a counter reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .errors import PipelineError, UsageError
from .signals import stop_signals

log = structlog.get_logger("pipeline.workers")

ENV_WORKER = "PIPELINE_WORKER"  # "i/N"
ENV_DIR = "PIPELINE_WORKER_DIR"  # the shared directory: state file, metrics sockets
ENV_LISTEN = "PIPELINE_LISTEN"  # "host:port" the workers bind (SO_REUSEPORT)
ENV_LISTEN_FD = "PIPELINE_LISTEN_FD"  # an inherited listening socket instead
READY_LINE = "pipeline-worker-ready"
STATE_FILE = "state"
BACKLOG = 1024

# ---------------------------------------------------------------------------- sockets


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def reuse_port_works() -> bool:
    """Whether the kernel lets sockets share a port with SO_REUSEPORT."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        return False
    return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_socket(host: str, port: int, *, reuse_port: bool, listen: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (SO_REUSEADDR, and SO_REUSEPORT if asked), listening
    if asked. Raises OSError (address in use, permission) for the caller to report."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)


# ---------------------------------------------------------------------------- shared state

_FIELDS = ("pid", "active", "max_calls", "draining", "restarts", "started_ns")
_WIDTH = len(_FIELDS)


@dataclass(frozen=True, slots=True)
class Slot:
    """One worker's line of the shared table."""

    index: int
    pid: int
    active: int
    max_calls: int
    draining: bool
    restarts: int
    started_ns: int

    @property
    def alive(self) -> bool:
        return self.pid != 0

    @property
    def can_take_call(self) -> bool:
        return self.alive and not self.draining and self.active < self.max_calls


class SharedState:
    """A table of int64 in a memory-mapped file, one row per worker (:data:`_FIELDS`). Each
    worker writes only its own row; the supervisor clears a row when its worker dies. Single
    aligned 8-byte stores: a reader sees each field old or new, never torn."""

    def __init__(self, path: Path, workers: int, *, create: bool) -> None:
        self.path = path
        self.workers = workers
        size = workers * _WIDTH * 8
        if create:
            path.write_bytes(b"\0" * size)
        self._file = open(path, "r+b")  # noqa: SIM115 (kept open with the map)
        self._map = mmap.mmap(self._file.fileno(), size)
        self._cells = memoryview(self._map).cast("q")

    def get(self, i: int) -> Slot:
        base = i * _WIDTH
        row = self._cells[base : base + _WIDTH].tolist()
        return Slot(i, row[0], row[1], row[2], bool(row[3]), row[4], row[5])

    def slots(self) -> list[Slot]:
        return [self.get(i) for i in range(self.workers)]

    def set(self, i: int, **values: int) -> None:
        base = i * _WIDTH
        for name, value in values.items():
            self._cells[base + _FIELDS.index(name)] = int(value)

    def total_active(self) -> int:
        return sum(s.active for s in self.slots() if s.alive)

    def close(self) -> None:
        self._cells.release()
        self._map.close()
        self._file.close()


# ---------------------------------------------------------------------------- a worker's view


def merge_metrics(texts: Mapping[int, str], extra: Iterable[Any] = ()) -> bytes:
    """Prometheus text of several workers as one exposition: every sample gets the label
    ``worker="i"``; families of the same name are merged. ``extra``: more metric families
    (already labelled) to add."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, Any] = {}
    for worker, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(
                    fam.name, fam.documentation, fam.type, fam.unit
                )
            label = str(worker)
            merged.samples.extend(
                Sample(s.name, {**s.labels, "worker": label}, s.value, s.timestamp, s.exemplar)
                for s in fam.samples
            )
    for fam in extra:
        families[fam.name] = fam

    class _Merged:
        def collect(self) -> list[Any]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return bytes(generate_latest(registry))


@dataclass
class WorkerLink:
    """What a worker process knows about its pool: its index, the pool size, the shared table
    and directory, and where to listen. ``pipeline serve`` builds one from the environment the
    supervisor set (:meth:`from_environ`) and hands it to its server."""

    index: int
    count: int
    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    listen_fd: int | None = None
    state: SharedState = field(init=False)
    _metrics_server: asyncio.AbstractServer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.state = SharedState(self.directory / STATE_FILE, self.count, create=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerLink | None:
        """The link of a worker started by a :class:`Supervisor`; None in a lone server."""
        env = os.environ if environ is None else environ
        spec = env.get(ENV_WORKER)
        if not spec:
            return None
        index, count = (int(x) for x in spec.split("/"))
        host, _, port = env.get(ENV_LISTEN, "127.0.0.1:0").rpartition(":")
        fd = env.get(ENV_LISTEN_FD)
        return cls(
            index,
            count,
            Path(env[ENV_DIR]),
            host=host.strip("[]"),
            port=int(port),
            listen_fd=int(fd) if fd else None,
        )

    def listening_socket(self) -> socket.socket:
        """This worker's listening socket: the inherited one, or its own SO_REUSEPORT socket."""
        if self.listen_fd is not None:
            sock = socket.socket(fileno=self.listen_fd)
            sock.setblocking(False)
            return sock
        return bind_socket(self.host, self.port, reuse_port=True, listen=True)

    def started(self, max_calls: int) -> None:
        """Claim the slot: this pid, no calls yet, ``max_calls`` the cap."""
        self.state.set(
            self.index,
            pid=os.getpid(),
            active=0,
            max_calls=max_calls,
            draining=0,
            started_ns=time.time_ns(),
        )

    def set_active(self, n: int) -> None:
        self.state.set(self.index, active=n)

    def set_draining(self) -> None:
        self.state.set(self.index, draining=1)

    def pool_ready(self) -> bool:
        """True while some worker of the pool can take a call."""
        return any(s.can_take_call for s in self.state.slots())

    def pool(self) -> list[Slot]:
        return self.state.slots()

    def _socket_path(self, i: int) -> str:
        return str(self.directory / f"metrics-{i}.sock")

    async def serve_metrics(self, text: Callable[[], bytes]) -> None:
        """Answer the other workers' metrics requests: each connection gets ``text()``."""

        async def answer(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(text())
                await writer.drain()
            finally:
                writer.close()

        path = self._socket_path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._metrics_server = await asyncio.start_unix_server(answer, path)

    async def metrics(self, own: bytes, timeout_s: float = 2.0) -> bytes:
        """Every live worker's metrics as one exposition (``worker`` label on each sample),
        plus ``pipeline_worker_up`` and ``pipeline_worker_restarts_total`` per worker. A worker
        that does not answer within ``timeout_s`` is left out (and shows as up=0)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        texts: dict[int, str] = {self.index: own.decode()}
        slots = self.state.slots()

        async def fetch(i: int) -> None:
            reader, writer = await asyncio.open_unix_connection(self._socket_path(i))
            try:
                texts[i] = (await reader.read()).decode()
            finally:
                writer.close()

        async def fetch_quietly(i: int) -> None:
            with contextlib.suppress(OSError, TimeoutError, UnicodeDecodeError):
                async with asyncio.timeout(timeout_s):
                    await fetch(i)

        await asyncio.gather(
            *(fetch_quietly(s.index) for s in slots if s.alive and s.index != self.index)
        )
        up = GaugeMetricFamily(
            "pipeline_worker_up",
            "1 for a worker whose metrics are in this scrape, 0 for one dead or not answering",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "pipeline_worker_restarts",
            "Times the supervisor started a worker again after it died",
            labels=["worker"],
        )
        for s in slots:
            up.add_metric([str(s.index)], 1.0 if s.index in texts else 0.0)
            restarts.add_metric([str(s.index)], float(s.restarts))
        return merge_metrics(texts, [up, restarts])

    async def close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
            self._metrics_server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path(self.index))


# ---------------------------------------------------------------------------- the supervisor


def describe_exit(returncode: int) -> str:
    """'exited with status 3' or 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class SupervisorError(PipelineError):
    """The pool could not start (a worker died before it listened, or the port is taken)."""


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    ready: asyncio.Event
    started: float
    pump: asyncio.Task[None]


class Supervisor:
    """Starts ``workers`` copies of ``command`` on one port, restarts those that die, drains
    them all on SIGTERM. ``await run()`` returns the exit code (0 after a clean drain).

    ``command`` is the worker's argv (``pipeline serve`` passes its own); each worker finds the
    pool in its environment (:meth:`WorkerLink.from_environ`)."""

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        reuse_port: bool | None = None,
        env: Mapping[str, str] | None = None,
        young_s: float = 10.0,
        max_young_deaths: int = 5,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        self.command = list(command)
        self.count = workers
        self.host = host
        self.port = port
        self.reuse_port = reuse_port_works() if reuse_port is None else reuse_port
        self.env = dict(os.environ if env is None else env)
        self.young_s = young_s
        self.max_young_deaths = max_young_deaths
        self.announce = announce or (lambda line: print(line, file=sys.stderr, flush=True))
        self.workers: dict[int, _Worker] = {}
        self.young_deaths: dict[int, int] = {}
        self.stopping = False
        self.url = ""
        self.directory = Path()
        self.state: SharedState | None = None
        self._socket: socket.socket | None = None
        self.restarts = 0
        self._watches: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._restarted = asyncio.Event()

    # -- starting

    def _open_socket(self) -> None:
        # SO_REUSEPORT: a bound socket that never listens reserves the port (and resolves
        # port 0); inherited: the one listening socket every worker accepts on
        self._socket = bind_socket(
            self.host, self.port, reuse_port=self.reuse_port, listen=not self.reuse_port
        )
        self.port = int(self._socket.getsockname()[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"ws://{shown}:{self.port}"

    async def _spawn(self, i: int) -> _Worker:
        assert self._socket is not None
        env = dict(self.env)
        env[ENV_WORKER] = f"{i}/{self.count}"
        env[ENV_DIR] = str(self.directory)
        env[ENV_LISTEN] = f"{self.host}:{self.port}"
        pass_fds: tuple[int, ...] = ()
        if not self.reuse_port:
            env[ENV_LISTEN_FD] = str(self._socket.fileno())
            pass_fds = (self._socket.fileno(),)
        else:
            env.pop(ENV_LISTEN_FD, None)
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        ready = asyncio.Event()
        pump = asyncio.create_task(self._pump(proc, ready), name=f"worker {i} stdout")
        w = _Worker(i, proc, ready, time.monotonic(), pump)
        self.workers[i] = w
        watch = asyncio.create_task(self._watch(w), name=f"worker {i} watch")
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        return w

    async def _pump(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if line.strip() == READY_LINE.encode():
                ready.set()
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    async def _watch(self, w: _Worker) -> None:
        await w.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await w.pump
        self._changed.set()

    # -- running

    def request_stop(self) -> None:
        """Drain: SIGTERM to every worker (again on a second call: they then cancel at once)."""
        first = not self.stopping
        self.stopping = True
        self._stop.set()
        if self.state is not None and first:
            for i in range(self.count):
                self.state.set(i, draining=1)
        for w in self.workers.values():
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)

    async def start(self) -> None:
        """Open the socket, start every worker, wait until all of them listen."""
        self.directory = Path(tempfile.mkdtemp(prefix="pipeline-workers-"))
        self.state = SharedState(self.directory / STATE_FILE, self.count, create=True)
        try:
            self._open_socket()
        except OSError as exc:
            raise SupervisorError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        for i in range(self.count):
            await self._spawn(i)
        for w in list(self.workers.values()):
            await self._wait_ready(w)

    async def _wait_ready(self, w: _Worker) -> None:
        exited = asyncio.ensure_future(w.proc.wait())
        ready = asyncio.ensure_future(w.ready.wait())
        try:
            await asyncio.wait([exited, ready], return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            ready.cancel()
        if not w.ready.is_set():
            code = await w.proc.wait()
            raise SupervisorError(f"worker {w.index} {describe_exit(code)} before it listened")

    async def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT (or :meth:`request_stop`), drain. Returns 0
        when every worker drained cleanly, 1 otherwise, 2 if the pool could not start."""
        with stop_signals(self.request_stop):
            try:
                try:
                    await self.start()
                except SupervisorError as exc:
                    log.error("workers did not start", error=str(exc))
                    return 2
                self.announce(f"pipeline serve: listening on {self.url} ({self.count} workers)")
                log.info(
                    "workers started",
                    url=self.url,
                    workers=self.count,
                    socket="SO_REUSEPORT" if self.reuse_port else "inherited",
                    pids=[w.proc.pid for w in self.workers.values()],
                )
                return await self._supervise()
            finally:
                await self._shutdown()

    async def _supervise(self) -> int:
        while True:
            if self.stopping:
                return await self._drain()
            self._changed.clear()
            for w in list(self.workers.values()):
                dead = w.proc.returncode is not None and not self.stopping
                if dead and not await self._restart(w):
                    self.request_stop()
                    await self._drain()
                    return 1
            if self.stopping:
                continue
            stop = asyncio.ensure_future(self._stop.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait([stop, changed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                changed.cancel()

    async def _restart(self, w: _Worker) -> bool:
        assert self.state is not None and w.proc.returncode is not None
        slot = self.state.get(w.index)
        lived = time.monotonic() - w.started
        young = self.young_deaths[w.index] = (
            self.young_deaths.get(w.index, 0) + 1 if lived < self.young_s else 0
        )
        log.error(
            "worker died",
            worker=w.index,
            pid=w.proc.pid,
            reason=describe_exit(w.proc.returncode),
            calls_lost=slot.active if slot.pid == w.proc.pid else 0,
            lived_s=round(lived, 1),
        )
        self.state.set(w.index, pid=0, active=0, draining=0, restarts=slot.restarts + 1)
        if young >= self.max_young_deaths:
            log.error(
                "worker keeps dying; stopping",
                worker=w.index,
                deaths=young,
                within_s=self.young_s,
                fix="see the worker's last log lines above for the cause",
            )
            return False
        if young > 1:  # dying young again: back off (0.2, 0.4, 0.8 ... 5 s)
            await asyncio.sleep(min(5.0, 0.1 * 2 ** (young - 1)))
            if self.stopping:
                return True
        new = await self._spawn(w.index)
        log.info("worker restarted", worker=w.index, pid=new.proc.pid)
        self.restarts += 1
        self._restarted.set()
        return True

    async def wait_restarts(self, n: int) -> None:
        """Wait until ``n`` workers have been started again after dying (tests, embedding);
        bound it with ``asyncio.timeout``."""
        while self.restarts < n:
            self._restarted.clear()
            await self._restarted.wait()

    async def _drain(self) -> int:
        log.info("draining workers", workers=len(self.workers))
        codes = await asyncio.gather(*(w.proc.wait() for w in self.workers.values()))
        bad = {w.index: c for w, c in zip(self.workers.values(), codes, strict=True) if c != 0}
        if bad:
            log.warning(
                "workers ended badly",
                workers={i: describe_exit(c) for i, c in bad.items()},
            )
        log.info("workers stopped")
        return 1 if bad else 0

    async def _shutdown(self) -> None:
        for w in self.workers.values():
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            w.pump.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.directory != Path():
            shutil.rmtree(self.directory, ignore_errors=True)
