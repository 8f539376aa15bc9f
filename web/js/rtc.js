// WebRTC to a session process (Pipecat's SmallWebRTC transport), as Pipecat's own client
// does it: one RTCPeerConnection carrying the microphone (or, in text mode, a receive-only
// audio transceiver: no getUserMedia at all), a data channel for RTVI messages both ways,
// and the bot's audio track played by an <audio> element.
//
// Signalling: the SDP offer goes to the session's `offer_url` with the *session* token in
// `Authorization: Bearer` (never in the URL: URLs end up in logs). We wait for ICE
// gathering (at most 2 s) and send every candidate in the offer, so no trickle is needed;
// an ICE restart re-offers on the same connection with its `pc_id`.

const LOST_AFTER_MS = 5000; // "disconnected" this long counts as a dropped connection

function uuid() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export class Peer extends EventTarget {
  /** offerUrl/token: the session's `connect`; mic: a MediaStream or null (text mode). */
  constructor({ offerUrl, token, mic, audio }) {
    super();
    Object.assign(this, { offerUrl, token, mic, audio });
    this.pcId = null;
    this.closing = false;
  }

  async connect() {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    if (this.mic) this.mic.getTracks().forEach((t) => pc.addTrack(t, this.mic));
    else pc.addTransceiver("audio", { direction: "recvonly" });
    this.dc = pc.createDataChannel("chat");
    this.dc.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; } // pongs and other plain text
      if (msg && msg.label === "rtvi-ai") this.emit("rtvi", msg);
    };
    // Pipecat's client pings once a second; the transport uses it to see we are alive.
    // The channel closing under us (the session's process went away) is a drop no ICE
    // restart mends: the page then starts a new session.
    this.dc.onclose = () => this.closing || this.emit("lost", { channelClosed: true });
    this.dc.onopen = () => {
      this.pinger = setInterval(() => this.dc.readyState === "open" && this.dc.send(`ping: ${Date.now()}`), 1000);
      this.emit("open");
    };
    pc.ontrack = (ev) => {
      if (ev.track.kind !== "audio") return;
      this.audio.srcObject = new MediaStream([ev.track]);
      this.audio.play().catch(() => this.emit("autoplay-blocked"));
    };
    pc.onconnectionstatechange = () => this.watch(pc.connectionState);
    await this.negotiate({});
  }

  /** After a drop: restart ICE on the same connection and offer again. */
  async restart() {
    this.pc.restartIce();
    await this.negotiate({ pc_id: this.pcId, restart_pc: true });
  }

  async negotiate(extra) {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
      setTimeout(resolve, 2000);
    });
    const r = await fetch(this.offerUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", ...extra }),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(answer.message || `offer: HTTP ${r.status}`), { status: r.status });
    this.pcId = answer.pc_id || this.pcId;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  }

  watch(state) {
    this.emit("state", state);
    clearTimeout(this.lostTimer);
    if (this.closing) return;
    if (state === "failed") this.emit("lost");
    else if (state === "disconnected") this.lostTimer = setTimeout(() => this.emit("lost"), LOST_AFTER_MS);
  }

  get open() {
    return this.dc && this.dc.readyState === "open";
  }

  /** A typed learner turn (RTVI `send-text`): answered at once, by voice, as a spoken one. */
  sendText(content) {
    if (!this.open) throw new Error("not connected");
    this.dc.send(JSON.stringify({
      label: "rtvi-ai", type: "send-text", id: uuid(),
      data: { content, options: { run_immediately: true, audio_response: true } },
    }));
  }

  close() {
    this.closing = true;
    clearInterval(this.pinger);
    clearTimeout(this.lostTimer);
    if (this.pc) this.pc.close();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
