"""The playground in a real headless Chromium: a recorded caller speaks into the page through
Chromium's fake microphone, the emulator answers, and the page plays the reply.

Every wait is on the page's state (``window.pipelineStats``) or the server's (its tab count),
with a timeout; nothing sleeps. The conversation itself runs in real time (the browser's audio
clock), so the test lasts as long as the caller takes to say two sentences."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog

from pipeline.config import load
from stages.browser.server import run_playground

from .chromium import (
    ROOT,
    SCREENSHOTS,
    browser_flags,
    caller_wav,
    chromium_path,
    require_playwright,
)

TIMEOUT_MS = 30_000
STATS = "window.pipelineStats"


async def stats(page: Any) -> dict[str, Any]:
    out: dict[str, Any] = await page.evaluate(
        f"JSON.parse(JSON.stringify({STATS}, (k, v) => k === 'li' ? undefined : v))"
    )
    return out


async def wait_for(page: Any, condition: str) -> None:
    """Wait until ``condition`` (JavaScript, ``s`` is pipelineStats) holds in the page: checked
    now and on each ``pipelinestats`` event the page fires. (The page's Content-Security-Policy
    forbids eval, so Playwright's ``wait_for_function`` cannot run in it.)"""
    script = f"""() => new Promise((resolve) => {{
        const check = () => {{
            const s = {STATS};
            if (!({condition})) return;
            window.removeEventListener("pipelinestats", check);
            resolve(true);
        }};
        window.addEventListener("pipelinestats", check);
        check();
    }})"""
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        await page.evaluate(script)


def test_a_conversation_in_chromium(tmp_path: Path) -> None:
    exe = chromium_path()
    require_playwright()
    from playwright.async_api import async_playwright

    wav = caller_wav(tmp_path / "caller.wav")
    pipeline = load(ROOT / "pipelines.yaml", "browser")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def main() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        async with (
            run_playground(pipeline, hangup_grace_s=10.0) as server,
            async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(
                executable_path=exe, args=browser_flags(wav), headless=True
            )
            try:
                a = await browser.new_page(viewport={"width": 1280, "height": 720})
                b = await browser.new_page(viewport={"width": 1280, "height": 720})
                await a.goto(server.page_url(autostart="1"))
                await b.goto(server.page_url(autostart="1"))
                async with asyncio.timeout(TIMEOUT_MS / 1000):
                    await server.wait_active(2)
                # the first turn: transcript, tool call with its result, the reply playing
                await wait_for(
                    a,
                    "s.turns.length >= 1 && s.tool_calls.some((c) => c.result !== null) "
                    "&& s.played_ms > 300",
                )
                # the caller's second sentence starts while the reply plays: barge-in
                await wait_for(a, "s.barge_ins.length >= 1")
                await a.screenshot(path=str(SCREENSHOTS / "playground.png"))
                assistant = await a.inner_text("#conversation li.assistant")
                stats_a = await stats(a)

                # hang up tab A: its pipeline ends, tab B goes on
                await a.click("#hangup")
                async with asyncio.timeout(TIMEOUT_MS / 1000):
                    await server.wait_active(1)
                sent = (await stats(b))["sent_ms"]
                await wait_for(b, f"s.state === 'live' && s.sent_ms > {sent + 500}")
                await wait_for(b, "s.turns.length >= 1")
                await b.screenshot(path=str(SCREENSHOTS / "playground-second-tab.png"))
                stats_b = await stats(b)
                await b.click("#hangup")
                async with asyncio.timeout(TIMEOUT_MS / 1000):
                    await server.wait_active(0)
                await wait_for(a, "s.state === 'ended'")
                stats_a["assistant_text"] = assistant
                return stats_a, stats_b, list(server.summaries)
            finally:
                await browser.close()

    with structlog.testing.capture_logs() as logs:
        stats_a, stats_b, summaries = asyncio.run(main())

    # the page: transcripts, the tool call and its result, the reply played
    assert {"role": "user", "text": "What time is it in Tokyo?"} in stats_a["transcripts"]
    call = stats_a["tool_calls"][0]
    assert call["name"] == "get_time"
    assert call["arguments"] == '{"city":"Tokyo"}'
    assert "in Tokyo" in call["result"]
    assert stats_a["assistant_text"].startswith("assistant\nget_time says: It is")
    assert stats_a["errors"] == []
    assert stats_a["received_ms"] > 300
    assert stats_a["played_ms"] > 300

    # per-turn latency, with the VAD's wait (hangover 400 ms) apart from the rest
    turn = stats_a["turns"][0]
    assert turn["latency_ms"] == pytest.approx(turn["vad_ms"] + turn["reply_ms"], abs=1)
    assert 300 < turn["vad_ms"] < 2000
    assert 0 <= turn["reply_ms"] < 2000

    # barge-in: the page stopped playing within 150 ms of the speech onset the VAD reported,
    # and the session truncated the reply at what the page had played
    barge = stats_a["barge_ins"][0]
    assert 0 < barge["after_onset_ms"] <= 150, barge
    truncations = [e for e in logs if e["event"] == "barge-in: interrupting the assistant"]
    assert truncations, "the session logged no barge-in"
    session_ms = truncations[0]["played_ms"]
    assert 0 <= barge["heard_ms"] - session_ms <= 80, (barge, session_ms)

    # both tabs ran their own pipeline to the end; the second kept talking after the first hung up
    assert stats_b["turns"]
    assert [s.status for s in summaries] == ["completed", "completed"]
    for summary in summaries:
        assert summary.stage("speaker").reports["samples_sent"] > 0
    assert summaries[0].stage("speaker").reports["clears_sent"] >= 1
    assert (SCREENSHOTS / "playground.png").stat().st_size > 10_000
