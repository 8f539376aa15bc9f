// Interface strings in English, German and Czech. The language follows the chosen persona's
// (a German learner practising with Lena sees German), unless the learner picks one with the
// switch in the header (kept in localStorage). Dates and numbers use Intl for the language.
import { STRINGS } from "./strings.js";

export const LANGUAGES = { en: "English", de: "Deutsch", cs: "Čeština" };
const KEY = "voxtutor-language";
const LAST = "voxtutor-last-language"; // for pages shown before the learner is known
let lang = "en";
let listeners = [];

/** "auto" (follow the persona) or a language the learner picked. */
export function choice() {
  const c = localStorage.getItem(KEY);
  return c in LANGUAGES ? c : "auto";
}

/** The language to speak before the learner is known: the last one used, or the browser's. */
export function lastLanguage() {
  const last = localStorage.getItem(LAST);
  return last in LANGUAGES ? last : (navigator.language || "en").slice(0, 2);
}

function set(next) {
  if (!(next in LANGUAGES) || next === lang) return;
  lang = next;
  localStorage.setItem(LAST, next);
  document.documentElement.lang = next;
  listeners.forEach((fn) => fn(next));
}

/** The learner's pick from the switch ("auto" to follow the persona again). */
export function choose(c, fallback) {
  if (c === "auto") localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, c);
  set(c === "auto" ? fallback : c);
}

/** Follow a persona's language, unless the learner picked one. */
export function follow(personaLanguage) {
  set(choice() === "auto" ? personaLanguage : choice());
}

export function onLanguageChange(fn) {
  listeners.push(fn);
}

/**
 * The string `key` with {name} placeholders filled from vars. `count` picks the plural form
 * (Intl.PluralRules: Czech has one/few/other). Missing in this language → English →
 * `fallback` → the key itself.
 */
export function t(key, vars = {}, fallback = null, count = null) {
  let s = STRINGS[lang][key] ?? STRINGS.en[key] ?? fallback ?? key;
  if (typeof s === "object") s = s[new Intl.PluralRules(lang).select(count ?? vars.n ?? 0)] ?? s.other;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ""));
}

export function number(n) {
  return new Intl.NumberFormat(lang).format(n);
}

export function date(iso) {
  return new Intl.DateTimeFormat(lang, { day: "numeric", month: "short" }).format(new Date(iso));
}

export function dateTime(iso) {
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}

/** A language's name in the interface language (Intl.DisplayNames), e.g. "Deutsch". */
export function languageName(code) {
  try {
    return new Intl.DisplayNames([lang], { type: "language" }).of(code);
  } catch {
    return code;
  }
}
