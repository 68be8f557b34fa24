// The microphone's audio as the service wants it: every channel averaged to mono, low-pass filtered below the
// output's Nyquist frequency (a windowed-sinc FIR), resampled to 16 kHz by linear interpolation of the filtered
// signal, and posted as PCM16 LE in 20 ms frames (320 samples) with the frame's RMS level (0..1).
'use strict';

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.outRate = o.targetRate || 16000;
    this.frameSamples = Math.round((this.outRate * (o.frameMs || 20)) / 1000);
    this.step = sampleRate / this.outRate; // input samples per output sample
    // Low-pass FIR, Blackman window, unity gain at DC: flat to about 6.9 kHz, its transition band (about 5.5 / taps
    // of the input rate wide) ending at the output's Nyquist frequency, so nothing folds back into speech.
    const taps = this.step > 1 ? 2 * Math.ceil(40 * this.step) + 1 : 1;
    const fc = this.step > 1 ? 0.5 / this.step - 2.75 / taps : 0.5; // cycles per input sample
    this.h = new Float32Array(taps);
    let sum = 0;
    for (let k = 0; k < taps; k++) {
      const m = k - (taps - 1) / 2;
      const sinc = m === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * m) / (Math.PI * m);
      const w = taps === 1 ? 1 : 0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * k) / (taps - 1));
      this.h[k] = sinc * w;
      sum += this.h[k];
    }
    for (let k = 0; k < taps; k++) this.h[k] /= sum;
    this.hist = new Float32Array(taps); // the last `taps` input samples, circular; `at` is the newest
    this.at = taps - 1;
    this.index = 0; // index of the newest input sample
    this.prev = 0; // the filtered signal at index - 1 (where an output needs it)
    this.next = 0; // position of the next output sample, in input samples
    this.newFrame();
  }

  newFrame() {
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.energy = 0;
  }

  emit(x) {
    const s = Math.max(-1, Math.min(1, x));
    this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
    this.energy += s * s;
    if (this.filled === this.frameSamples) {
      const level = Math.sqrt(this.energy / this.frameSamples);
      this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
      this.newFrame();
    }
  }

  // The filtered signal at the newest input sample.
  filtered() {
    const taps = this.h.length;
    let y = 0;
    for (let k = 0, j = this.at; k < taps; k++) {
      y += this.h[k] * this.hist[j];
      j = j === 0 ? taps - 1 : j - 1;
    }
    return y;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const taps = this.h.length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < input.length; c++) x += input[c][i];
      this.at = this.at + 1 === taps ? 0 : this.at + 1;
      this.hist[this.at] = x / input.length;
      // Filtered only where an output sample needs it (one in (index - 1, index + 1]): about 2 per output sample.
      const y = this.next <= this.index + 1 ? this.filtered() : 0;
      while (this.next <= this.index) {
        const frac = this.next - (this.index - 1);
        this.emit(this.prev + (y - this.prev) * frac);
        this.next += this.step;
      }
      this.prev = y;
      this.index++;
    }
    return true;
  }
}

registerProcessor('pcm16-capture', Pcm16Capture);
