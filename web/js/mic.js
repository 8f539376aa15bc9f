// The microphone: ask for it, and measure its level for the meters (Web Audio AnalyserNode).

/** Ask for the microphone. Resolves {stream} or {error: "denied"|"absent"|"unsupported"}. */
export async function openMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return { error: "unsupported" };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: true }) };
  } catch (e) {
    // NotAllowedError: the learner or the browser said no. NotFoundError and friends: no
    // usable input device. Either way the learner can still type (text mode).
    return { error: e && e.name === "NotAllowedError" ? "denied" : "absent" };
  }
}

export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
}

/**
 * Call onLevel(0..1) about 20 times a second with the stream's loudness (RMS, scaled so
 * normal speech fills most of the meter). Returns a function that stops measuring.
 */
export function measure(stream, onLevel) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return () => {};
  const ctx = new Ctx();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
  }, 50);
  ctx.resume().catch(() => {});
  return () => {
    clearInterval(timer);
    ctx.close().catch(() => {});
  };
}
