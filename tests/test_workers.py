"""The worker pool under ``pipeline serve --workers``: the shared table, merged metrics, and a
supervisor running real worker processes on one port (SO_REUSEPORT and inherited socket)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from pipeline.workers import (
    SharedState,
    Supervisor,
    describe_exit,
    merge_metrics,
    reuse_port_works,
)

ROOT = Path(__file__).resolve().parents[1]

# A worker as small as can be: listens where the pool says, answers "INDEX PID" and hangs up;
# SIGTERM stops it (exit 0). It claims its slot with a cap of 10 calls.
WORKER = """
import asyncio, os, signal
from pipeline.workers import READY_LINE, WorkerLink

async def main():
    link = WorkerLink.from_environ()
    sock = link.listening_socket()
    link.started(10)

    async def handle(reader, writer):
        writer.write(f"{link.index} {os.getpid()}\\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(READY_LINE, flush=True)
    await stop.wait()
    server.close()

asyncio.run(main())
"""


def test_shared_state_rows(tmp_path: Path) -> None:
    a = SharedState(tmp_path / "state", 3, create=True)
    b = SharedState(tmp_path / "state", 3, create=False)  # another process's view
    a.set(1, pid=42, active=7, max_calls=10)
    a.set(2, pid=43, active=10, max_calls=10)
    s = b.get(1)
    assert (s.pid, s.active, s.max_calls, s.draining, s.alive, s.can_take_call) == (
        42, 7, 10, False, True, True,
    )  # fmt: skip
    assert b.get(2).can_take_call is False  # at its cap
    assert b.get(0).alive is False
    assert b.total_active() == 17
    a.set(1, draining=1)
    assert b.get(1).can_take_call is False
    a.close()
    b.close()


def test_merge_metrics_labels_every_sample_with_its_worker() -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    texts = {}
    for w, n in ((0, 2), (1, 5)):
        r = CollectorRegistry()
        Gauge("pipeline_calls_active", "Calls in progress", registry=r).set(n)
        Counter("pipeline_calls", "Calls ended", ["outcome"], registry=r).labels("completed").inc(
            n * 10
        )
        texts[w] = generate_latest(r).decode()
    text = merge_metrics(texts).decode()
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert 'pipeline_calls_active{worker="0"} 2.0' in lines
    assert 'pipeline_calls_active{worker="1"} 5.0' in lines
    assert 'pipeline_calls_total{outcome="completed",worker="0"} 20.0' in lines
    assert 'pipeline_calls_total{outcome="completed",worker="1"} 50.0' in lines
    assert text.count("# TYPE pipeline_calls_active gauge") == 1


def test_describe_exit() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


async def _ask(port: int) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = (await reader.readline()).decode().split()
    writer.close()
    return int(line[0]), int(line[1])


@pytest.mark.parametrize(
    "reuse_port",
    [
        pytest.param(
            True,
            marks=pytest.mark.skipif(not reuse_port_works(), reason="no SO_REUSEPORT here"),
        ),
        False,
    ],
    ids=["reuseport", "inherited"],
)
def test_supervisor_spreads_restarts_and_drains(tmp_path: Path, reuse_port: bool) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    lines: list[str] = []

    async def main() -> int:
        announced = asyncio.Event()

        def announce(line: str) -> None:  # once every worker listens
            lines.append(line)
            announced.set()

        sup = Supervisor(
            [sys.executable, str(script)], 2, port=0, reuse_port=reuse_port, env=env,
            announce=announce,
        )  # fmt: skip
        run = asyncio.create_task(sup.run())
        async with asyncio.timeout(30):
            await announced.wait()
            assert lines == [f"pipeline serve: listening on {sup.url} (2 workers)"]
            seen: dict[int, int] = {}
            # the kernel (or whichever loop is free) spreads connections: ask until both have
            # answered (a worker still busy starting can miss many turns on a loaded machine;
            # the 30 s timeout above fails a worker that never answers)
            while len(seen) < 2:
                index, pid = await _ask(sup.port)
                seen[index] = pid
            assert sorted(seen) == [0, 1]
            assert sup.state is not None
            assert [s.pid for s in sup.state.slots()] == [seen[0], seen[1]]
            # one worker dies: it is started again in its slot, the other keeps its pid
            os.kill(seen[1], signal.SIGKILL)
            await sup.wait_restarts(1)
            new = sup.workers[1]
            await new.ready.wait()
            assert new.proc.pid != seen[1] and sup.workers[0].proc.pid == seen[0]
            assert sup.state.get(1).restarts == 1
            pids = set()
            for _ in range(60):
                pids.add(await _ask(sup.port))
                if (1, new.proc.pid) in pids:
                    break
            assert (1, new.proc.pid) in pids
            sup.request_stop()
            return await run

    assert asyncio.run(main()) == 0
