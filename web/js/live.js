// The live session: creates it through the API, connects (voice or text mode), turns the
// bot's RTVI messages into a transcript model, reconnects after a drop, and ends it.
// The session page (pages/session.js) listens to its events and draws; the connection
// outlives the page, so the learner can look at History or Progress while talking.
import { api } from "./api.js";
import { t } from "./i18n.js";
import { openMic, stopStream } from "./mic.js";
import { Peer } from "./rtc.js";

const norm = (s) => (s || "").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();

export class LiveSession extends EventTarget {
  /** options: {persona, tier, cefr_level?, mode, textMode}; audio: the <audio> for the bot. */
  constructor(options, audio) {
    super();
    this.options = options;
    this.audio = audio;
    this.textMode = Boolean(options.textMode);
    this.turns = []; // {role: learner|bot|notice, text, partial, typed, corrections, grades}
    this.status = "idle";
    this.bot = null; // the bot turn being spoken, if any
  }

  /**
   * The microphone (or text mode) and a new session; the page shows its errors (403 tier,
   * 402 quota, 429 busy) where the learner chose. connect() follows.
   */
  async prepare() {
    this.setStatus("starting");
    if (!this.textMode) {
      const mic = await openMic();
      if (mic.stream) this.mic = mic.stream;
      else {
        this.textMode = true;
        this.micProblem = mic.error; // shown by the page: why we switched to typing
      }
    }
    try {
      await this.create();
    } catch (e) {
      stopStream(this.mic);
      throw e;
    }
  }

  async create() {
    const { persona, tier, cefr_level: level, mode } = this.options;
    const body = { persona, tier, mode: mode || "conversation" };
    if (level) body.cefr_level = level;
    this.session = await api("POST", "/me/sessions", body);
    this.id = this.session.session_id;
  }

  async connect() {
    this.setStatus("connecting");
    const { offer_url: offerUrl, token } = this.session.connect;
    const peer = new Peer({ offerUrl, token, mic: this.textMode ? null : this.mic, audio: this.audio });
    this.peer = peer;
    // Only the current peer speaks: a replaced one's late events are not this session's.
    const on = (type, fn) => peer.addEventListener(type, (e) => peer === this.peer && fn(e.detail));
    on("rtvi", (msg) => this.onRtvi(msg));
    on("open", () => this.setStatus("connected"));
    on("lost", (d) => this.recover(Boolean(d && d.channelClosed)));
    on("autoplay-blocked", () => this.emit("autoplay-blocked"));
    await peer.connect();
  }

  /**
   * The connection dropped. If the session has ended (the learner's End, a quota's goodbye)
   * there is nothing to do; if it still runs, offer again (ICE restart); if its process is
   * gone, start a new session with the same choices and say so. A session that is ending
   * takes a moment to be marked ended, so its status is asked a few times first.
   */
  async recover(channelClosed = false) {
    if (["ending", "ended", "failed"].includes(this.status) || this.recovering) return;
    this.recovering = true;
    try {
      let status = null;
      for (let i = 0; i < (channelClosed ? 6 : 3); i += 1) {
        if (this.goodbye) break; // a quota ended it: its status will say so, no reconnect
        status = await this.sessionStatus();
        if (status !== "ready" && status !== "active") break;
        await new Promise((r) => setTimeout(r, 1500));
      }
      if (this.goodbye || status === "ended") return this.finish();
      this.setStatus("reconnecting");
      if (!channelClosed && (status === "ready" || status === "active")) {
        try {
          await this.peer.restart();
          this.setStatus("connected");
          return;
        } catch {
          if ((await this.sessionStatus()) === "ended") return this.finish();
        }
      }
      // A new session costs one of the month's: start one at most once on our own; if that
      // one fails too, the learner decides (Start) rather than a loop spending the quota.
      if (this.restarted) throw new Error(t("err_session_failed"));
      this.restarted = true;
      this.peer.close();
      await this.create();
      this.addTurn({ role: "notice", kind: "reconnected" });
      await this.connect();
    } catch (e) {
      this.fail(e);
    } finally {
      this.recovering = false;
    }
  }

  async sessionStatus() {
    const s = await api("GET", `/me/sessions/${this.id}`).catch(() => null);
    return s ? s.status : null;
  }

  /** The learner ends the session: the bot says goodbye (we keep listening a little). */
  async end() {
    if (!this.id || this.status === "ended") return;
    this.setStatus("ending");
    await api("DELETE", `/me/sessions/${this.id}`).catch(() => {});
    setTimeout(() => this.finish(), 8000); // let the goodbye play out
  }

  finish() {
    if (this.peer) this.peer.close();
    stopStream(this.mic);
    this.setStatus("ended");
  }

  fail(error) {
    if (this.peer) this.peer.close();
    stopStream(this.mic);
    this.error = error;
    this.setStatus("failed");
  }

  /** A typed learner turn: shown at once, sent as RTVI send-text. */
  say(text) {
    this.peer.sendText(text);
    this.bot = null;
    this.addTurn({ role: "learner", text, typed: true });
  }

  onRtvi(msg) {
    const d = msg.data || {};
    switch (msg.type) {
      case "user-transcription": return this.heard(d);
      case "bot-started-speaking": this.bot = null; return;
      case "bot-output":
        // One line per bot turn; a sentence is added once spoken, so a barge-in leaves
        // exactly what the learner heard.
        if (!d.spoken || !d.text) return;
        if (!this.bot) this.bot = this.addTurn({ role: "bot", text: d.text });
        else this.update(this.bot, { text: `${this.bot.text} ${d.text}` });
        return;
      case "server-message": return this.serverMessage(d);
      case "error": this.addTurn({ role: "notice", kind: "error", data: d }); return;
      default:
    }
  }

  heard({ text, final }) {
    if (!text) return;
    this.bot = null;
    const last = this.lastLearner();
    // The server may echo a typed turn as a transcription: do not show it twice.
    if (last && last.typed && !last.echoed && norm(last.text) === norm(text)) {
      if (final) last.echoed = true;
      return;
    }
    if (last && last.partial) this.update(last, { text, partial: !final });
    else this.addTurn({ role: "learner", text, partial: !final });
  }

  serverMessage(d) {
    if (d.type === "correction" || d.type === "acs-grade") {
      // The learner's line it belongs to: the latest one saying the corrected words,
      // else the latest learner line (the assessment runs right after the learner's turn).
      const learner = this.turns.filter((t) => t.role === "learner");
      const target = (d.type === "correction" && [...learner].reverse().find((t) => norm(t.text).includes(norm(d.original))))
        || learner[learner.length - 1];
      if (!target) return this.addTurn({ role: "notice", kind: d.type, data: d });
      const key = d.type === "correction" ? "corrections" : "grades";
      this.update(target, { [key]: [...target[key], d] });
    } else if (["provider-switch", "quota-warning", "quota-reached", "quota"].includes(d.type)) {
      if (d.type === "quota-reached") this.goodbye = true;
      this.addTurn({ role: "notice", kind: d.type, data: d });
    }
  }

  lastLearner() {
    for (let i = this.turns.length - 1; i >= 0; i -= 1) {
      if (this.turns[i].role === "learner") return this.turns[i];
      if (this.turns[i].role === "bot") return null; // the bot has answered since
    }
    return null;
  }

  addTurn(turn) {
    const t = { partial: false, typed: false, corrections: [], grades: [], ...turn };
    this.turns.push(t);
    this.emit("turn", t);
    return t;
  }

  update(turn, changes) {
    Object.assign(turn, changes);
    this.emit("turn-changed", turn);
  }

  setStatus(status) {
    this.status = status;
    this.emit("status", status);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
