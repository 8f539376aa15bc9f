// The learner-scoped API (`/api/v1/me...`), called with the learner's token only.
// Errors arrive as `{error, message}`; a 401 means the link expired or is not valid, which
// the app announces once (main.js listens for "voxtutor:expired").
import { token } from "./auth.js";

export class ApiError extends Error {
  constructor(status, body, headers) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error || "http_error";
    this.body = body;
    const retry = Number(headers.get("Retry-After"));
    this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  }
}

/** Call the API: `api("GET", "/me")`. Resolves to the JSON body (or null for no content). */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const data = r.status === 204 ? null : await r.json().catch(() => ({}));
  if (r.status === 401) window.dispatchEvent(new CustomEvent("voxtutor:expired"));
  if (!r.ok) throw new ApiError(r.status, data || {}, r.headers);
  return data;
}
