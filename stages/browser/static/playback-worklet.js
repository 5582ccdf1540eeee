// The speaker side: a ring buffer of the server's pcm16 audio, played in order. It reports
// where it is (samples played or dropped, in the order the server sent them): when a stretch of
// audio starts playing, about every 20 ms while it plays, and at once after a "clear" (barge-in),
// which drops everything queued.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const seconds = (options.processorOptions && options.processorOptions.seconds) || 120;
    this.ring = new Float32Array(Math.round(sampleRate * seconds));
    this.read = 0;       // ring index of the next sample to play
    this.queued = 0;     // samples in the ring
    this.position = 0;   // samples played or dropped, since the start
    this.played = 0;     // samples played
    this.overflow = 0;   // samples refused because the ring was full
    this.playing = false;
    this.every = Math.max(1, Math.round(0.02 * sampleRate / 128));
    this.quanta = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      const s = msg.samples;
      const room = this.ring.length - this.queued;
      const n = Math.min(s.length, room);
      this.overflow += s.length - n;
      let w = (this.read + this.queued) % this.ring.length;
      for (let i = 0; i < n; i++) {
        this.ring[w] = s[i] / 32768;
        if (++w === this.ring.length) w = 0;
      }
      this.queued += n;
    } else if (msg.type === "clear") {
      const dropped = this.queued;
      const at = this.position;
      this.position += dropped;
      this.read = 0;
      this.queued = 0;
      this.playing = false;
      this.port.postMessage({ type: "cleared", position: at, dropped, frame: currentFrame });
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const n = Math.min(out.length, this.queued);
    if (n > 0 && !this.playing) {
      this.playing = true;
      this.port.postMessage({ type: "started", position: this.position, frame: currentFrame });
    }
    for (let i = 0; i < n; i++) {
      out[i] = this.ring[this.read];
      if (++this.read === this.ring.length) this.read = 0;
    }
    out.fill(0, n);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.queued -= n;
    this.position += n;
    this.played += n;
    if (n > 0 && (++this.quanta % this.every === 0 || this.queued === 0)) {
      this.port.postMessage({ type: "position", position: this.position, played: this.played, frame: currentFrame });
    }
    if (this.playing && this.queued === 0) {
      this.playing = false;
      this.port.postMessage({ type: "idle", position: this.position, played: this.played, overflow: this.overflow });
    }
    return true;
  }
}
registerProcessor("playback-processor", PlaybackProcessor);
