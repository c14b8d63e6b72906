"use strict";
(function () {
  const data = JSON.parse(document.getElementById("gax-data").textContent);
  const LUT = data.lut, GAP = 6, LABEL = 16;
  function num(v) {
    const a = Math.abs(v);
    return a >= 1e5 ? v.toExponential(2) : a >= 1 ? v.toFixed(2) : a === 0 ? "0" : v.toPrecision(3);
  }
  function bytes(b64) { return Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)); }
  async function inflate(b64) {
    const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function signed(src, offset, n) {
    const out = new Uint8ClampedArray(n * 4);
    for (let p = 0; p < n; p++) {
      const q = src[offset + p] * 3;
      out[4 * p] = LUT[q]; out[4 * p + 1] = LUT[q + 1]; out[4 * p + 2] = LUT[q + 2]; out[4 * p + 3] = 255;
    }
    return out;
  }
  function rgb(image, c, n) {
    const out = new Uint8ClampedArray(n * 4);
    for (let p = 0; p < n; p++) {
      for (let j = 0; j < 3; j++) out[4 * p + j] = image[p * c + (c === 3 ? j : 0)];
      out[4 * p + 3] = 255;
    }
    return out;
  }
  function curve(canvas, d, step) {
    const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, m = 6;
    const lo = Math.min(0, ...d.traj), hi = Math.max(d.target, ...d.traj);
    const last = Math.max(1, d.traj.length - 1);
    const X = (t) => m + (W - 2 * m) * t / last, Y = (v) => H - m - (H - 2 * m) * (v - lo) / (hi - lo || 1);
    ctx.clearRect(0, 0, W, H);
    ctx.strokeStyle = "#000"; ctx.setLineDash([4, 3]); ctx.beginPath();
    ctx.moveTo(m, Y(d.target)); ctx.lineTo(W - m, Y(d.target)); ctx.stroke(); ctx.setLineDash([]);
    ctx.strokeStyle = "#0072B2"; ctx.lineWidth = 1.5; ctx.beginPath();
    d.traj.forEach((v, t) => (t ? ctx.lineTo(X(t), Y(v)) : ctx.moveTo(X(t), Y(v)))); ctx.stroke();
    const v = d.traj[Math.min(step, d.traj.length - 1)];
    ctx.strokeStyle = "#D55E00"; ctx.beginPath(); ctx.moveTo(X(step), m); ctx.lineTo(X(step), H - m); ctx.stroke();
    ctx.fillStyle = "#D55E00"; ctx.beginPath(); ctx.arc(X(step), Y(v), 3, 0, 2 * Math.PI); ctx.fill();
  }
  async function setup(el, d) {
    const [frames, image] = await Promise.all([inflate(d.frames), inflate(d.image)]);
    const n = d.h * d.w, size = d.c * n, pw = d.w * d.zoom, ph = d.h * d.zoom;
    for (let p = size; p < frames.length; p++) frames[p] += frames[p - size];  // wraps mod 256
    const change = (k, offset) => {
      const out = new Uint8Array(n).fill(128);
      if (k === 0) return out;
      for (let p = 0; p < n; p++) {
        const a = k * size + offset + p;
        out[p] = Math.round((frames[a] - frames[a - size]) / d.dmax * 127) + 128;
      }
      return out;
    };
    const names = d.c === 3 ? ["R", "G", "B"] : d.c === 1 ? [""] : Array.from({ length: d.c }, (_, k) => "c" + k);
    const labels = ["image", ...names.map((s) => "h " + s), ...names.map((s) => "\u0394h " + s)];
    const canvas = el.querySelector("canvas.gax-canvas");
    canvas.width = labels.length * (pw + GAP) - GAP; canvas.height = ph + LABEL;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.font = "12px system-ui, sans-serif"; ctx.fillStyle = "#1f2328";
    labels.forEach((s, k) => ctx.fillText(s, k * (pw + GAP) + 2, 12));
    const scratch = document.createElement("canvas");
    scratch.width = d.w; scratch.height = d.h;
    const sctx = scratch.getContext("2d");
    const put = (pixels, k) => {
      sctx.putImageData(new ImageData(pixels, d.w, d.h), 0, 0);
      ctx.drawImage(scratch, k * (pw + GAP), LABEL, pw, ph);
    };
    const picture = rgb(image, d.c, n);
    const slider = el.querySelector("input.gax-slider"), readout = el.querySelector(".gax-readout");
    const spark = el.querySelector("canvas.gax-curve");
    const show = (k) => {
      put(picture, 0);
      for (let ch = 0; ch < d.c; ch++) {
        put(signed(frames, k * size + ch * n, n), 1 + ch);
        put(signed(change(k, ch * n), 0, n), 1 + d.c + ch);
      }
      const since = k ? " (\u0394h since step " + d.steps[k - 1] + ")" : " (first step: no change yet)";
      readout.querySelector(".gax-step").textContent = "step " + d.steps[k] + since;
      readout.querySelector(".gax-co").textContent = "CO " + num(d.co[k]) + " (target " + num(d.target) + ")";
      curve(spark, d, d.steps[k]);
    };
    slider.addEventListener("input", () => show(Number(slider.value)));
    show(Number(slider.value));
    el.dataset.ready = "1";
  }
  const items = document.querySelectorAll(".gax-item");
  if (typeof DecompressionStream === "undefined") {
    document.getElementById("gax-status").textContent = "This browser cannot inflate the embedded heatmaps " +
      "(no DecompressionStream); open the page in a current Chromium, Firefox or Safari.";
    return;
  }
  Promise.all(Array.from(items, (el, i) => setup(el, data.items[i]))).then(() => {
    document.body.dataset.ready = "1";
  });
})();
