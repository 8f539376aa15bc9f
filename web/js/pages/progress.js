// Progress: the learner model (GET /me/progress, the same body as the operator's
// /learners/{id}/progress): level and its history, weaknesses, review items, and per-session
// series, drawn as charts; for pilots the ACS area × task mastery grid.
import { api } from "../api.js";
import { chartFigure } from "../charts.js";
import { h } from "../dom.js";
import { date, number, t } from "../i18n.js";

const LEVELS = ["A1", "A2", "B1", "B2", "C1", "C2"];

export async function renderProgress() {
  const p = await api("GET", "/me/progress");
  const sessions = (p.series && p.series.sessions) || [];
  const labels = sessions.map((s, i) => `${i + 1}. ${date(s.started_at)}`);
  return h("section", { class: "page progress", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, t("progress_title")),
    facts(p),
    weaknesses(p.weaknesses || []),
    h("div", { class: "charts" },
      // An examiner corrects no grammar: a pilot is not told of corrections and review items.
      p.acs && !p.mistakes ? null : mistakesChart(sessions, labels),
      p.acs && !(p.review && p.review.total) ? null : reviewChart(p, sessions, labels),
      levelChart(p),
      acsChart(sessions, labels)),
    p.acs ? acsGrid(p.acs) : null);
}

function facts(p) {
  const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const review = p.review || {};
  return h("dl", { class: "facts" },
    fact(t("level"), p.level ? p.level.cefr : "—"),
    fact(t("sessions"), number(p.sessions || 0)),
    fact(t("duration"), t("minutes", { n: number(Math.round(p.minutes || 0)) }, null, Math.round(p.minutes || 0))),
    fact(t("corrections"), number(p.mistakes || 0)),
    fact(t("review_items"), t("review_summary", { total: number(review.total || 0), due: number(review.due || 0), learned: number(review.learned || 0) })));
}

function weaknesses(list) {
  if (!list.length) return null;
  return h("section", { "aria-labelledby": "weak-title" },
    h("h2", { id: "weak-title" }, t("weaknesses")),
    h("ul", { class: "weaknesses" }, list.map((w) => h("li", {},
      h("strong", {}, t(`cat_${w.category}`, {}, w.category)), ` — ${t("times", { n: w.count }, null, w.count)}`,
      w.rules && w.rules[0] ? h("span", { class: "rule" }, ` · ${w.rules[0].rule}`) : null,
      w.example && w.example.original ? h("span", { class: "example" }, " · ", h("del", {}, w.example.original), " ", h("ins", {}, w.example.corrected)) : null))));
}

function mistakesChart(sessions, labels) {
  const categories = [...new Set(sessions.flatMap((s) => Object.keys(s.mistakes || {})))].sort();
  if (!categories.length) return h("p", { class: "hint" }, t("no_mistakes_yet"));
  const total = sessions.reduce((n, s) => n + Object.values(s.mistakes || {}).reduce((a, b) => a + b, 0), 0);
  return chartFigure({
    id: "chart-mistakes", type: "bar", labels, labelsTitle: t("session"),
    title: t("chart_mistakes"),
    summary: t("chart_mistakes_summary", { n: total, sessions: sessions.length, categories: categories.map((c) => t(`cat_${c}`, {}, c)).join(", ") }),
    datasets: categories.map((c) => ({ label: t(`cat_${c}`, {}, c), data: sessions.map((s) => (s.mistakes || {})[c] || 0) })),
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function reviewChart(p, sessions, labels) {
  if (!sessions.some((s) => s.review_items)) return h("p", { class: "hint" }, t("no_review_yet"));
  const review = p.review || {};
  return chartFigure({
    id: "chart-review", type: "line", labels, labelsTitle: t("session"),
    title: t("chart_review"),
    summary: t("review_summary", { total: review.total || 0, due: review.due || 0, learned: review.learned || 0 }),
    datasets: [
      { label: t("review_total"), data: sessions.map((s) => s.review_items) },
      { label: t("review_learned"), data: sessions.map((s) => s.review_items_learned) },
    ],
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

function levelChart(p) {
  const points = [...((p.series && p.series.level) || [])];
  if (!points.length) return null;
  // Carry the level to today, so a single change still draws as a line.
  const today = new Date().toISOString();
  if (p.level && date(points[points.length - 1].at) !== date(today)) points.push({ cefr: p.level.cefr, at: today });
  const labels = points.map((x) => date(x.at));
  const now = p.level ? p.level.cefr : points[points.length - 1].cefr;
  return chartFigure({
    id: "chart-level", type: "line", labels, labelsTitle: t("date"),
    title: t("chart_level"),
    summary: t("chart_level_summary", { from: points[0].cefr, now }),
    datasets: [{ label: t("level"), data: points.map((x) => LEVELS.indexOf(x.cefr)), stepped: true, pointRadius: 4 }],
    format: (v) => LEVELS[v] || "—",
    options: {
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => LEVELS[c.parsed.y] } } },
      scales: { y: { min: 0, max: 5, ticks: { stepSize: 1, callback: (v) => LEVELS[v] } } },
    },
  });
}

function acsChart(sessions, labels) {
  const graded = sessions.map((s, i) => [s, labels[i]]).filter(([s]) => Object.keys(s.acs || {}).length);
  if (!graded.length) return null;
  const grades = ["satisfactory", "probe", "unsatisfactory"];
  return chartFigure({
    id: "chart-acs", type: "bar", labels: graded.map(([, l]) => l), labelsTitle: t("session"),
    title: t("chart_acs"),
    summary: t("chart_acs_summary", { sessions: graded.length }),
    datasets: grades.map((g, i) => ({
      label: t(`grade_${g}`), data: graded.map(([s]) => (s.acs || {})[g] || 0),
      backgroundColor: ["#009e73", "#e69f00", "#d55e00"][i],
    })),
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });
}

/** Rows: areas of operation; columns: task letters; a cell: mastery 0-5 (colour and text). */
function acsGrid(acs) {
  const codes = Object.keys(acs.tasks || {});
  const areas = [...new Set(codes.map((c) => c.split(".")[1]))];
  const letters = [...new Set(codes.map((c) => c.split(".")[2]))].sort();
  const titles = { ...(acs.areas || {}) };
  for (const a of acs.uncovered_areas || []) titles[a.area] = titles[a.area] || a.title;
  const cell = (area, letter) => {
    const task = acs.tasks[`PA.${area}.${letter}`];
    if (!task) return h("td", { class: "none" }, h("span", { class: "sr-only" }, t("no_task")));
    const text = task.covered ? `${task.mastery}/5` : "—";
    return h("td", { class: task.covered ? `m${task.mastery}` : "uncovered", title: `PA.${area}.${letter} ${task.title}` },
      h("span", { "aria-hidden": "true" }, text),
      h("span", { class: "sr-only" }, `${letter}: ${task.title}: ${task.covered ? t("mastery", { n: task.mastery }) : t("not_asked")}`));
  };
  return h("section", { class: "acs" },
    h("h2", { id: "acs-title" }, t("acs_grid")),
    h("p", { class: "hint" }, t("acs_grid_hint")),
    h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-labelledby": "acs-title" },
      h("table", { class: "acs-grid" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("area")), letters.map((l) => h("th", { scope: "col" }, l)))),
        h("tbody", {}, areas.map((a) => h("tr", {},
          h("th", { scope: "row" }, a, titles[a] ? h("span", { class: "area-title" }, ` ${titles[a]}`) : null),
          letters.map((l) => cell(a, l))))))),
    acs.uncovered_areas && acs.uncovered_areas.length
      ? h("p", {}, t("areas_not_covered"), " ", acs.uncovered_areas.map((a) => `${a.area} ${a.title}`).join(", "))
      : null);
}
