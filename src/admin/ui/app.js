// wsfault web console: plain JavaScript, no dependencies, same origin only.
//
// Everything comes from the admin API: /proxies, /toxic-types (the toxic
// forms are built from it), /proxies/{p}/connections and /stats (the chart).
// With an admin token, the first 401 asks for it; it is kept in
// sessionStorage and sent as "Authorization: Bearer".
"use strict";

const TOKEN_KEY = "wsfault.token";
const WINDOW_MS = 5 * 60 * 1000;
const POLL_MS = 1000;

const state = {
  proxies: {},        // name -> proxy as GET /proxies shows it
  types: [],          // GET /toxic-types
  selected: null,     // proxy name
  editing: null,      // toxic being edited (its current JSON), or null
  series: {},         // proxy name -> [{t, messages, actions}]
  last: null,         // previous /stats snapshot {t, proxies}
  actions: {},        // proxy name -> {toxic name -> actions/s}
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- DOM helper

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ------------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

let tokenPrompt = null;

// Shows the token dialog (once, however many calls wait for it).
function askToken(why) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-why").textContent = why;
      $("token-input").value = "";
      const form = $("token-form");
      const done = (event) => {
        event.preventDefault();
        const token = $("token-input").value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        form.removeEventListener("submit", done);
        dialog.close();
        tokenPrompt = null;
        $("forget-token").hidden = false;
        resolve();
      };
      form.addEventListener("submit", done);
      dialog.addEventListener("cancel", (e) => e.preventDefault());
      dialog.showModal();
      $("token-input").focus();
    });
  }
  return tokenPrompt;
}

async function api(method, path, body) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      setStatus(false, "admin API unreachable");
      throw new ApiError("admin API unreachable: " + err.message, 0);
    }
    setStatus(true);
    if (response.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      await askToken(token ? "The token was refused; try again." : "This admin API needs a token.");
      continue;
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = text;
      }
    }
    if (!response.ok) {
      const message = data && data.error ? data.error : response.status + " " + response.statusText;
      throw new ApiError(message, response.status);
    }
    return data;
  }
}

const enc = encodeURIComponent;

function setStatus(ok, why) {
  const el = $("status");
  el.className = "status " + (ok ? "ok" : "down");
  el.textContent = ok ? "connected" : why || "disconnected";
}

let bannerTimer = null;
function showBanner(message) {
  const el = $("banner");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => (el.hidden = true), 8000);
}

// ------------------------------------------------------------------- format

function fmtAge(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(s < 10 ? 1 : 0) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " m";
}

function fmtBytes(n) {
  if (n < 1000) return n + " B";
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let i = -1;
  do {
    v /= 1000;
    i += 1;
  } while (v >= 1000 && i < units.length - 1);
  return v.toFixed(v < 10 ? 1 : 0) + " " + units[i];
}

function fmtRate(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function fmtValue(v) {
  return JSON.stringify(v);
}

// ------------------------------------------------------------------ proxies

async function loadProxies() {
  state.proxies = (await api("GET", "/proxies")) || {};
  const names = Object.keys(state.proxies).sort();
  if (!state.selected || !state.proxies[state.selected]) {
    const fromHash = decodeURIComponent(location.hash.slice(1));
    state.selected = state.proxies[fromHash] ? fromHash : names[0] || null;
  }
  renderProxyList();
  renderDetail();
  if (!document.body.dataset.ready) document.body.dataset.ready = String(Math.round(performance.now()));
}

function renderProxyList() {
  const list = $("proxy-list");
  const names = Object.keys(state.proxies).sort();
  $("no-proxies").hidden = names.length > 0;
  const stats = (state.last && state.last.proxies) || {};
  list.replaceChildren(
    ...names.map((name) => {
      const p = state.proxies[name];
      const live = stats[name] ? stats[name].connections_active : 0;
      const toxics = (p.toxics || []).length;
      return h(
        "li",
        {
          class: (name === state.selected ? "selected " : "") + (p.enabled ? "" : "disabled"),
          dataset: { proxy: name },
          tabindex: 0,
          onclick: () => select(name),
          onkeydown: (e) => e.key === "Enter" && select(name),
        },
        h("span", { class: "dot " + (p.enabled ? "on" : "off") }),
        h("b", {}, name),
        h("small", {}, p.listen + " → " + p.upstream),
        h("small", { class: "muted" }, toxics + (toxics === 1 ? " toxic" : " toxics") + " · " + live + " live"),
      );
    }),
  );
}

function select(name) {
  if (state.selected === name) return;
  state.selected = name;
  history.replaceState(null, "", "#" + enc(name));
  closeForm();
  renderProxyList();
  renderDetail();
  loadConnections().catch(() => {});
  drawChart();
}

function renderDetail() {
  const p = state.selected && state.proxies[state.selected];
  $("detail").hidden = !p;
  if (!p) return;
  $("proxy-name").textContent = p.name;
  const extra = [p.protocol && p.protocol !== "auto" ? "protocol " + p.protocol : "", p.tls ? "tls" : ""]
    .filter(Boolean)
    .join(" · ");
  $("proxy-route").textContent = p.listen + " → " + p.upstream + (extra ? " · " + extra : "");
  $("proxy-enabled").checked = !!p.enabled;
  renderToxics(p);
}

async function setEnabled(event) {
  const name = state.selected;
  try {
    await api("POST", "/proxies/" + enc(name), { enabled: event.target.checked });
    await loadProxies();
  } catch (err) {
    showBanner(err.message);
    event.target.checked = !event.target.checked;
  }
}

// ------------------------------------------------------------------- toxics

function renderToxics(p) {
  const toxics = p.toxics || [];
  $("no-toxics").hidden = toxics.length > 0;
  const rates = state.actions[p.name] || {};
  $("toxics").querySelector("tbody").replaceChildren(
    ...toxics.map((t) => {
      const attrs = Object.entries(t.attributes || {})
        .filter(([, v]) => v !== null)
        .map(([k, v]) => k + "=" + fmtValue(v));
      const extras = ["match", "schedule", "count"].filter((k) => t[k]);
      return h(
        "tr",
        { dataset: { toxic: t.name } },
        h("td", {}, h("b", {}, t.name)),
        h("td", {}, t.type),
        h("td", {}, t.stream),
        h("td", {}, String(t.toxicity)),
        h(
          "td",
          { class: "attrs" },
          attrs.join(" "),
          extras.map((k) => h("span", { class: "badge", title: JSON.stringify(t[k]) }, k)),
        ),
        h("td", { class: "num" }, fmtRate(rates[t.name]) + "/s"),
        h(
          "td",
          { class: "buttons" },
          h("button", { type: "button", class: "quiet", dataset: { action: "edit" }, onclick: () => openForm(t) }, "Edit"),
          h(
            "button",
            { type: "button", class: "danger", dataset: { action: "remove" }, onclick: () => removeToxic(t.name) },
            "Remove",
          ),
        ),
      );
    }),
  );
}

async function removeToxic(name) {
  try {
    await api("DELETE", "/proxies/" + enc(state.selected) + "/toxics/" + enc(name));
    if (state.editing && state.editing.name === name) closeForm();
    await loadProxies();
  } catch (err) {
    showBanner(err.message);
  }
}

function typeInfo(name) {
  return state.types.find((t) => t.type === name);
}

function openForm(toxic) {
  state.editing = toxic || null;
  const form = $("toxic-form");
  form.hidden = false;
  $("toxic-error").hidden = true;
  $("toxic-form-title").textContent = toxic ? "Edit toxic " + toxic.name : "Add a toxic";
  $("toxic-submit").textContent = toxic ? "Save" : "Add";
  const type = $("toxic-type");
  type.disabled = !!toxic;
  $("toxic-name").disabled = !!toxic;
  $("toxic-name").value = toxic ? toxic.name : "";
  $("toxic-stream").value = toxic ? toxic.stream : "downstream";
  $("toxic-toxicity").value = toxic && toxic.toxicity !== 1 ? String(toxic.toxicity) : "";
  const extra = {};
  for (const k of ["match", "schedule", "count"]) if (toxic && toxic[k]) extra[k] = toxic[k];
  $("toxic-extra").value = Object.keys(extra).length ? JSON.stringify(extra) : "";
  $("toxic-advanced").open = Object.keys(extra).length > 0;
  if (toxic) type.value = toxic.type;
  buildAttributes(toxic ? toxic.attributes || {} : {});
  form.scrollIntoView({ block: "nearest" });
}

function closeForm() {
  state.editing = null;
  $("toxic-form").hidden = true;
}

function rangeText(a) {
  if (a.kind === "integer" || a.kind === "number") {
    const max = a.max >= 9007199254740991 ? "2^63−1" : String(a.max);
    return a.min + "…" + max;
  }
  if (a.kind === "choice") return a.choices.join(" | ");
  if (a.kind === "choices") return "any of " + a.choices.join(", ");
  if (a.kind === "boolean") return "true | false";
  return "";
}

function hintText(a) {
  const parts = [];
  const range = rangeText(a);
  if (range) parts.push(range);
  if (a.required) parts.push("required");
  else if (a.default !== null && a.default !== undefined) parts.push("default " + fmtValue(a.default));
  else if (a.depends_on_others) parts.push("default depends on other attributes");
  if (a.one_of) parts.push("one of " + a.one_of.join(" / ") + " is required");
  if (a.excludes) parts.push("not with " + a.excludes.join(", "));
  return parts.join(" · ");
}

// One input per attribute of the selected type, as /toxic-types describes it.
function buildAttributes(values) {
  const info = typeInfo($("toxic-type").value);
  const box = $("toxic-attributes");
  box.replaceChildren();
  if (!info) return;
  const notes = [];
  if (info.handshake_only) notes.push("Acts on the upgrade request only.");
  else if (!info.acts_on_messages) notes.push("Acts on bytes or time: match.message and count do not apply.");
  $("toxic-type-note").textContent = notes.join(" ");
  $("toxic-name").placeholder = info.type + "_" + $("toxic-stream").value;
  for (const a of info.attributes) {
    const id = "attr-" + a.name;
    const current = values[a.name];
    const has = current !== undefined && current !== null;
    let input;
    if (a.kind === "integer" || a.kind === "number") {
      input = h("input", {
        id,
        type: "number",
        min: a.min,
        max: a.max <= Number.MAX_SAFE_INTEGER ? a.max : undefined,
        step: a.kind === "integer" ? 1 : "any",
        placeholder: a.default !== null && a.default !== undefined ? String(a.default) : a.required ? "required" : "",
      });
      if (has) input.value = String(current);
    } else if (a.kind === "boolean" || a.kind === "choice") {
      const choices = a.kind === "boolean" ? ["true", "false"] : a.choices;
      const unset = a.default !== null && a.default !== undefined ? "(default " + a.default + ")" : "(not set)";
      input = h(
        "select",
        { id },
        h("option", { value: "" }, unset),
        choices.map((c) => h("option", { value: c }, c)),
      );
      if (has) input.value = String(current);
    } else if (a.kind === "choices") {
      const chosen = has ? [].concat(current) : [];
      input = h(
        "span",
        { id, class: "choices" },
        a.choices.map((c) =>
          h("label", {}, h("input", { type: "checkbox", value: c, checked: chosen.includes(c) }), c),
        ),
      );
    } else {
      input = h("input", {
        id,
        type: "text",
        placeholder: a.default !== null && a.default !== undefined ? JSON.stringify(a.default) : "",
      });
      if (has) input.value = a.kind === "any" ? JSON.stringify(current) : String(current);
    }
    input.dataset.attr = a.name;
    box.append(
      h(
        "label",
        { class: "attr" + (a.required ? " required" : ""), for: id },
        h("span", { class: "attr-name" }, a.name),
        input,
        h("small", { class: "muted" }, hintText(a)),
      ),
    );
  }
}

// The attribute values the form holds: {name: value} for those given.
function readAttributes() {
  const info = typeInfo($("toxic-type").value);
  const out = {};
  for (const a of info ? info.attributes : []) {
    const el = $("attr-" + a.name);
    if (!el) continue;
    if (a.kind === "choices") {
      const chosen = [...el.querySelectorAll("input:checked")].map((i) => i.value);
      if (chosen.length) out[a.name] = chosen;
      continue;
    }
    const raw = el.value.trim();
    if (raw === "") continue;
    if (a.kind === "integer" || a.kind === "number") {
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new Error(a.name + ": " + JSON.stringify(raw) + " is not a number (valid range " + rangeText(a) + ")");
      out[a.name] = n;
    } else if (a.kind === "boolean") {
      out[a.name] = raw === "true";
    } else if (a.kind === "any") {
      try {
        out[a.name] = JSON.parse(raw);
      } catch (_) {
        out[a.name] = raw;
      }
    } else {
      out[a.name] = el.value;
    }
  }
  return out;
}

async function submitToxic(event) {
  event.preventDefault();
  const error = $("toxic-error");
  error.hidden = true;
  const proxy = state.selected;
  try {
    const attributes = readAttributes();
    let extra = {};
    const text = $("toxic-extra").value.trim();
    if (text) {
      try {
        extra = JSON.parse(text);
      } catch (err) {
        throw new Error("match, schedule, count: not JSON (" + err.message + ")");
      }
      if (typeof extra !== "object" || Array.isArray(extra) || extra === null) {
        throw new Error("match, schedule, count: expected a JSON object");
      }
    }
    const body = Object.assign({}, extra, { stream: $("toxic-stream").value, attributes });
    const toxicity = $("toxic-toxicity").value.trim();
    if (toxicity !== "") body.toxicity = Number(toxicity);
    if (state.editing) {
      // An update merges attributes: a cleared one is sent as null (absent).
      for (const k of Object.keys(state.editing.attributes || {})) {
        if (!(k in attributes)) attributes[k] = null;
      }
      if (toxicity === "") body.toxicity = 1;
      const name = state.editing.name;
      await api("PATCH", "/proxies/" + enc(proxy) + "/toxics/" + enc(name), body);
    } else {
      body.type = $("toxic-type").value;
      const name = $("toxic-name").value.trim();
      if (name) body.name = name;
      await api("POST", "/proxies/" + enc(proxy) + "/toxics", body);
    }
    closeForm();
    await loadProxies();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

// -------------------------------------------------------------- connections

async function loadConnections() {
  const name = state.selected;
  if (!name) return;
  const list = (await api("GET", "/proxies/" + enc(name) + "/connections")) || [];
  if (name !== state.selected) return;
  $("conn-count").textContent = list.length ? "(" + list.length + " live)" : "";
  $("no-connections").hidden = list.length > 0;
  $("connections").querySelector("tbody").replaceChildren(
    ...list.map((c) =>
      h(
        "tr",
        { dataset: { connId: c.id } },
        h("td", { class: "num" }, String(c.id)),
        h("td", {}, c.client),
        h("td", { class: "path" }, c.path),
        h("td", {}, c.protocol + (c.subprotocol ? " (" + c.subprotocol + ")" : "")),
        h("td", { class: "num" }, fmtAge(c.age_ms)),
        h("td", { class: "num" }, c.upstream.frames + " fr · " + fmtBytes(c.upstream.bytes)),
        h("td", { class: "num" }, c.downstream.frames + " fr · " + fmtBytes(c.downstream.bytes)),
        h(
          "td",
          { class: "buttons" },
          h(
            "button",
            { type: "button", class: "quiet", dataset: { action: "close" }, title: "close 1001 to both sides", onclick: () => endConnection(c.id, "close") },
            "Close",
          ),
          h(
            "button",
            { type: "button", class: "danger", dataset: { action: "reset" }, title: "reset both TCP connections", onclick: () => endConnection(c.id, "reset") },
            "Reset",
          ),
        ),
      ),
    ),
  );
}

async function endConnection(id, mode) {
  try {
    await api("DELETE", "/proxies/" + enc(state.selected) + "/connections/" + id + "?mode=" + mode);
  } catch (err) {
    showBanner(err.message);
  }
  setTimeout(() => loadConnections().catch(() => {}), 150);
}

// -------------------------------------------------------------------- chart

async function loadStats() {
  const now = performance.now();
  const snapshot = (await api("GET", "/stats")) || { proxies: {} };
  const prev = state.last;
  state.last = { t: now, proxies: snapshot.proxies || {} };
  if (!prev) return;
  const dt = (now - prev.t) / 1000;
  if (dt <= 0) return;
  const wall = Date.now();
  for (const [name, cur] of Object.entries(state.last.proxies)) {
    const before = prev.proxies[name];
    if (!before) continue;
    const sum = (m) => m.upstream + m.downstream;
    const rate = (a, b) => Math.max(0, a - b) / dt;
    const series = (state.series[name] = state.series[name] || []);
    series.push({
      t: wall,
      messages: rate(sum(cur.messages), sum(before.messages)),
      actions: rate(cur.toxic_actions, before.toxic_actions),
    });
    while (series.length && series[0].t < wall - WINDOW_MS) series.shift();
    const perToxic = {};
    for (const [toxic, n] of Object.entries(cur.toxic_actions_by_toxic || {})) {
      perToxic[toxic] = rate(n, (before.toxic_actions_by_toxic || {})[toxic] || 0);
    }
    state.actions[name] = perToxic;
  }
  drawChart();
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart() {
  const canvas = $("chart");
  const series = (state.selected && state.series[state.selected]) || [];
  canvas.dataset.points = String(series.length);
  const last = series[series.length - 1];
  $("rate-messages").textContent = last ? fmtRate(last.messages) : "–";
  $("rate-actions").textContent = last ? fmtRate(last.actions) : "–";
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 200;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.body);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const pad = { left: 44, right: 10, top: 10, bottom: 22 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const top = niceMax(Math.max(1, ...series.map((p) => Math.max(p.messages, p.actions))));
  const now = Date.now();
  const x = (t) => pad.left + w * (1 - (now - t) / WINDOW_MS);
  const y = (v) => pad.top + hgt * (1 - v / top);

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = color("--grid", "#e3e6ea");
  ctx.fillStyle = color("--muted", "#6b7280");
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(y(v)) + 0.5);
    ctx.lineTo(pad.left + w, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(String(Number(fmtRate(v))), pad.left - 6, y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let m = 5; m >= 0; m -= 1) {
    const t = now - m * 60000;
    ctx.fillText(m === 0 ? "now" : "−" + m + " min", Math.min(x(t), pad.left + w - 12), pad.top + hgt + 6);
  }
  const line = (key, stroke) => {
    if (series.length === 0) return;
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    series.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
    ctx.stroke();
    if (series.length === 1) {
      ctx.fillStyle = stroke;
      ctx.beginPath();
      ctx.arc(x(series[0].t), y(series[0][key]), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  };
  line("messages", color("--messages", "#2563eb"));
  line("actions", color("--actions", "#ea580c"));
}

// --------------------------------------------------------------------- main

function schedule(fn, every) {
  const run = async () => {
    try {
      await fn();
    } catch (err) {
      if (err.status) showBanner(err.message);
    }
    setTimeout(run, every);
  };
  return run();
}

async function start() {
  $("proxy-enabled").addEventListener("change", setEnabled);
  $("add-toxic").addEventListener("click", () => openForm(null));
  $("toxic-cancel").addEventListener("click", closeForm);
  $("toxic-form").addEventListener("submit", submitToxic);
  $("toxic-type").addEventListener("change", () => buildAttributes(readAttributesSafe()));
  $("toxic-stream").addEventListener("change", () => {
    const info = typeInfo($("toxic-type").value);
    if (info) $("toxic-name").placeholder = info.type + "_" + $("toxic-stream").value;
  });
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener("resize", drawChart);

  try {
    const [version, types] = await Promise.all([api("GET", "/version"), api("GET", "/toxic-types")]);
    $("version").textContent = "v" + version.version;
    state.types = types.filter((t) => !t.error);
    $("toxic-type").replaceChildren(...state.types.map((t) => h("option", { value: t.type }, t.type)));
  } catch (err) {
    showBanner(err.message);
  }
  schedule(loadProxies, 2 * POLL_MS);
  schedule(loadStats, POLL_MS);
  schedule(loadConnections, POLL_MS);
}

// Keeps what was typed when the type changes (same-named attributes).
function readAttributesSafe() {
  const out = {};
  for (const el of $("toxic-attributes").querySelectorAll("[data-attr]")) {
    if (el.value !== undefined && el.value !== "") out[el.dataset.attr] = el.value;
  }
  return out;
}

start();
