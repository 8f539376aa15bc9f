// The learner's access token. The operator's app hands the learner a link
// `<server>/#token=<token>`: the token is in the URL *fragment*, which browsers never send
// to the server (so it is in no access log). We keep it in this tab's sessionStorage and
// take it out of the address bar at once (history.replaceState), so it is not bookmarked,
// shared by copying the URL, or kept in the browser history.

const KEY = "voxtutor-learner-token";

/** Move a `#token=...` fragment into sessionStorage; returns true when one was found. */
export function takeTokenFromUrl() {
  const params = new URLSearchParams(location.hash.replace(/^#\/?/, ""));
  const token = params.get("token");
  if (!token) return false;
  sessionStorage.setItem(KEY, token);
  history.replaceState(null, "", `${location.pathname}${location.search}#/start`);
  return true;
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}
