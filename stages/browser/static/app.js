// The playground page: microphone -> server -> speaker, and what happens in between.
// window.pipelineStats is kept current for automation (see docs/playground.md).
import { drawGraph, updateGraph } from "./graph.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CHUNK_MS = 20;

const stats = {
  state: "idle", sent_ms: 0, received_ms: 0, played_ms: 0, level_db: null, muted: false, audio: "none",
  turns: [], transcripts: [], tool_calls: [], errors: [], barge_ins: [], links: {},
};
window.pipelineStats = stats;
// Fired on window whenever pipelineStats may have changed, so automation can wait on it.
const changed = () => window.dispatchEvent(new Event("pipelinestats"));

let ws = null, mic = null, capture = null, playback = null, hello = null;
let captureNode = null, playbackNode = null, graphLabels = {};
let sentSamples = 0, receivedSamples = 0, muted = false;
let timeline = [];          // [sample index, performance time] of each captured chunk
let newReply = false;       // a response started and none of its audio has played yet
let replyStart = 0;         // play position where the current reply began (samples received before it)
let pendingTurn = null;     // the user's last end of speech, waiting for the reply to play
let lastOnset = null;       // the user's last start of speech
const bubbles = new Map();  // item id -> element of a transcript being spoken

function setState(s) {
  stats.state = s;
  $("state").textContent = s;
  $("state").dataset.state = s;
  $("start").disabled = s === "connecting" || s === "live";
  $("mute").disabled = $("hangup").disabled = s !== "live";
}

// When a context frame is heard: performance.now() time at which the output device plays it.
function heardAt(ctx, frame) {
  const ts = ctx.getOutputTimestamp();
  if (!ts.performanceTime) return performance.now() + (frame / ctx.sampleRate - ctx.currentTime) * 1000 + outputLatency(ctx);
  return ts.performanceTime + (frame / ctx.sampleRate - ts.contextTime) * 1000;
}

// When a context frame is rendered (processed by the worklets): its output latency earlier.
function renderedAt(ctx, frame) {
  return heardAt(ctx, frame) - outputLatency(ctx);
}

function outputLatency(ctx) {
  return (ctx.outputLatency || ctx.baseLatency || 0) * 1000;
}

// performance.now() at which the sample at media time pts (seconds) was captured.
function capturedAt(pts) {
  const index = pts * hello.capture_rate;
  let lo = 0, hi = timeline.length - 1;
  if (hi < 0) return null;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (timeline[mid][0] <= index) lo = mid; else hi = mid - 1;
  }
  const [i0, t0] = timeline[lo];
  return t0 + ((index - i0) / hello.capture_rate) * 1000;
}

function note(text, kind = "note") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("conversation").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function transcript(ev) {
  let li = bubbles.get(ev.item_id);
  if (!li) {
    li = note("", ev.role);
    li.append(Object.assign(document.createElement("span"), { className: "role", textContent: ev.role }));
    li.append(document.createElement("span"));
    if (ev.item_id) bubbles.set(ev.item_id, li);
  }
  const text = li.lastChild;
  if (ev.final) {
    text.textContent = ev.text;
    li.classList.remove("partial");
    bubbles.delete(ev.item_id);
    stats.transcripts.push({ role: ev.role, text: ev.text });
  } else {
    text.textContent += ev.text;
    li.classList.add("partial");
  }
}

function onEvent(ev) {
  switch (ev.type) {
    case "transcript": transcript(ev); break;
    case "tool_call": {
      const li = note(`${ev.name}(${ev.arguments})`, "tool");
      stats.tool_calls.push({ call_id: ev.call_id, name: ev.name, arguments: ev.arguments, result: null, li });
      break;
    }
    case "tool_result": {
      const call = stats.tool_calls.find((c) => c.call_id === ev.call_id);
      if (call) {
        call.result = ev.output;
        call.li.textContent += ` → ${ev.output}`;
      } else note(`${ev.name} → ${ev.output}`, "tool");
      break;
    }
    case "error": stats.errors.push(`${ev.code}: ${ev.message}`); note(`${ev.code}: ${ev.message}`, "error"); break;
    case "speech_started":
      pendingTurn = null;
      if (ev.pts != null) lastOnset = { pts: ev.pts, at: capturedAt(ev.pts) };
      break;
    case "speech_stopped":
      if (ev.pts != null) pendingTurn = { end: capturedAt(ev.pts), heard: performance.now() };
      break;
    case "response_started":
      // its audio follows on this socket: it starts after every sample received so far, even
      // if earlier audio is still playing (so no "started" marks where it begins)
      newReply = true;
      replyStart = receivedSamples;
      break;
    case "interrupt": note("barge-in: the assistant stopped"); break;
  }
}

function addTurn(playedAt) {
  const t = pendingTurn;
  pendingTurn = null;
  if (!t || t.end == null) return;
  const turn = {
    latency_ms: Math.round(playedAt - t.end),
    vad_ms: Math.round(t.heard - t.end),
    reply_ms: Math.round(playedAt - t.heard),
  };
  stats.turns.push(turn);
  const row = document.createElement("tr");
  for (const v of [stats.turns.length, turn.latency_ms, turn.vad_ms, turn.reply_ms]) {
    row.append(Object.assign(document.createElement("td"), { textContent: typeof v === "number" && v !== stats.turns.length ? `${v} ms` : v }));
  }
  $("turns").tBodies[0].append(row);
}

function onPlayback(msg) {
  if (!playback) return;
  queueMicrotask(changed);
  const send = (m) => ws && ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));
  if (msg.played !== undefined) stats.played_ms = Math.round((msg.played / playback.sampleRate) * 1000);
  switch (msg.type) {
    case "started": {
      if (newReply) {
        newReply = false;
        addTurn(heardAt(playback, msg.frame));
      }
      send({ type: "played", position: msg.position });
      break;
    }
    case "position": case "idle": send({ type: "played", position: msg.position }); break;
    case "cleared": {
      send({ type: "played", position: msg.position, cleared: msg.dropped });
      const stop = renderedAt(playback, msg.frame);
      if (lastOnset && lastOnset.at != null && msg.dropped > 0) {
        const ms = (samples) => Math.round((samples / playback.sampleRate) * 1000);
        stats.barge_ins.push({
          onset_pts: lastOnset.pts,
          after_onset_ms: Math.round(stop - lastOnset.at),
          heard_after_onset_ms: Math.round(stop + outputLatency(playback) - lastOnset.at),
          heard_ms: ms(msg.position - replyStart),
          dropped_ms: ms(msg.dropped),
        });
      }
      break;
    }
  }
}

function onCapture(msg) {
  if (!capture || !ws || ws.readyState !== WebSocket.OPEN) return;
  queueMicrotask(changed);
  timeline.push([sentSamples, renderedAt(capture, msg.frame)]);
  if (timeline.length > 30000) timeline = timeline.slice(-15000);
  ws.send(msg.samples.buffer);
  sentSamples += msg.samples.length;
  stats.sent_ms = Math.round((sentSamples / capture.sampleRate) * 1000);
  stats.level_db = Number.isFinite(msg.level) ? Math.round(msg.level) : null;
  const pct = Number.isFinite(msg.level) ? Math.max(0, Math.min(100, (msg.level + 60) * (100 / 60))) : 0;
  $("level").style.width = `${pct}%`;
  $("level-text").textContent = Number.isFinite(msg.level) ? `${Math.round(msg.level)} dB` : "–∞ dB";
}

async function setUpAudio(h) {
  capture = new AudioContext({ sampleRate: h.capture_rate, latencyHint: "interactive" });
  playback = new AudioContext({ sampleRate: h.playback_rate, latencyHint: "interactive" });
  await Promise.all([capture.audioWorklet.addModule("capture-worklet.js"), playback.audioWorklet.addModule("playback-worklet.js")]);
  captureNode = new AudioWorkletNode(capture, "capture-processor", {
    numberOfOutputs: 1, processorOptions: { chunk: Math.round((capture.sampleRate * CHUNK_MS) / 1000) },
  });
  captureNode.port.onmessage = (e) => onCapture(e.data);
  const sink = capture.createGain();
  sink.gain.value = 0;
  capture.createMediaStreamSource(mic).connect(captureNode).connect(sink).connect(capture.destination);
  playbackNode = new AudioWorkletNode(playback, "playback-processor", {
    outputChannelCount: [1], processorOptions: { seconds: 120 },
  });
  playbackNode.onprocessorerror = () => fail("the audio player failed");
  captureNode.onprocessorerror = () => fail("the microphone capture failed");
  playbackNode.port.onmessage = (e) => onPlayback(e.data);
  playbackNode.connect(playback.destination);
  playback.onstatechange = () => { stats.audio = playback ? playback.state : "closed"; };
  await Promise.all([capture.resume(), playback.resume()]);
  stats.audio = playback.state;
  if (playback.state !== "running") note("audio is blocked by the browser: click Start");
}

function onMessage(e) {
  queueMicrotask(changed);
  if (typeof e.data !== "string") {
    const samples = new Int16Array(e.data);
    receivedSamples += samples.length;
    stats.received_ms = Math.round((receivedSamples / hello.playback_rate) * 1000);
    playbackNode.port.postMessage({ type: "audio", samples }, [samples.buffer]);
    return;
  }
  const msg = JSON.parse(e.data);
  switch (msg.type) {
    case "hello":
      hello = msg;
      $("pipeline-name").textContent = msg.pipeline + (msg.description ? ` — ${msg.description}` : "");
      graphLabels = drawGraph($("graph"), msg.graph);
      if (msg.vad) $("vad-note").textContent = `"VAD end" includes the VAD hangover (${msg.vad.hangover_ms} ms, stage ${msg.vad.stage}): the pause it waits for before it decides you have finished.`;
      setUpAudio(msg).then(() => {
        ws.send(JSON.stringify({ type: "start", rate: capture.sampleRate }));
        setState("live");
      }, (err) => fail(`audio: ${err.message}`));
      break;
    case "event": onEvent(msg.event); break;
    case "clear": playbackNode.port.postMessage({ type: "clear" }); break;
    case "stats":
      stats.links = msg.links;
      updateGraph(graphLabels, msg.links);
      $("counters").textContent = `sent ${(stats.sent_ms / 1000).toFixed(1)} s · received ${(stats.received_ms / 1000).toFixed(1)} s · played ${(stats.played_ms / 1000).toFixed(1)} s`;
      break;
    case "bye":
      if (msg.error) { stats.errors.push(msg.error); note(msg.error, "error"); }
      note(`the pipeline ended (${msg.status})`);
      break;
  }
}

function fail(text) {
  stats.errors.push(text);
  note(text, "error");
  stop("error");
}

// A new conversation: counters and pending measurements start afresh (the page keeps showing
// the earlier ones).
function reset() {
  sentSamples = receivedSamples = replyStart = 0;
  timeline = [];
  pendingTurn = lastOnset = null;
  newReply = muted = false;
  Object.assign(stats, { sent_ms: 0, received_ms: 0, played_ms: 0, level_db: null, muted: false });
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").textContent = "Mute";
  if (stats.turns.length || stats.transcripts.length) note("a new conversation");
}

async function start() {
  if (stats.state === "live" || stats.state === "connecting") return;
  reset();
  setState("connecting");
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    fail(`microphone: ${err.message}`);
    return;
  }
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = params.has("token") ? `?token=${encodeURIComponent(params.get("token"))}` : "";
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    if (stats.state === "live" || stats.state === "connecting") {
      if (e.code !== 1000) fail(`connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
      else stop("ended");
    }
  };
}

function stop(state) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "hangup" }));
  if (mic) mic.getTracks().forEach((t) => t.stop());
  if (playbackNode) playbackNode.port.postMessage({ type: "clear" });
  for (const ctx of [capture, playback]) if (ctx) ctx.close();
  capture = playback = mic = null;
  setState(state);
}

$("start").onclick = start;
$("hangup").onclick = () => stop("ended");
$("mute").onclick = () => {
  muted = !muted;
  stats.muted = muted;
  captureNode.port.postMessage({ muted });
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute" : "Mute";
};
if (params.get("autostart") === "1") start();
