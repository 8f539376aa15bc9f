// The learner's access token. The operator's app hands the learner a link
// `<server>/#token=<token>`: the token is in the URL *fragment*, which browsers never send
// to the server (so it is in no access log). We keep it in localStorage, so the app
// installed on a phone's home screen (which starts at manifest's start_url, without the
// fragment) still has it, and take it out of the address bar at once
// (history.replaceState), so it is not bookmarked, shared by copying the URL, or kept in
// the browser history. It is short-lived (at most 7 days) and forgotten on any 401.

const KEY = "voxtutor-learner-token";

/** Move a `#token=...` fragment into localStorage; returns true when one was found. */
export function takeTokenFromUrl() {
  const params = new URLSearchParams(location.hash.replace(/^#\/?/, ""));
  const token = params.get("token");
  if (!token) return false;
  localStorage.setItem(KEY, token);
  history.replaceState(null, "", `${location.pathname}${location.search}#/start`);
  return true;
}

export function token() {
  return localStorage.getItem(KEY);
}

export function forgetToken() {
  localStorage.removeItem(KEY);
}
