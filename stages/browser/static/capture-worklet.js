// The microphone side: 128-sample render quanta in, pcm16 chunks of `chunk` samples out,
// each with the context frame of its first sample and its level (dBFS).
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buf = new Int16Array(this.chunk);
    this.fill = 0;
    this.firstFrame = 0;
    this.sumSquares = 0;
    this.muted = false;
    this.port.onmessage = (e) => { if ("muted" in e.data) this.muted = e.data.muted; };
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    const n = input ? input.length : 128;
    for (let i = 0; i < n; i++) {
      if (this.fill === 0) { this.firstFrame = currentFrame + i; this.sumSquares = 0; }
      const x = this.muted || !input ? 0 : Math.max(-1, Math.min(1, input[i]));
      this.sumSquares += x * x;
      this.buf[this.fill++] = x < 0 ? Math.round(x * 32768) : Math.round(x * 32767);
      if (this.fill === this.chunk) {
        const rms = Math.sqrt(this.sumSquares / this.chunk);
        const level = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
        this.port.postMessage({ samples: this.buf, frame: this.firstFrame, level }, [this.buf.buffer]);
        this.buf = new Int16Array(this.chunk);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor("capture-processor", CaptureProcessor);
