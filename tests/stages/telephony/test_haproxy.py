"""Three ``pipeline serve`` processes behind a real HAProxy (leastconn, health checks on
/readyz), driven by the call simulator over loopback (benchmarks/lb.py): 150 calls ramped over
30 s all complete and spread evenly; past the total capacity calls are refused cleanly; SIGTERM
to one backend mid-load drops no call; kill -9 of another loses only its own calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmarks import lb


@pytest.mark.skipif(
    lb.haproxy_binary() is None,
    reason="haproxy is not installed (Debian: apt-get install haproxy; .ci/run does)",
)
def test_three_backends_behind_haproxy(tmp_path: Path) -> None:
    out = asyncio.run(lb.scenario(tmp_path))

    # 1. the ramp: every call complete, every byte echoed in order, every mark echoed
    ramp: lb.Part = out["ramp"]
    assert len(ramp.records) == 150
    for r in ramp.records:
        assert r.ok, r.summary()
        assert bytes(r.received_audio) == out["ramp_audio"] and r.echoed == r.marks
    shares = out["ramp_shares"]
    assert sum(shares.values()) == 150
    for name, n in shares.items():  # within ±15 % of an even share (50)
        assert 42.5 <= n <= 57.5, (name, shares)

    # 2. past capacity: as many as fit complete; the rest are refused at the upgrade with
    # HTTP 503, or (two calls racing for a backend's last place) closed with 1013 'busy'
    cap: lb.Part = out["capacity"]
    complete = [r for r in cap.records if r.ok]
    refused = [r for r in cap.records if not r.ok]
    assert len(complete) == out["capacity_total"] == 60
    assert len(refused) == len(cap.records) - 60 == 6
    for r in complete:
        assert bytes(r.received_audio) == out["capacity_audio"]
    for r in refused:
        assert r.refused == "HTTP 503" or r.close_code == 1013, r.summary()
        assert not r.received_audio

    # 3. SIGTERM to s0, kill -9 to s1, mid-load
    fail: lb.Part = out["failure"]
    before, after = out["failure_before"], out["failure_after"]
    s0, s1, s2 = after["s0"], after["s1"], after["s2"]
    assert before["s0"] and before["s1"] and before["s2"]  # each had calls in progress
    assert s1 == before["s1"]  # nothing reached the killed backend after the kill
    assert not (s0 - before["s0"])  # nor the draining one after SIGTERM
    assert {r.call_sid for r in fail.records} == s0 | s1 | s2  # every call landed somewhere
    audio = out["failure_audio"]
    for r in fail.records:
        if r.call_sid in s1:  # lost with its backend, cut off but never garbled
            assert not r.ok and r.close_code != 1000
            assert bytes(r.received_audio) == audio[: len(r.received_audio)] != audio
        else:  # s0 drained its calls; s2 took every new one; no gap, no lost byte
            assert r.ok, r.summary()
            assert bytes(r.received_audio) == audio and r.echoed == r.marks
    assert out["s0_exit"] == 0  # drained and exited cleanly
    assert out["s1_exit"] == -9
