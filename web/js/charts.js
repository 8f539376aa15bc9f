// Chart.js (npm `chart.js`, its UMD build served from /vendor/, see README) for the progress
// charts. Each chart is a <figure>: a heading, the canvas (role="img" with a one-line summary
// for screen readers) and the same numbers as a table under "Show the numbers", so the data
// is there without sight, without a mouse and, should the library fail to load, at all.
import { h } from "./dom.js";
import { t } from "./i18n.js";

// Distinguishable colours (Okabe–Ito palette: readable with the common colour-vision deficiencies).
export const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000", "#999999"];

const BASE = {
  animation: false, // charts appear at once (and screenshots/tests see them drawn)
  maintainAspectRatio: false,
  responsive: true,
  plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
};

function merge(a, b) {
  const out = { ...a };
  for (const [k, v] of Object.entries(b || {})) {
    out[k] = v && typeof v === "object" && !Array.isArray(v) && typeof a[k] === "object" ? merge(a[k], v) : v;
  }
  return out;
}

/**
 * A chart figure. labels: x labels; datasets: [{label, data, ...Chart.js dataset options}];
 * summary: what the chart shows, in words; options: Chart.js options merged over ours.
 */
export function chartFigure({ id, title, summary, type, labels, labelsTitle, datasets, options, format = String }) {
  const canvas = h("canvas", { id, role: "img", "aria-label": `${title}. ${summary}` });
  const figure = h("figure", { class: "chart" },
    h("figcaption", {}, h("h3", {}, title), h("p", { class: "hint" }, summary)),
    h("div", { class: "chart-box" }, canvas),
    h("details", {}, h("summary", {}, t("show_numbers")), dataTable(labels, labelsTitle, datasets, format)));
  if (typeof window.Chart === "function") {
    const styled = datasets.map((d, i) => ({
      backgroundColor: PALETTE[i % PALETTE.length], borderColor: PALETTE[i % PALETTE.length], ...d,
    }));
    // Drawn once the canvas is in the page (Chart.js measures its container).
    requestAnimationFrame(() => new window.Chart(canvas, { type, data: { labels, datasets: styled }, options: merge(BASE, options) }));
  } else {
    figure.classList.add("no-chart");
  }
  return figure;
}

function dataTable(labels, labelsTitle, datasets, format) {
  return h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": t("show_numbers") },
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, labelsTitle), datasets.map((d) => h("th", { scope: "col" }, d.label)))),
      h("tbody", {}, labels.map((label, i) => h("tr", {},
        h("th", { scope: "row" }, label),
        datasets.map((d) => h("td", {}, d.data[i] === null || d.data[i] === undefined ? "—" : format(d.data[i]))))))));
}
