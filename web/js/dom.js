// Tiny DOM helpers. Every page is built with h(): text goes in as text nodes, never as
// HTML, so nothing a server or a learner says can become markup. No `style` attributes:
// the CSP (style-src 'self') forbids inline styles; classes do the styling.

/**
 * Create an element.
 * attrs: `class`, `for`, `on<event>` (listener), booleans (true = present), `value`,
 * `checked` and `disabled` (set as properties); null/undefined/false are left out.
 * children: nodes, strings, numbers, or arrays of them; null/undefined/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value" || name === "checked" || name === "disabled") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (see h()) to an element. */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Text only screen readers read (e.g. what <del>/<ins> mean: they are not announced). */
export function srOnly(text) {
  return h("span", { class: "sr-only" }, text);
}
