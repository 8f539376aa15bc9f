// Drawing transcript turns, live (pages/session.js) and past (pages/history.js): the
// learner's words with each correction inline (<del> what was said, <ins> the correction,
// then the rule), the examiner's ACS grades as chips, and the server's notices.
import { h, replace, srOnly } from "./dom.js";
import { t } from "./i18n.js";

/** The text with each correction's `original` struck through and its `corrected` inserted. */
export function markedText(text, corrections) {
  const nodes = [];
  let rest = text;
  const unplaced = [];
  for (const c of corrections) {
    const at = c.original ? rest.toLowerCase().indexOf(c.original.toLowerCase()) : -1;
    if (at < 0) { unplaced.push(c); continue; }
    nodes.push(rest.slice(0, at), change(rest.slice(at, at + c.original.length), c.corrected));
    rest = rest.slice(at + c.original.length);
  }
  nodes.push(rest);
  return { nodes, unplaced };
}

function change(said, corrected) {
  return h("span", { class: "change" },
    h("del", {}, srOnly(t("said")), said), " ",
    h("ins", {}, srOnly(t("correct")), corrected));
}

const GRADE_ICON = { satisfactory: "✓", probe: "?", unsatisfactory: "✗" };

function gradeChip(g) {
  return h("li", { class: `chip grade-${g.grade}` },
    h("span", { "aria-hidden": "true" }, GRADE_ICON[g.grade] || ""), " ",
    `${g.task || g.area || ""} · ${t(`grade_${g.grade}`)}`);
}

/** The sentence a notice turn shows. */
export function noticeText(turn) {
  const d = turn.data || {};
  switch (turn.kind) {
    case "provider-switch":
      return t("notice_switch", { role: t(`role_${d.role}`), from: d.from, to: d.to });
    case "quota-warning":
      return t("notice_quota_warning", { used: d.used, limit: d.limit, quota: t(`quota_${d.quota}`) });
    case "quota-reached":
      return t("notice_quota_reached", { used: d.used, limit: d.limit, quota: t(`quota_${d.quota}`) });
    case "quota":
      return d.message || t("notice_quota_warning", { used: d.used, limit: d.limit, quota: t(`quota_${d.quota}`) });
    case "reconnected": return t("notice_reconnected");
    case "error": return t("notice_error", { message: d.message || d.error || "" });
    default: return d.message || "";
  }
}

/** Fill `el` with a turn: {role, text, partial, typed, interrupted, corrections, grades}. */
export function drawTurn(el, turn, botName) {
  el.className = `turn ${turn.role}${turn.partial ? " partial" : ""}`;
  if (turn.role === "notice") return replace(el, h("span", { class: "notice-text" }, noticeText(turn)));
  const who = turn.role === "learner" ? t("you") : botName;
  const { nodes, unplaced } = markedText(turn.text || "", turn.corrections || []);
  // The rule, then its category; a correction whose rule the model did not name shows the
  // category alone.
  const category = (c) => t(`cat_${c.category}`, {}, c.category);
  const rules = (turn.corrections || []).map((c) => h("li", {},
    unplaced.includes(c) ? [change(c.original, c.corrected), " — "] : null,
    c.rule ? h("span", { class: "rule" }, c.rule) : null,
    c.category ? h("span", { class: "category" }, c.rule ? ` (${category(c)})` : category(c)) : null));
  replace(el,
    h("p", { class: "line" },
      h("strong", { class: "who" }, `${who}: `), nodes,
      turn.typed ? h("span", { class: "tag" }, ` ${t("typed")}`) : null,
      turn.interrupted ? h("span", { class: "tag" }, ` ${t("interrupted")}`) : null),
    rules.length ? h("ul", { class: "rules", "aria-label": t("corrections") }, rules) : null,
    turn.grades && turn.grades.length
      ? h("ul", { class: "chips", "aria-label": t("acs_grades") }, turn.grades.map(gradeChip))
      : null);
  return el;
}

/** A new element for a turn (an <li> of the transcript list). */
export function turnElement(turn, botName) {
  return drawTurn(h("li"), turn, botName);
}

/**
 * A stored session's turns in the live model's shape: corrections and grades come from the
 * turn's `assessment`, or from the session's `mistakes`/`acs` lists by turn index.
 */
export function storedTurns(detail) {
  const byIndex = (list) => {
    const m = new Map();
    for (const x of list || []) if (x.turn_index !== null && x.turn_index !== undefined) {
      m.set(x.turn_index, [...(m.get(x.turn_index) || []), x]);
    }
    return m;
  };
  const mistakes = byIndex(detail.mistakes);
  const grades = byIndex(detail.acs);
  return (detail.turns || []).map((turn) => ({
    role: turn.role,
    text: turn.text,
    interrupted: turn.interrupted,
    corrections: mistakes.get(turn.index) || (turn.assessment && turn.assessment.mistakes) || [],
    grades: grades.get(turn.index) || (turn.assessment && turn.assessment.acs) || [],
  }));
}
