// What the pages share: the learner's /me (loaded once), the live session (if any), and
// the learner's last choices on the Start page (localStorage: no secret in them).
import { api } from "./api.js";

export const state = {
  me: null, // GET /me: {learner, tiers, personas, expires_at}
  live: null, // the LiveSession, while one exists
};

export async function loadMe() {
  state.me = await api("GET", "/me");
  return state.me;
}

export function persona(id) {
  return (state.me && state.me.personas.find((p) => p.id === id)) || null;
}

const CHOICES = "voxtutor-choices";

export function choices() {
  try { return JSON.parse(localStorage.getItem(CHOICES)) || {}; } catch { return {}; }
}

export function saveChoices(c) {
  localStorage.setItem(CHOICES, JSON.stringify({ ...choices(), ...c }));
}
