// edge-mtl live page: cameras, the live event feed with snapshots, filters. No build step, no dependencies.
// The API token comes from the URL fragment (#token=..., never sent to the server, removed from the address bar)
// or the token box, and is kept in sessionStorage for this tab only. Every request sends it as a bearer token,
// so the event stream is read with fetch() rather than EventSource (which cannot send headers).
"use strict";

const MAX_ROWS = 200;
const state = { token: null, camera: "", identity: "", lastSeq: 0, gen: 0, abort: null };
const $ = (id) => document.getElementById(id);

function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("edge-mtl-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("edge-mtl-token");
}

function needLogin(msg) {
  $("login").style.display = "block";
  setStatus(msg || "token needed");
}

function setStatus(text) { $("status").textContent = text; }

async function api(path, opts = {}) {
  const headers = { Authorization: "Bearer " + (state.token || "") };
  const r = await fetch(path, { ...opts, headers, cache: "no-store" });
  if (r.status === 401) { needLogin("wrong or missing token"); throw new Error("401"); }
  return r;
}

// ---------------------------------------------------------------- cameras and gallery
function fillSelect(sel, values, keep) {
  const have = new Set([...sel.options].map((o) => o.value));
  for (const v of values) {
    if (!have.has(v)) { const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); }
  }
  sel.value = keep;
}

async function refreshCameras() {
  try {
    const r = await api("/api/cameras");
    const data = await r.json();
    const box = $("cameras");
    box.replaceChildren();
    for (const c of data.cameras) {
      const row = document.createElement("div");
      row.className = "cam";
      row.dataset.camera = c.name;
      const name = document.createElement("span");
      name.textContent = `${c.name} (${c.fps.toFixed(1)} fps)`;
      const st = document.createElement("span");
      st.className = "state " + c.state;
      st.textContent = c.state;
      row.append(name, st);
      box.appendChild(row);
    }
    fillSelect($("f-camera"), data.cameras.map((c) => c.name), state.camera);
  } catch (e) { /* shown in the status line */ }
}

async function refreshGallery() {
  try {
    const data = await (await api("/api/gallery")).json();
    fillSelect($("f-identity"), data.people.map((p) => p.name), state.identity);
  } catch (e) { /* next time */ }
}

// ---------------------------------------------------------------- the feed
function filterQuery() {
  const q = [];
  if (state.camera) q.push("camera=" + encodeURIComponent(state.camera));
  if (state.identity === "-unknown-") q.push("unknown=1");
  else if (state.identity) q.push("identity=" + encodeURIComponent(state.identity));
  return q.join("&");
}

async function loadSnapshot(ev, holder) {
  try {
    const r = await api(`/api/events/${ev.id}/snapshot`);
    if (!r.ok) {
      const body = await r.json();
      holder.textContent = body.state === "missing" ? "deleted" : "no snapshot";
      holder.title = body.error;
      return;
    }
    const img = document.createElement("img");
    img.alt = "face of " + ev.track_id;
    img.className = "snapshot";
    img.src = URL.createObjectURL(await r.blob());
    holder.replaceWith(img);
  } catch (e) { holder.textContent = "unavailable"; }
}

function render(ev) {
  const row = document.createElement("div");
  row.className = "event";
  row.dataset.seq = ev.seq;
  row.dataset.camera = ev.camera;
  const holder = document.createElement("div");
  holder.className = "noimg";
  holder.textContent = ev.snapshot ? "loading" : "no snapshot";
  const text = document.createElement("div");
  const who = document.createElement("div");
  who.className = "who";
  if (ev.identity) who.textContent = `${ev.identity.name} (${ev.identity.similarity.toFixed(2)})`;
  else { who.textContent = ev.type === "face.appeared" ? "face" : "unknown"; who.classList.add("unknown"); }
  const attrs = document.createElement("div");
  const bits = [];
  if (ev.age) bits.push(`age ${ev.age.years.toFixed(0)} ± ${ev.age.std.toFixed(0)}`);
  if (ev.gender) bits.push(`${ev.gender.label} (${ev.gender.confidence.toFixed(2)})`);
  attrs.textContent = bits.join(", ") || "age and gender not estimated yet";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${ev.type} · ${ev.camera} · ${ev.track_id} · ${ev.ts} · #${ev.seq}`;
  text.append(who, attrs, meta);
  row.append(holder, text);
  if (ev.snapshot) loadSnapshot(ev, holder);
  return row;
}

function drop(row) {
  for (const img of row.querySelectorAll("img.snapshot")) URL.revokeObjectURL(img.src);
  row.remove();
}

function add(ev) {
  const feed = $("feed");
  feed.prepend(render(ev));
  while (feed.children.length > MAX_ROWS) drop(feed.lastChild);
}

async function stream(gen) {
  // Server-Sent Events over fetch: resumes after the last seq seen (Last-Event-ID) whenever the connection drops.
  while (gen === state.gen) {
    const ctl = new AbortController();
    state.abort = ctl;
    try {
      const headers = { Authorization: "Bearer " + (state.token || ""), "Last-Event-ID": String(state.lastSeq) };
      const q = filterQuery();
      const r = await fetch("/api/stream" + (q ? "?" + q : ""), { headers, signal: ctl.signal, cache: "no-store" });
      if (r.status === 401) { needLogin("wrong or missing token"); return; }
      setStatus("live");
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (id !== null) state.lastSeq = Number(id);
          if (data && gen === state.gen) add(JSON.parse(data));
        }
      }
    } catch (e) {
      if (gen !== state.gen) return;
    }
    setStatus("reconnecting");
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

async function restart() {
  state.gen += 1;
  const gen = state.gen;
  if (state.abort) state.abort.abort();
  for (const row of [...$("feed").children]) drop(row);
  state.lastSeq = 0;
  try {
    const q = filterQuery();
    const data = await (await api("/api/events?order=desc&limit=30" + (q ? "&" + q : ""))).json();
    if (gen !== state.gen) return;
    for (const ev of data.events.slice().reverse()) add(ev);
    // everything matching up to last_seq (read before the query) is in the history or older than it
    state.lastSeq = Math.max(data.last_seq, data.events.length ? data.events[0].seq : 0);
  } catch (e) { return; }
  stream(gen);
}

let timers = false;
function begin() {
  refreshCameras(); refreshGallery(); restart();
  if (!timers) { timers = true; setInterval(refreshCameras, 2000); setInterval(refreshGallery, 30000); }
}

function main() {
  takeToken();
  $("save").addEventListener("click", () => {
    state.token = $("token").value.trim();
    sessionStorage.setItem("edge-mtl-token", state.token);
    $("login").style.display = "none";
    begin();
  });
  $("f-camera").addEventListener("change", (e) => { state.camera = e.target.value; restart(); });
  $("f-identity").addEventListener("change", (e) => { state.identity = e.target.value; restart(); });
  window.addEventListener("hashchange", () => {  // a link with #token= opened in this tab: no reload happens
    if (!/token=/.test(location.hash)) return;
    takeToken();
    $("login").style.display = "none";
    begin();
  });
  if (!state.token) { needLogin(); return; }
  begin();
}

main();
