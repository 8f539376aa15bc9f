// Session: the live transcript (corrections inline, ACS grades as chips, the server's
// notices), a box to type a turn (the only input in text mode; in voice mode the microphone
// stays open, so the learner can also barge in by speaking), and the End button.
import { h, replace } from "../dom.js";
import { t } from "../i18n.js";
import { measure } from "../mic.js";
import { persona, state } from "../state.js";
import { drawTurn, turnElement } from "../transcript.js";

let view = null; // the elements of the page now shown, updated by the live session's events
const wired = new WeakSet(); // live sessions whose events we listen to

function statusText(live) {
  if (live.status === "failed") return t("status_failed", { message: (live.error && live.error.message) || "" });
  return t(`status_${live.status}`);
}

function wire(live) {
  if (wired.has(live)) return;
  wired.add(live);
  const name = () => (persona(live.options.persona) || {}).name || "";
  live.addEventListener("turn", (e) => {
    if (!view || view.live !== live) return;
    const li = turnElement(e.detail, name());
    view.items.set(e.detail, li);
    view.list.append(li);
    li.scrollIntoView({ block: "nearest" });
  });
  live.addEventListener("turn-changed", (e) => {
    const li = view && view.live === live && view.items.get(e.detail);
    if (li) drawTurn(li, e.detail, name());
  });
  live.addEventListener("status", () => view && view.live === live && view.update());
  live.addEventListener("autoplay-blocked", () => view && view.live === live && view.showPlay());
}

export function renderSession() {
  const live = state.live;
  if (view && view.stopMeter) view.stopMeter();
  view = null;
  if (!live) {
    return h("section", { class: "page session", "aria-labelledby": "page-title" },
      h("h1", { id: "page-title", tabindex: "-1" }, t("session_title")),
      h("p", {}, t("no_session"), " ", h("a", { href: "#/start" }, t("nav_start"))));
  }
  wire(live);
  const p = persona(live.options.persona) || { name: live.options.persona };
  const status = h("p", { class: "status", role: "status", id: "session-status" });
  // role=log on a wrapper: on the <ol> itself it would hide the list from screen readers.
  const list = h("ol", { class: "transcript" });
  const log = h("div", { role: "log", "aria-live": "polite", "aria-label": t("transcript") }, list);
  const items = new Map();
  for (const turn of live.turns) {
    const li = turnElement(turn, p.name);
    items.set(turn, li);
    list.append(li);
  }
  const input = h("textarea", { id: "say-text", name: "text", rows: "2", autocomplete: "off" });
  const send = h("button", { type: "submit", id: "say-send" }, t("send"));
  const say = h("form", { class: "say" },
    h("label", { for: "say-text" }, live.textMode ? t("type_turn") : t("type_or_speak")),
    h("div", { class: "row" }, input, send));
  say.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    try {
      live.say(text);
      input.value = "";
    } catch {
      replace(status, t("not_connected"));
    }
  });
  // Enter sends, Shift+Enter adds a line (as in chat apps).
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); say.requestSubmit(); }
  });
  const end = h("button", { type: "button", class: "danger", id: "end" }, t("end"));
  end.addEventListener("click", () => live.end());
  const play = h("button", { type: "button", id: "play", hidden: true }, t("tap_to_hear"));
  play.addEventListener("click", () => { document.getElementById("bot-audio").play().catch(() => {}); play.hidden = true; });
  const after = h("div", { class: "after", id: "session-after" });
  const meter = h("meter", { min: "0", max: "1", value: "0", "aria-label": t("mic_level") });
  const micLine = live.textMode
    ? h("p", { class: "banner" }, live.micProblem ? t(`text_mode_because_${live.micProblem}`) : t("text_mode_on"))
    : h("p", { class: "mic-line" }, h("span", {}, t("mic_on")), " ", meter);

  view = {
    live, list, items, showPlay: () => { play.hidden = false; },
    update() {
      replace(status, statusText(live));
      const over = live.status === "ended" || live.status === "failed";
      end.disabled = over || live.status === "ending";
      send.disabled = input.disabled = live.status !== "connected";
      replace(after, over ? [
        live.id && live.status === "ended" ? h("p", {}, t("ended_report"), " ", h("a", { href: `#/history/${encodeURIComponent(live.id)}` }, t("see_report"))) : null,
        h("p", {}, h("a", { href: "#/start", class: "button" }, t("new_session"))),
      ] : null);
      if (over && this.stopMeter) { this.stopMeter(); this.stopMeter = null; }
    },
  };
  if (!live.textMode && live.mic) view.stopMeter = measure(live.mic, (v) => { meter.value = v; });
  view.update();
  const details = [live.options.tier, live.options.cefr_level, t(`mode_${live.options.mode || "conversation"}`),
    live.textMode ? t("text_mode_short") : t("voice_mode_short")].filter(Boolean).join(" · ");
  return h("section", { class: "page session", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, t("session_with", { name: p.name })),
    h("p", { class: "meta" }, details),
    status, micLine, play, log, say,
    h("div", { class: "actions" }, end), after);
}
