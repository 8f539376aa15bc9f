// The learner's app: reads the access token from the link, loads the learner (/me), draws
// the header (navigation, language switch) and hands the page area to the router.
import { takeTokenFromUrl, token, forgetToken } from "./auth.js";
import { h, replace } from "./dom.js";
import { LANGUAGES, choice, choose, follow, lastLanguage, onLanguageChange, t } from "./i18n.js";
import { renderHistory } from "./pages/history.js";
import { renderProgress } from "./pages/progress.js";
import { renderSession } from "./pages/session.js";
import { renderStart, stopMicCheck } from "./pages/start.js";
import { parse, refresh, route, start } from "./router.js";
import { loadMe, persona, state } from "./state.js";

const view = document.getElementById("view");
const PAGES = ["start", "session", "history", "progress"];
let first = true;
let shown = null; // the keys of the message shown instead of a page, if any

/** The language the persona in play (the live one, else the last chosen) speaks. */
function personaLanguage() {
  const p = state.live ? persona(state.live.options.persona) : null;
  if (p) return p.language;
  return state.me ? state.me.learner.target_language : lastLanguage();
}

function header() {
  const nav = h("nav", { "aria-label": t("nav_label") },
    h("ul", {}, PAGES.map((p) => h("li", {}, h("a", { href: `#/${p}`, "data-page": p }, t(`nav_${p}`))))));
  const select = h("select", { id: "lang" },
    h("option", { value: "auto", selected: choice() === "auto" }, t("lang_auto")),
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, lang: code, selected: choice() === code }, name)));
  select.addEventListener("change", () => choose(select.value, personaLanguage()));
  replace(document.getElementById("top"),
    h("a", { class: "skip", href: "#view" }, t("skip")),
    h("div", { class: "bar" },
      h("a", { class: "brand", href: "#/start" }, h("img", { src: "/icons/icon.svg", alt: "", width: "28", height: "28" }), " voxtutor"),
      h("div", { class: "lang" }, h("label", { for: "lang" }, t("language")), select)),
    state.me ? nav : null);
  markNav();
}

function markNav() {
  const { name } = parse();
  document.querySelectorAll("nav a[data-page]").forEach((a) => {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
}

/** Show a page; move focus to its heading so screen readers announce the new page. */
function show(target, page) {
  shown = null;
  if (target.name !== "start") stopMicCheck();
  replace(view, page);
  markNav();
  const title = page.querySelector("h1");
  document.title = `${title ? title.textContent : ""} — voxtutor`;
  if (!first && title) title.focus();
  first = false;
}

/** A page's render, with its failure shown in place of the page. */
function safe(render) {
  return async (target) => {
    try {
      return await render(target);
    } catch (e) {
      const again = h("button", { type: "button" }, t("retry"));
      again.addEventListener("click", refresh);
      return h("section", { class: "page" },
        h("h1", { tabindex: "-1" }, t(`nav_${target.name}`)),
        h("p", { role: "alert" }, t("load_error", { message: e.message })), again);
    }
  };
}

function message(titleKey, textKey) {
  shown = [titleKey, textKey];
  header();
  replace(view, h("section", { class: `page message ${titleKey}` },
    h("h1", { tabindex: "-1" }, t(titleKey)), h("p", {}, t(textKey))));
  document.title = `${t(titleKey)} — voxtutor`;
}

async function boot() {
  takeTokenFromUrl();
  // A new link opened in this tab (same page, new fragment): start over with its token.
  window.addEventListener("hashchange", () => takeTokenFromUrl() && location.reload());
  follow(personaLanguage());
  onLanguageChange(() => {
    if (shown) message(...shown);
    else { header(); refresh(); }
  });
  header();
  window.addEventListener("voxtutor:expired", () => {
    forgetToken();
    state.me = null;
    message("expired_title", "expired");
  });
  if (!token()) return message("no_link_title", "no_link");
  try {
    await loadMe();
  } catch (e) {
    if (e.status !== 401) message("no_link_title", "no_link");
    return;
  }
  follow(personaLanguage());
  header();
  route("start", safe(renderStart));
  route("session", safe(renderSession));
  route("history", safe(renderHistory));
  route("progress", safe(renderProgress));
  await start(show);
}

boot();
