"""``pipeline serve --workers 2``: one port, two worker processes; /readyz, /healthz and
/metrics answer for the pool; a worker killed during calls loses only its own calls and is
started again; SIGTERM drains every worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

from benchmarks.callsim import CallRecord, run_call
from tests.stages.telephony.test_serve import LOOP_YAML, http_get, serve_subprocess

AUDIO = bytes(range(256)) * 5  # 8 frames of 20 ms
LONG = AUDIO * 40  # 6.4 s: calls outlive the crash and the restart


def _active(text: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'pipeline_calls_active\{worker="(\d+)"\} (\S+)', text)
    }


def test_worker_crash_loses_only_its_calls_and_sigterm_drains_all(tmp_path: Path) -> None:
    with serve_subprocess(LOOP_YAML, tmp_path, "--workers", "2", "--max-calls", "20") as (
        proc,
        port,
        lines,
    ):
        started = json.loads(lines.wait_for(r'^\{.*"event": ?"workers started".*\}$').group(0))
        assert started["socket"] in ("SO_REUSEPORT", "inherited")
        pids = started["pids"]
        url = f"ws://127.0.0.1:{port}/media"

        async def main() -> tuple[list[CallRecord], list[CallRecord], str]:
            status, _, body = await http_get(port, "/readyz")
            ready = json.loads(body)
            assert status == 200 and ready["ready"] is True
            assert (ready["pool_active_calls"], ready["pool_max_calls"]) == (0, 40)
            status, _, body = await http_get(port, "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"

            # calls until both workers have some (the kernel picks the worker)
            calls: list[asyncio.Task[CallRecord]] = []
            async with asyncio.timeout(60):
                for i in range(20):
                    heard = asyncio.Event()
                    sid = f"{i:032d}"
                    calls.append(
                        asyncio.create_task(
                            run_call(
                                url,
                                LONG,
                                call_sid="CA" + sid,
                                stream_sid="MZ" + sid,
                                heard=heard,
                                quiet_s=0.15,
                                tail_s=3.0,
                            )
                        )
                    )
                    await heard.wait()
                    active = _active((await http_get(port, "/metrics"))[2])
                    if len(calls) >= 4 and all(active.get(w, 0) >= 1 for w in ("0", "1")):
                        break
            metrics = (await http_get(port, "/metrics"))[2]
            active = _active(metrics)
            assert sum(active.values()) == len(calls)
            assert 'pipeline_worker_up{worker="1"} 1.0' in metrics

            os.kill(pids[1], signal.SIGKILL)  # worker 1 dies with its calls
            died = await lines.wait_for_async(r'^\{.*"event": ?"worker died".*\}$')
            await lines.wait_for_async(r'"event": ?"worker restarted"')
            records = await asyncio.gather(*calls)

            # after the restart both workers take calls again; SIGTERM mid-call drains them
            heard = asyncio.Event()
            late = [
                asyncio.create_task(
                    run_call(
                        url,
                        AUDIO * 15,
                        call_sid=f"CAlate{i}",
                        stream_sid=f"MZlate{i}",
                        heard=heard if i == 0 else None,
                        quiet_s=0.15,
                        tail_s=3.0,
                    )
                )
                for i in range(6)
            ]
            async with asyncio.timeout(30):
                await heard.wait()
            proc.send_signal(signal.SIGTERM)
            return records, list(await asyncio.gather(*late)), died.group(0)

        records, late, died_line = asyncio.run(main())
        assert proc.wait(timeout=30) == 0
    died = json.loads(died_line)
    assert died["worker"] == 1 and died["pid"] == pids[1]
    assert died["reason"] == "killed by SIGKILL"
    lost = [r for r in records if not r.ok]
    kept = [r for r in records if r.ok]
    assert len(lost) == died["calls_lost"] >= 1
    assert len(kept) == len(records) - len(lost) >= 1
    for r in kept:  # the other worker's calls: every byte back, in order, every mark echoed
        assert bytes(r.received_audio) == LONG and r.echoed == r.marks
    for r in lost:  # cut off, never garbled
        assert r.close_code != 1000
        assert bytes(r.received_audio) == LONG[: len(r.received_audio)]
    for r in late:  # SIGTERM drained: the calls in progress finished
        assert r.ok and bytes(r.received_audio) == AUDIO * 15


def test_workers_drain_when_the_supervisor_dies(tmp_path: Path) -> None:
    """kill -9 of the supervisor: its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
    and drain, rather than run on unsupervised."""
    with serve_subprocess(LOOP_YAML, tmp_path, "--workers", "2") as (proc, _port, lines):
        lines.wait_for(r'"event": ?"workers started"')
        proc.kill()
        proc.wait(timeout=10)
        # both workers log 'stopped' once drained (stderr is theirs too, still open)
        lines.wait_for(r'"event": ?"stopped".*"worker": ?0|"worker": ?0.*"event": ?"stopped"')
        lines.wait_for(r'"event": ?"stopped".*"worker": ?1|"worker": ?1.*"event": ?"stopped"')
