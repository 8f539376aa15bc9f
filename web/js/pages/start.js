// Start: whom to talk to (persona), at which level, on which tier (only the learner's
// allowed tiers can be picked, each with what it leaves in quota), conversation or review,
// and a microphone check with a level meter. Without a microphone (denied or absent) the
// learner types instead: text mode, the tutor still answers by voice.
import { api } from "../api.js";
import { h, replace } from "../dom.js";
import { follow, languageName, number, t } from "../i18n.js";
import { LiveSession } from "../live.js";
import { measure, openMic, stopStream } from "../mic.js";
import { go, refresh } from "../router.js";
import { choices, persona, saveChoices, state } from "../state.js";

const LEVELS = ["A1", "A2", "B1", "B2", "C1", "C2"];
const check = { stream: null, stop: null, error: null, heard: false }; // the mic check
let due = null; // review items due now (GET /me/progress), for the review option

export function stopMicCheck() {
  if (check.stop) check.stop();
  stopStream(check.stream);
  Object.assign(check, { stream: null, stop: null });
}

function quotaText(tier) {
  if (!tier.allowed) return tier.reason || t("tier_not_in_plan");
  const parts = [];
  if (tier.sessions_left !== null && tier.sessions_left !== undefined) {
    parts.push(t("sessions_left", { n: number(tier.sessions_left) }, null, tier.sessions_left));
  }
  if (tier.tts_chars_left !== null && tier.tts_chars_left !== undefined) {
    parts.push(t("chars_left", { n: number(tier.tts_chars_left) }, null, tier.tts_chars_left));
  }
  return parts.length ? parts.join(" · ") : t("unlimited");
}

function radio(name, value, checked, disabled, label, detail) {
  const id = `${name}-${value}`;
  return h("div", { class: `choice${disabled ? " disabled" : ""}` },
    h("input", { type: "radio", name, id, value, checked, disabled, "aria-describedby": detail ? `${id}-d` : null }),
    h("label", { for: id }, h("span", { class: "choice-title" }, label),
      detail ? h("span", { class: "choice-detail", id: `${id}-d` }, detail) : null));
}

/** The learner's choices, defaulted from their last ones and their profile. */
function chosen() {
  const { learner, personas, tiers } = state.me;
  const c = choices();
  const p = persona(c.persona) || personas.find((x) => x.language === learner.target_language) || personas[0];
  const allowed = tiers.filter((x) => x.allowed);
  const tier = allowed.find((x) => x.name === c.tier) || allowed[0] || null;
  return { persona: p, tier, level: LEVELS.includes(c.level) ? c.level : learner.cefr_level, textMode: Boolean(c.textMode), mode: c.mode || "conversation" };
}

function micSection() {
  const meter = h("meter", { id: "mic-level", min: "0", max: "1", low: "0.1", value: "0", "aria-label": t("mic_level") });
  const status = h("p", { id: "mic-status", class: "hint", role: "status" }, micStatus());
  const button = h("button", { type: "button", id: "mic-check" }, check.stream ? t("mic_stop") : t("mic_check"));
  const text = h("input", { type: "checkbox", id: "text-mode", name: "textMode", checked: chosen().textMode || Boolean(check.error) });
  const listen = () => {
    check.stop = measure(check.stream, (level) => {
      meter.value = level;
      if (level > 0.1 && !check.heard) { check.heard = true; status.textContent = micStatus(); }
    });
  };
  button.addEventListener("click", async () => {
    if (check.stream) { stopMicCheck(); refresh(); return; }
    const mic = await openMic();
    check.error = mic.error || null;
    check.stream = mic.stream || null;
    check.heard = false;
    if (check.error) { text.checked = true; saveChoices({ textMode: true }); }
    if (check.stream) { text.checked = false; saveChoices({ textMode: false }); }
    refresh();
  });
  if (check.stream) listen();
  text.addEventListener("change", () => saveChoices({ textMode: text.checked }));
  return h("fieldset", { class: "mic" }, h("legend", {}, t("mic_legend")),
    h("div", { class: "row" }, button, meter), status,
    h("div", { class: "check" }, text, h("label", { for: "text-mode" }, t("text_mode"))),
    h("p", { class: "hint" }, t("text_mode_hint")));
}

function micStatus() {
  if (check.error) return t(`mic_${check.error}`);
  if (!check.stream) return t("mic_unchecked");
  return check.heard ? t("mic_heard") : t("mic_speak");
}

function errorText(e) {
  if (e.code === "tier_not_entitled") return t("err_tier");
  if (e.code === "quota_exceeded") return t("err_quota");
  if (e.status === 429) return t("err_busy", { s: e.retryAfter || 30 });
  if (e.code === "nothing_due") return t("err_nothing_due");
  return t("err_generic", { message: e.message });
}

async function start(form, error, audio) {
  const data = new FormData(form);
  const p = persona(data.get("persona"));
  const options = {
    persona: p.id,
    tier: data.get("tier"),
    cefr_level: p.role === "examiner" ? undefined : data.get("level"),
    mode: data.get("mode") || "conversation",
    textMode: Boolean(data.get("textMode")),
  };
  if (!options.tier) { replace(error, t("err_no_tier")); return; }
  const micProblem = check.error; // what the check found: the session page says why it is text mode
  stopMicCheck(); // the session opens the microphone itself
  audio.play().catch(() => {}); // a user gesture: lets the bot's audio play on iOS
  const live = new LiveSession(options, audio);
  if (options.textMode && micProblem) live.micProblem = micProblem;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  replace(error);
  try {
    await live.prepare();
  } catch (e) {
    button.disabled = false;
    // Only the operator's own page (VOXTUTOR_UPGRADE_URL, absolute) is for the learner; the
    // API's fallbacks need the operator's key.
    const upgrade = e.body && /^https?:\/\//.test(e.body.upgrade_url || "") ? e.body.upgrade_url : null;
    replace(error, errorText(e), upgrade ? [" ", h("a", { href: upgrade }, t("upgrade"))] : null);
    return;
  }
  if (state.live && state.live.status !== "ended") state.live.finish();
  state.live = live;
  go("session");
  live.connect().catch((e) => live.fail(e));
}

export async function renderStart() {
  const { learner, personas, tiers } = state.me;
  const c = chosen();
  follow(c.persona.language);
  if (due === null) {
    api("GET", "/me/progress").then((p) => { due = (p.review && p.review.due) || 0; if (due) refresh(); }).catch(() => { due = 0; });
  }
  const audio = document.getElementById("bot-audio");
  const error = h("p", { class: "error", role: "alert", id: "start-error" });
  const examiner = c.persona.role === "examiner";
  const form = h("form", { class: "start-form", novalidate: true },
    h("fieldset", { class: "personas" }, h("legend", {}, t("persona_legend")),
      personas.map((p) => radio("persona", p.id, p.id === c.persona.id, false, p.name,
        t(`persona_${p.role}`, { language: languageName(p.language) })))),
    examiner ? null : h("div", { class: "field" },
      h("label", { for: "level" }, t("level_label")),
      h("select", { id: "level", name: "level" },
        LEVELS.map((l) => h("option", { value: l, selected: l === c.level }, `${l} — ${t(`level_${l}`)}`)))),
    h("fieldset", { class: "tiers" }, h("legend", {}, t("tier_legend")),
      tiers.map((x) => radio("tier", x.name, c.tier && x.name === c.tier.name, !x.allowed, x.title, quotaText(x)))),
    due > 0 && !examiner ? h("fieldset", { class: "modes" }, h("legend", {}, t("mode_legend")),
      radio("mode", "conversation", c.mode !== "review", false, t("mode_conversation"), null),
      radio("mode", "review", c.mode === "review", false, t("mode_review"), t("review_due", { n: due }, null, due))) : null,
    micSection(),
    error,
    h("button", { type: "submit", class: "primary", id: "start" }, t("start")));
  form.addEventListener("change", (ev) => {
    const { name, value } = ev.target;
    if (name === "persona") { saveChoices({ persona: value }); refresh(); }
    else if (name === "tier" || name === "level" || name === "mode") saveChoices({ [name]: value });
  });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); start(form, error, audio); });
  const running = state.live && !["ended", "failed"].includes(state.live.status);
  return h("section", { class: "page start", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, t("hello", { name: learner.name })),
    h("p", { class: "lead" }, t("start_lead")),
    running ? h("p", { class: "banner" }, t("session_running"), " ", h("a", { href: "#/session" }, t("go_to_session"))) : null,
    form);
}
