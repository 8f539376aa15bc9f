// Hash routing (#/start, #/session, #/history, #/history/<id>, #/progress): the server
// serves one index.html and knows nothing of the app's pages, and a hash change never
// reloads the page, so a live session keeps talking while the learner looks at History.

const routes = new Map();
let current = null;
let onRender = () => {};

/** Register a page: render(params) returns the page's root element (or a promise of it). */
export function route(name, render) {
  routes.set(name, render);
}

/** The route now in the address bar: {name, id}. */
export function parse() {
  const [name, id] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: routes.has(name) ? name : "start", id: id ? decodeURIComponent(id) : null };
}

export function go(path) {
  if (location.hash === `#/${path}`) refresh();
  else location.hash = `#/${path}`;
}

/** Render the current route again (e.g. after the interface language changed). */
export async function refresh() {
  if (!routes.size) return; // not started yet
  const target = parse();
  current = target;
  const page = await routes.get(target.name)(target);
  if (current === target) onRender(target, page); // a later navigation wins
}

export function start(render) {
  onRender = render;
  window.addEventListener("hashchange", refresh);
  return refresh();
}
