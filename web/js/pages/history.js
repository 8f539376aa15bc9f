// History: the learner's past sessions (newest first, 20 a page) and, for one session, its
// transcript with the corrections and grades, and its report. Reports are written by the
// server's report worker after a session ends, so a pending one is asked for again every
// few seconds while its page is open.
import { api } from "../api.js";
import { h, replace } from "../dom.js";
import { dateTime, number, t } from "../i18n.js";
import { parse } from "../router.js";
import { persona } from "../state.js";
import { storedTurns, turnElement } from "../transcript.js";

const PAGE = 20;
const POLL_MS = 3000;

function minutes(a, b) {
  if (!a || !b) return null;
  return Math.max(0, Math.round((new Date(b) - new Date(a)) / 60000));
}

function title(s) {
  return h("h1", { id: "page-title", tabindex: "-1" }, t("history_title"), s ? h("span", { class: "sub" }, ` — ${s}`) : null);
}

export async function renderHistory({ id }) {
  return id ? renderOne(id) : renderList(Number(sessionStorage.getItem("voxtutor-history-offset")) || 0);
}

async function renderList(offset) {
  const page = await api("GET", `/me/sessions?limit=${PAGE}&offset=${offset}`);
  const rows = page.items.map((s) => {
    const p = persona(s.persona);
    const mins = minutes(s.created_at, s.ended_at);
    return h("li", { class: "session-item" },
      h("a", { href: `#/history/${encodeURIComponent(s.id)}` },
        h("span", { class: "when" }, dateTime(s.created_at)),
        h("span", { class: "with" }, p ? p.name : s.persona),
        h("span", { class: "detail" }, [s.tier, t(`session_${s.status}`), mins === null ? null : t("minutes", { n: mins }, null, mins)].filter(Boolean).join(" · "))));
  });
  const pager = (to, label) => {
    const b = h("button", { type: "button" }, label);
    b.addEventListener("click", async () => {
      sessionStorage.setItem("voxtutor-history-offset", String(to));
      const fresh = await renderList(to);
      section.replaceWith(fresh);
      fresh.querySelector("h1").focus();
    });
    return b;
  };
  const section = h("section", { class: "page history", "aria-labelledby": "page-title" },
    title(),
    rows.length ? h("ol", { class: "sessions" }, rows) : h("p", {}, t("no_sessions"), " ", h("a", { href: "#/start" }, t("nav_start"))),
    h("div", { class: "pager" },
      offset > 0 ? pager(Math.max(0, offset - PAGE), t("newer")) : null,
      offset + PAGE < page.total ? pager(offset + PAGE, t("older")) : null));
  return section;
}

async function renderOne(id) {
  const path = `/me/sessions/${encodeURIComponent(id)}`;
  const detail = await api("GET", path);
  const p = persona(detail.persona) || { name: detail.persona };
  const report = h("section", { class: "report", "aria-labelledby": "report-title", "aria-live": "polite", id: "report" },
    h("h2", { id: "report-title" }, t("report")), h("p", {}, t("report_loading")));
  const list = h("ol", { class: "transcript", "aria-label": t("transcript") },
    storedTurns(detail).map((turn) => turnElement(turn, p.name)));
  const mins = minutes(detail.ready_at || detail.created_at, detail.ended_at);
  const section = h("section", { class: "page history-one", "aria-labelledby": "page-title" },
    h("p", {}, h("a", { href: "#/history" }, `← ${t("all_sessions")}`)),
    title(p.name),
    h("p", { class: "meta" }, [dateTime(detail.created_at), detail.tier, t(`session_${detail.status}`),
      mins === null ? null : t("minutes", { n: mins }, null, mins)].filter(Boolean).join(" · ")),
    report,
    h("h2", {}, t("transcript")),
    list.children.length ? list : h("p", {}, t("no_turns")));
  loadReport(path, report, id);
  return section;
}

async function loadReport(path, box, id) {
  const still = () => parse().name === "history" && parse().id === id && document.body.contains(box);
  let job;
  try {
    job = await api("GET", `${path}/report`);
  } catch (e) {
    const text = e.status === 409 ? t("report_after_end") : t("err_generic", { message: e.message });
    replace(box, h("h2", { id: "report-title" }, t("report")), h("p", {}, text));
    if (e.status === 409 && still()) setTimeout(() => still() && loadReport(path, box, id), POLL_MS);
    return;
  }
  if (job.status === "done" && job.report) {
    replace(box, h("h2", { id: "report-title" }, t("report")), drawReport(job.report));
  } else if (job.status === "failed") {
    replace(box, h("h2", { id: "report-title" }, t("report")), h("p", {}, t("report_failed")));
  } else {
    replace(box, h("h2", { id: "report-title" }, t("report")), h("p", {}, t("report_pending")));
    if (still()) setTimeout(() => still() && loadReport(path, box, id), POLL_MS);
  }
}

function drawReport(r) {
  const level = r.level || {};
  const sections = [
    r.summary ? h("p", { class: "summary" }, r.summary) : null,
    r.strengths && r.strengths.length ? [h("h3", {}, t("strengths")), h("ul", {}, r.strengths.map((s) => h("li", {}, s)))] : null,
    r.practise && r.practise.length ? [h("h3", {}, t("practise")), h("ul", { class: "practise" }, r.practise.map((x) =>
      h("li", {}, h("strong", {}, x.rule || t(`cat_${x.category}`, {}, x.category)), x.example ? ` — ${x.example}` : null,
        x.count ? h("span", { class: "tag" }, ` ${t("times", { n: x.count }, null, x.count)}`) : null)))] : null,
    r.corrections && r.corrections.length ? [h("h3", {}, t("corrections")), h("ul", { class: "rules" }, r.corrections.map((c) =>
      h("li", {}, h("del", {}, c.original), " ", h("ins", {}, c.corrected), " — ", h("span", { class: "rule" }, c.rule || c.category))))] : null,
    r.acs && r.acs.length ? [h("h3", {}, t("acs_debrief")), acsTable(r.acs)] : null,
    h("dl", { class: "facts" },
      level.before ? [h("dt", {}, t("level")), h("dd", {}, level.estimate && level.estimate !== level.before ? `${level.before} → ${level.estimate}` : level.before)] : null,
      r.minutes !== null && r.minutes !== undefined ? [h("dt", {}, t("duration")), h("dd", {}, t("minutes", { n: number(Math.round(r.minutes)) }, null, Math.round(r.minutes)))] : null,
      [h("dt", {}, t("your_turns")), h("dd", {}, number(r.learner_turns || 0))],
      r.review && r.review.answered ? [h("dt", {}, t("reviews")), h("dd", {}, `${r.review.right}/${r.review.answered}`)] : null),
  ];
  return h("div", { class: "report-body" }, sections);
}

function acsTable(rows) {
  return h("table", { class: "acs-debrief" },
    h("thead", {}, h("tr", {}, [t("task"), t("grade"), t("missing")].map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((x) => h("tr", {},
      h("th", { scope: "row" }, `${x.task} ${x.title || ""}`),
      h("td", { class: `grade-${x.grade}` }, t(`grade_${x.grade}`)),
      h("td", {}, (x.missing || []).join("; ") || "—")))));
}
