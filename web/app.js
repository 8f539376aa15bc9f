// voxtutor browser room: create a session through the API, then talk over WebRTC.
// The live transcript comes from the bot's RTVI messages on the data channel.
const $ = (id) => document.getElementById(id);
const api = "/api/v1";
let session = null;
let pc = null;
let pinger = null;

function headers() {
  return { "Content-Type": "application/json", Authorization: `Bearer ${$("key").value.trim()}` };
}

function status(text) { $("status").textContent = text; }

async function call(method, path, body) {
  const r = await fetch(api + path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message || `${method} ${path}: ${r.status}`);
  return data;
}

function addLine(role, text, partial) {
  const box = $("transcript");
  let last = box.lastElementChild;
  if (!(last && last.classList.contains(role) && last.classList.contains("partial"))) {
    last = document.createElement("div");
    box.appendChild(last);
  }
  last.className = `turn ${role}${partial ? " partial" : ""}`;
  last.textContent = text;
}

let botLine = null;

const ROLES = { stt: "speech recognition", llm: "tutor model", tts: "tutor voice" };
const QUOTAS = { exchanges_per_session: "exchanges this session", tts_chars_per_month: "voice characters this month" };

// The server's own messages (RTVI server-message): provider switches and quota notices.
function notice(d) {
  if (d.type === "provider-switch") {
    return `The ${ROLES[d.role] || d.role} switched from ${d.from} to ${d.to} (${d.reason}); the conversation goes on.`;
  } else if (d.type === "quota-warning") {
    return `You have used ${d.used} of ${d.limit} ${QUOTAS[d.quota] || d.quota}.`;
  } else if (d.type === "quota-reached") {
    return `Limit reached: ${d.used} of ${d.limit} ${QUOTAS[d.quota] || d.quota}. The tutor is saying goodbye.`;
  }
  return null;
}

function onRtvi(msg) {
  if (msg.label !== "rtvi-ai") return;
  const d = msg.data || {};
  if (msg.type === "user-transcription") {
    addLine("learner", d.text, !d.final);
    botLine = null;
  } else if (msg.type === "bot-started-speaking") {
    botLine = null;
  } else if (msg.type === "server-message" && notice(d)) {
    const line = document.createElement("div");
    line.className = "turn notice";
    line.setAttribute("role", "alert");
    line.textContent = notice(d);
    $("transcript").appendChild(line);
  } else if (msg.type === "bot-output" && d.spoken && d.text) {
    // One line per bot turn; each sentence is appended once it has been spoken, so a
    // barge-in leaves exactly what the learner heard.
    if (!botLine) {
      botLine = document.createElement("div");
      botLine.className = "turn bot";
      $("transcript").appendChild(botLine);
    }
    botLine.textContent = botLine.textContent ? `${botLine.textContent} ${d.text}` : d.text;
  }
}

$("load").onclick = async () => {
  try {
    sessionStorage.setItem("voxtutor-key", $("key").value.trim());
    const personas = await call("GET", "/personas");
    $("persona").innerHTML = personas.map(
      (p) => `<option value="${p.id}" data-lang="${p.language}">${p.name} (${p.id}, ${p.language})</option>`
    ).join("");
    $("persona").disabled = false;
    $("start").disabled = false;
    status("Choose a persona and start.");
  } catch (e) { status(`Error: ${e.message}`); }
};

$("start").onclick = async () => {
  $("start").disabled = true;
  try {
    const opt = $("persona").selectedOptions[0];
    status("Starting the tutor…");
    const learner = await call("POST", "/learners", { name: "Web learner", target_language: opt.dataset.lang });
    session = await call("POST", "/sessions", {
      persona: opt.value, tier: "local", transport: "webrtc", learner_id: learner.id,
    });
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    pc = new RTCPeerConnection();
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    const dc = pc.createDataChannel("chat");
    dc.onmessage = (ev) => { try { onRtvi(JSON.parse(ev.data)); } catch (_) { /* not JSON */ } };
    dc.onopen = () => { pinger = setInterval(() => dc.send(`ping: ${Date.now()}`), 1000); };
    pc.ontrack = (ev) => { if (ev.track.kind === "audio") $("bot").srcObject = new MediaStream([ev.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
      setTimeout(resolve, 2000);
    });
    const { offer_url: offerUrl, token } = session.connect;
    // The session token goes in a header, never in the URL (URLs end up in logs).
    const r = await fetch(offerUrl, {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.message || `offer: ${r.status}`);
    await pc.setRemoteDescription(answer);
    $("end").disabled = false;
    status(`Connected: session ${session.session_id}`);
  } catch (e) {
    status(`Error: ${e.message}`);
    $("start").disabled = false;
  }
};

$("end").onclick = async () => {
  if (!session) return;
  await call("DELETE", `/sessions/${session.session_id}`).catch(() => {});
  status("Session ended.");
  $("end").disabled = true;
  setTimeout(() => { clearInterval(pinger); pc && pc.close(); }, 8000);
};

$("key").value = sessionStorage.getItem("voxtutor-key") || "";
