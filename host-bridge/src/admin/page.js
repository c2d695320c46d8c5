// The admin page: asks for the token once (kept in sessionStorage), reads
// the JSON endpoints with it, and follows /admin/events, a text/event-stream
// read with fetch() (EventSource cannot send the Authorization header).
// Every value is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "host-bridge-admin-token";
const $ = (id) => document.getElementById(id);
let stream = null; // the AbortController of the live stream
let seen = { deadLetters: null, components: null };
let replayable = false;

class Unauthorized extends Error {}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function call(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.status + " " + response.statusText);
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    tr.append(cell instanceof Node ? wrap(cell) : el("td", cell));
  }
  return tr;
}

function wrap(node) { const td = el("td"); td.append(node); return td; }

function say(text, bad) {
  const message = $("message");
  message.textContent = text;
  message.className = bad ? "message bad" : "message";
  message.hidden = false;
}

function askForToken(error) {
  if (stream) stream.abort();
  stream = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !error;
  $("login-error").textContent = error || "";
  $("token").value = "";
  $("token").focus();
  live(false, "not connected");
}

function live(on, text) {
  $("live").className = on ? "tag on" : "tag off";
  $("live").textContent = text;
}

async function open() {
  try {
    await loadOverview();
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken("Wrong token: the admin API answered 401. Try again.");
    $("main").hidden = false;
    return say("Cannot read the overview: " + e.message, true);
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  await loadDeadLetters();
  follow();
}

// Components, routes and subscriptions.
async function loadOverview() {
  const o = await call("GET", "/admin/overview");
  $("app").textContent = o.app;
  $("broker").textContent = "broker: " + o.broker;
  const subscriptions = $("subscriptions").tBodies[0];
  subscriptions.replaceChildren();
  for (const s of o.subscriptions) {
    const tr = row([s.pubsubname, s.topic, s.route, s.component, s.deadLetterTopic || "—"]);
    tr.dataset.sub = s.index;
    for (const name of ["delivered", "perSecond", "p50", "p99", "success", "retry", "drop", "inFlight"]) {
      tr.append(el("td", "0", "num " + name));
    }
    subscriptions.append(tr);
  }
  const routes = $("routes").tBodies[0];
  routes.replaceChildren(...o.routes.map((r) => row([r.route, r.component])));
  if (!o.routes.length) routes.append(row(["none", ""]));
  const components = $("components");
  components.replaceChildren();
  for (const c of o.components) {
    const box = el("div", null, "component");
    box.dataset.component = c.name;
    box.append(el("h3", c.name));
    const dl = el("dl");
    const item = (term, value, className) => { dl.append(el("dt", term), el("dd", value, className)); };
    item("world", c.worlds.join(", ") || "—");
    item("version", c.digest, "mono digest");
    item("deployed", c.deployedAt ? "live, at " + c.deployedAt : "as started");
    for (const g of c.grants) item(g.what, g.grants.length ? g.grants.join(", ") : "none");
    const l = c.limits;
    item("limits", "timeout " + l.timeoutMs + " ms, memory " + Math.round(l.maxMemory / 1048576) + " MiB, " +
      "instances " + (l.maxInstances ?? "unbounded") + ", reuse " + l.instanceReuse + ", clock " +
      (l.clock ? "real" : "zero") + ", on error " + l.onError);
    box.append(dl);
    components.append(box);
  }
}

// A payload as text, pretty JSON, or hex.
function showData(d) {
  const bytes = Uint8Array.from(atob(d.dataBase64), (c) => c.charCodeAt(0));
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (_) { text = null; }
  let kind = "hex";
  let shown;
  if (text !== null && !/[\u0000-\u0008\u000e-\u001f]/.test(text)) {
    kind = "text";
    shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); kind = "JSON"; } catch (_) { /* text */ }
  } else {
    shown = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
  }
  const box = el("div");
  box.append(el("div", d.datacontenttype + " · " + kind + (d.dataTruncated ? " · first bytes only" : ""), "kind"),
    el("pre", shown, "data"));
  return box;
}

async function loadDeadLetters() {
  let listing;
  try {
    listing = await call("GET", "/admin/dead-letters");
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken("Wrong token: the admin API answered 401. Try again.");
    return say("Cannot read the dead letters: " + e.message, true);
  }
  replayable = listing.replayable;
  $("dead-letter-note").textContent = listing.note;
  const body = $("dead-letters").tBodies[0];
  body.replaceChildren();
  for (const d of listing.deadLetters) {
    const why = el("div");
    why.append(el("div", d.reason, d.reason === "DROP" ? "drop" : "retry"), el("div", d.lastError, "hint"));
    if (d.deadLetterTopic) why.append(el("div", "also sent to " + d.deadLetterTopic, "hint"));
    const actions = el("td", null, "actions");
    if (replayable) {
      const replay = el("button", "Replay");
      replay.type = "button";
      replay.className = "replay";
      replay.addEventListener("click", () => act("POST", "/admin/dead-letters/" + encodeURIComponent(d.id) + "/replay", "Replayed " + d.id + " to " + d.topic + " for " + d.component));
      const remove = el("button", "Delete", "danger delete");
      remove.type = "button";
      remove.addEventListener("click", () => act("DELETE", "/admin/dead-letters/" + encodeURIComponent(d.id), "Deleted " + d.id));
      actions.append(replay, " ", remove);
    }
    const tr = row([d.id, el("span", d.eventId, "mono"), d.pubsubname + "/" + d.topic, d.component,
      el("span", d.attempts, "num"), why, new Date(d.atUnixMs).toLocaleString(), showData(d)]);
    tr.append(actions);
    tr.dataset.id = d.id;
    tr.dataset.eventId = d.eventId;
    body.append(tr);
  }
  $("no-dead-letters").hidden = listing.deadLetters.length > 0;
  $("actions").replaceChildren(...listing.actions.map((a) =>
    el("li", new Date(a.atUnixMs).toLocaleString() + ": " + a.action + " " + a.id + " (" + a.topic + ", " + a.component + ")")));
}

async function act(method, path, done) {
  try {
    await call(method, path);
    say(done);
  } catch (e) {
    if (e instanceof Unauthorized) return askForToken("Wrong token: the admin API answered 401. Try again.");
    say(e.message, true);
  }
  await loadDeadLetters();
}

function fmt(n, digits) { return n === null || n === undefined ? "—" : Number(n).toFixed(digits); }

function showStats(stats) {
  for (const s of stats.subscriptions) {
    const tr = document.querySelector('#subscriptions tr[data-sub="' + s.index + '"]');
    if (!tr) continue;
    const set = (name, value) => { tr.querySelector("." + name).textContent = value; };
    set("delivered", s.delivered);
    set("perSecond", fmt(s.perSecond, 1));
    set("p50", s.p50Ms === null ? "—" : fmt(s.p50Ms, 1) + " ms");
    set("p99", s.p99Ms === null ? "—" : fmt(s.p99Ms, 1) + " ms");
    set("success", s.success);
    set("retry", s.retry);
    set("drop", s.drop);
    set("inFlight", s.inFlight);
  }
  // Also on the first event: the list may have changed since it was read.
  if (seen.deadLetters !== stats.deadLetters) loadDeadLetters();
  if (seen.components !== null && seen.components !== stats.components) loadOverview().catch(() => {});
  seen = { deadLetters: stats.deadLetters, components: stats.components };
}

// Reads /admin/events: server-sent events, parsed here.
async function follow() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/admin/events", {
      headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (response.status === 401) return askForToken("Wrong token: the admin API answered 401. Try again.");
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).message || response.status);
    live(true, "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          if (field === "data") data.push(text);
        }
        if (event === "stats" && data.length) showStats(JSON.parse(data.join("\n")));
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
    live(false, "disconnected: " + e.message);
  }
  if (stream !== controller) return;
  live(false, "reconnecting");
  setTimeout(() => { if (stream === controller) follow(); }, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token").value.trim();
    if (!given) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    open();
  });
  $("sign-out").addEventListener("click", () => askForToken(null));
  if (token()) open(); else askForToken(null);
});
