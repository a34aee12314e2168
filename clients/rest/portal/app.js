// fleetcap portal: the Network Watcher packet-capture blade, on the gateway's ARM-shaped API.
"use strict";

// How the storage kinds read in the form; a kind without a label shows its own name.
const STORAGE_KIND_LABELS = { Local: "coordinator disk", AzureBlob: "Azure Blob", S3: "S3" };

const ARM = "/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/" +
            "networkWatchers/NetworkWatcher_local/packetCaptures";
const API = "?api-version=2024-05-01";
const POLL_MS = 2000;
const PAGE = 50;            // instances per page of the per-instance table
const HISTORY = 120;        // samples kept per instance for the charts
const TOP = 5;              // instances drawn in the charts (by current packet rate)
const COLOURS = ["#0078d4", "#d83b01", "#107c10", "#8764b8", "#c19c00", "#323130"];
const TOKEN_KEY = "fleetcap-token";
const $ = (sel) => document.querySelector(sel);

let agents = [];
let nameEdited = false;
let detailName = null;
let timer = null;
let lastList = "";
let lastTable = "";
let stream = null;          // the AbortController of the detail view's status stream
let series = new Map();     // instance id -> [{t, packets, bytes}], the last HISTORY samples
let lastStatus = null;
let capture = null;
let page = 0;

// The credential lives in this tab's sessionStorage and travels only in the Authorization
// header: never a cookie, so a page on another site has nothing it could make the browser send.
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function authorised(init) {
  init.headers = Object.assign(init.headers || {}, { Authorization: `Bearer ${token()}` });
  return init;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, authorised(init));
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!r.ok) {
    const e = (data && data.error) || { code: String(r.status), message: r.statusText || text };
    if (r.status === 401) signIn(`${e.code}: ${e.message}`);  // the sign-in form says why
    throw Object.assign(new Error(e.message), { code: e.code, status: r.status });
  }
  return data;
}

// A download with the credential in a header: fetched, then handed to the browser as a file.
async function download(path, fallbackName) {
  try {
    const r = await fetch(path, authorised({ method: "GET" }));
    if (!r.ok) {
      const e = ((await r.json().catch(() => null)) || {}).error || { code: String(r.status), message: r.statusText };
      throw Object.assign(new Error(e.message), { code: e.code });
    }
    const m = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: m ? m[1] : fallbackName });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    banner(`Downloaded ${m ? m[1] : fallbackName}`, true);
  } catch (e) {
    banner(`Download failed: ${e.code}: ${e.message}`);
  }
}

function signIn(why) {
  for (const v of ["list", "detail", "add"]) $(`#${v}-view`).hidden = true;
  clearTimeout(timer);
  stopStream();
  $("#signin-view").hidden = false;
  $("#signout").hidden = true;
  banner(why || "");
  $("#token").focus();
}

function banner(text, ok) {
  const b = $("#banner");
  b.textContent = text;
  b.className = ok ? "banner ok" : "banner";
  b.hidden = !text;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

// "web_3" for a scale-set instance id, the VM name for a VM id, the last segment otherwise.
function shortName(id) {
  const p = (id || "").split("/");
  const i = p.findIndex((x) => x.toLowerCase() === "virtualmachinescalesets");
  if (i >= 0) return p.length > i + 3 ? `${p[i + 1]}_${p[p.length - 1]}` : p[i + 1];
  return p[p.length - 1];
}

const fmt = (n) => Number(n || 0).toLocaleString("en-US");
const sum = (xs, f) => xs.reduce((a, x) => a + Number(x[f] || 0), 0);

function show(view) {
  if (!token()) return signIn("");
  $("#signin-view").hidden = true;
  $("#signout").hidden = false;
  for (const v of ["list", "detail", "add"]) $(`#${v}-view`).hidden = v !== view;
  clearTimeout(timer);
  stopStream();
  lastList = "";
  if (view === "list") refreshList();
  if (view === "detail") openDetail();
}

// -- the list -------------------------------------------------------------------------------------

// Every capture: the list comes in pages (ARM's nextLink), 1,000 to a page.
async function listAll() {
  let page = await api("GET", `${ARM}${API}&$top=1000`);
  const all = [...page.value];
  while (page.nextLink) {
    const next = new URL(page.nextLink);  // same origin: only its path and query are used
    page = await api("GET", next.pathname + next.search);
    all.push(...page.value);
  }
  return all;
}

async function refreshList() {
  clearTimeout(timer);
  try {
    const list = await listAll();
    const statuses = await Promise.all(list.map((c) =>
      api("POST", `${ARM}/${encodeURIComponent(c.name)}/queryStatus${API}`).catch(() => null)));
    // Redraw only on a change, so that a row is never replaced under the user's pointer.
    const signature = JSON.stringify([list, statuses]);
    if (signature !== lastList) {
      lastList = signature;
      $("#captures tbody").replaceChildren(...list.map((c, i) => captureRow(c, statuses[i])));
    }
    $("#empty").hidden = list.length > 0;
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.status !== 401) banner(`Could not list captures: ${e.code}: ${e.message}`);
  }
  if (!$("#list-view").hidden) timer = setTimeout(refreshList, POLL_MS);
}

function captureRow(c, s) {
  const inst = (s && s.instances) || [];
  const status = s ? s.packetCaptureStatus : "Unknown";
  const name = c.name;
  const open = () => { detailName = name; show("detail"); };
  return el("tr", { "data-name": name },
    el("td", {}, el("button", { class: "link", "data-action": "open", onclick: open }, name)),
    el("td", {}, shortName(c.properties.target)),
    el("td", {}, c.properties.targetType),
    el("td", {}, el("span", { class: `pill ${status}`, "data-field": "status" }, status)),
    el("td", { "data-field": "stopReason" }, (s && s.stopReason) || ""),
    el("td", { class: "num", "data-field": "packets" }, fmt(sum(inst, "packetsCaptured"))),
    el("td", { class: "num" }, fmt(sum(inst, "bytesCaptured"))),
    el("td", { class: "num" }, fmt(sum(inst, "kernelDrops") + sum(inst, "interfaceDrops"))),
    el("td", {}, (c.systemData.createdAt || "").replace("T", " ").replace("Z", "")),
    el("td", {},
      // A flight recorder (standbyInSeconds): keep its window on every instance now, and store it.
      status === "Standby" ? el("button", { "data-action": "trigger",
        onclick: () => act("POST", `${ARM}/${encodeURIComponent(name)}/trigger`, `Triggered ${name}`) }, "Trigger") : null,
      el("button", { "data-action": "stop", onclick: () => act("POST", `${ARM}/${encodeURIComponent(name)}/stop`, `Stopped ${name}`) }, "Stop"),
      el("button", { "data-action": "delete", onclick: () => {
        if (confirm(`Delete packet capture ${name}? Its files are kept.`)) act("DELETE", `${ARM}/${encodeURIComponent(name)}`, `Deleted ${name}`);
      } }, "Delete"),
      el("button", { "data-action": "download",
                     onclick: () => download(`/fleetcap/v1/captures/${encodeURIComponent(name)}/merged`, `${name}.pcapng`) },
        "Download")));
}

async function act(method, path, done) {
  try {
    await api(method, path + API);
    banner(done, true);
  } catch (e) {
    if (e.status !== 401) banner(`${e.code}: ${e.message}`);
  }
  if (token()) refreshList();
}

// -- one capture, per instance: the status stream, the charts, a paged table -------------------------

function stopStream() {
  if (stream) stream.abort();
  stream = null;
}

async function openDetail() {
  const name = detailName;
  series = new Map();
  lastStatus = null;
  lastTable = "";
  page = 0;
  $("#detail-name").textContent = name;
  try {
    capture = await api("GET", `${ARM}/${encodeURIComponent(name)}${API}`);
  } catch (e) {
    banner(`${e.code}: ${e.message}`);
    return;
  }
  drawProps();
  follow(name);
}

// The server-sent events of /events, read with fetch so that the credential stays in a header.
async function follow(name) {
  const controller = new AbortController();
  stream = controller;
  try {
    const r = await fetch(`/fleetcap/v1/captures/${encodeURIComponent(name)}/events`,
                          authorised({ signal: controller.signal }));
    if (!r.ok) {
      const e = ((await r.json().catch(() => null)) || {}).error || { code: String(r.status), message: r.statusText };
      if (r.status === 401) signIn(`${e.code}: ${e.message}`);
      throw Object.assign(new Error(e.message), { code: e.code });
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const kind = (/^event: (.*)$/m.exec(event) || [])[1] || "message";
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (kind === "message" && data) onStatus(JSON.parse(data));
        if (kind === "error" && data) banner(JSON.parse(data).error.message);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    banner(`${e.code || "StreamFailed"}: ${e.message}`);
  }
  // The stream ended (the capture finished, or the gateway went away): stay current slowly.
  if (stream === controller && !$("#detail-view").hidden) timer = setTimeout(() => follow(name), POLL_MS * 2);
}

const WINDOW_S = 3;  // rates are taken over at least this many seconds of samples
const QUIET_S = 5;   // no newer report from an instance for this long: it is quiet (rate 0)
const TOTAL = "";    // the series key of the sum over every instance

// Each sample keeps two times: t, when it arrived (the charts' axis), and d, when the agent read
// the counters (countersTime, the instance's clock). Rates divide by d, so a status that came
// late, or two that came together, do not bend them; an older agent without countersTime is
// timed by arrival.
function onStatus(s) {
  const now = Date.now() / 1000;
  lastStatus = s;
  for (const i of s.instances) {
    const packets = Number(i.packetsCaptured || 0), bytes = Number(i.bytesCaptured || 0);
    const d = i.countersTime ? Date.parse(i.countersTime) / 1000 : null;
    const points = series.get(i.id) || [];
    const last = points[points.length - 1];
    const fresh = d !== null ? !last || d > last.d
                             : !last || last.packets !== packets || last.bytes !== bytes || now - last.t >= 1;
    if (fresh) {
      points.push({ t: now, d: d !== null ? d : now, packets, bytes });
      if (points.length > HISTORY) points.shift();
    }
    series.set(i.id, points);
  }
  // The total is the sum of the instances' own rates (their clocks need not agree).
  const totals = series.get(TOTAL) || [];
  const instances = [...series.entries()].filter(([id]) => id !== TOTAL);
  totals.push({ t: now, d: now, packets: instances.reduce((a, [, p]) => a + rate(p, "packets"), 0),
                bytes: instances.reduce((a, [, p]) => a + rate(p, "bytes"), 0), summed: true });
  if (totals.length > HISTORY) totals.shift();
  series.set(TOTAL, totals);
  const pill = $("#detail-status");
  pill.textContent = s.packetCaptureStatus + (s.stopReason ? ` (${s.stopReason})` : "");
  pill.className = `pill ${s.packetCaptureStatus}`;
  drawTable();
  drawCharts();
}

// The rate at sample k: from the latest sample at least WINDOW_S (of the agent's time) before it
// (else the first), so that one-second progress reports read as a steady rate.
function rateAt(points, k, field) {
  if (points[k].summed) return points[k][field];
  if (k < 1 || points[k].d - points[0].d < WINDOW_S) return 0;  // not yet a window's worth
  const b = points[k];
  let j = k - 1;
  while (j > 0 && b.d - points[j].d < WINDOW_S) j--;
  const a = points[j];
  return b.d > a.d ? Math.max(0, (b[field] - a[field]) / (b.d - a.d)) : 0;
}

function rate(points, field) {
  if (!points.length) return 0;
  const last = points[points.length - 1];
  if (!last.summed && Date.now() / 1000 - last.t > QUIET_S) return 0;  // nothing newer came: quiet
  return rateAt(points, points.length - 1, field);
}

function drawProps() {
  const p = capture.properties;
  const props = [["Target", p.target], ["Target type", p.targetType], ["Storage", p.storageLocation.storagePath || "—"],
                 ["File path", p.storageLocation.filePath || p.storageLocation.localPath || "—"],
                 ["Bytes per packet", p.bytesToCapturePerPacket], ["Bytes per session", fmt(p.totalBytesPerSession)],
                 ["Time limit (s)", p.timeLimitInSeconds],
                 ["Filters", p.filters.map((f) => `${f.protocol} local ${f.localIPAddress || "*"}:${f.localPort || "*"} ↔ remote ${f.remoteIPAddress || "*"}:${f.remotePort || "*"}`).join("; ") || "none"]];
  $("#detail-props").replaceChildren(...props.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function drawTable() {
  const s = lastStatus;
  if (!s) return;
  const name = detailName;
  const limit = Number(capture.properties.totalBytesPerSession || 0);
  const needle = $("#instance-filter").value.trim().toLowerCase();
  const shown = s.instances.filter((i) => !needle || shortName(i.id).toLowerCase().includes(needle)
                                            || i.packetCaptureStatus.toLowerCase().includes(needle));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  page = Math.min(page, pages - 1);
  $("#page-info").textContent = `page ${page + 1} of ${pages}`;
  $("#page-prev").disabled = page === 0;
  $("#page-next").disabled = page >= pages - 1;
  $("#instance-count").textContent = `(${fmt(s.instances.length)}${needle ? `, ${fmt(shown.length)} shown` : ""})`;
  const visible = shown.slice(page * PAGE, (page + 1) * PAGE);
  // Redraw only on a change, so that a button is never replaced under the user's pointer.
  const signature = JSON.stringify([limit, visible, visible.map((i) => Math.round(rate(series.get(i.id) || [], "packets")))]);
  if (signature === lastTable) return;
  lastTable = signature;
  $("#instances tbody").replaceChildren(...visible.map((i) => el("tr", { "data-instance": i.instanceId },
    el("td", {}, shortName(i.id)),
    el("td", { "data-field": "status" }, i.packetCaptureStatus),
    el("td", { "data-field": "stopReason" }, i.stopReason),
    el("td", {}, (i.packetCaptureError || []).join(", ") + (i.errorMessage ? ` — ${i.errorMessage}` : "")),
    el("td", { class: "num", "data-field": "packets" }, fmt(i.packetsCaptured)),
    el("td", { class: "num", "data-field": "bytes" }, fmt(i.bytesCaptured)),
    el("td", {}, limit ? el("meter", { min: "0", max: String(limit), value: String(Number(i.bytesCaptured || 0)),
                                       title: `${fmt(i.bytesCaptured)} of ${fmt(limit)} bytes`, "data-field": "limit" }) : "—"),
    el("td", { class: "num", "data-field": "rate" }, fmt(Math.round(rate(series.get(i.id) || [], "packets")))),
    el("td", { class: "num" }, fmt(i.kernelDrops)),
    el("td", {}, i.captureStartTime), el("td", {}, i.captureStopTime),
    el("td", {}, ...i.files.map((f) => downloadable(i, f)
      ? el("button", { class: "link", "data-action": "file",
                       onclick: () => download(`/fleetcap/v1/captures/${encodeURIComponent(name)}/files?instance=${encodeURIComponent(i.instanceId)}&file=${encodeURIComponent(f.filePath)}`,
                                               f.filePath.split("/").pop()) },
           f.filePath.split("/").pop())
      : el("span", {}, `${f.filePath.split("/").pop()} (${fmt(f.uploadedBytes)}/${fmt(f.sizeBytes)} stored) `))))));
}

// As the SDK's downloadable(): stored files, and files that only their instance holds (no
// storage account, or a failed upload), which the coordinator fetches from the instance.
function downloadable(i, f) {
  return f.uploadComplete || !f.storagePath || (i.packetCaptureError || []).includes("StorageFailed");
}

// One chart for the busiest instances, whatever the scale set's size: the TOP instances by
// current packet rate, plus the total across every instance.
function drawCharts() {
  const ranked = [...series.entries()].filter(([id]) => id !== TOTAL).sort((a, b) => rate(b[1], "packets") - rate(a[1], "packets")).slice(0, TOP);
  const total = series.get(TOTAL) || [];
  const lines = [...ranked.map(([id, points]) => ({ label: shortName(id), points })), { label: "total", points: total }];
  for (const [canvas, field] of [["#chart-packets", "packets"], ["#chart-bytes", "bytes"]]) {
    drawChart($(canvas), lines.map((l) => ({ label: l.label, values: rates(l.points, field) })));
  }
  $("#chart-legend").replaceChildren(...lines.map((l, k) =>
    el("span", { class: `c${k === lines.length - 1 ? 5 : k}` }, `${l.label}: ${fmt(Math.round(rate(l.points, "packets")))} pkt/s`)));
}

function rates(points, field) {
  const out = [];
  for (let k = 1; k < points.length; k++) {
    if (points[k].summed || points[k].d - points[0].d >= WINDOW_S) out.push({ t: points[k].t, v: rateAt(points, k, field) });
  }
  return out;
}

function drawChart(canvas, lines) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  const pts = lines.flatMap((l) => l.values);
  const tMax = Math.max(0, ...pts.map((p) => p.t));
  const tMin = Math.min(tMax - 1, ...pts.map((p) => p.t));
  const vMax = Math.max(1, ...pts.map((p) => p.v));
  ctx.strokeStyle = "#c8c6c4";
  ctx.fillStyle = "#605e5c";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, 8);
  ctx.lineTo(pad, h - 20);
  ctx.lineTo(w - 8, h - 20);
  ctx.stroke();
  ctx.fillText(fmt(Math.round(vMax)), 2, 14);
  ctx.fillText("0", 2, h - 22);
  ctx.fillText(`${Math.round(tMax - tMin)} s`, w - 40, h - 6);
  lines.forEach((l, k) => {
    ctx.strokeStyle = COLOURS[k === lines.length - 1 ? 5 : k];
    // Two pixels wide on whole-pixel rows: a steady rate is a crisp line in its own colour, not
    // a blend of two half-covered rows.
    ctx.lineWidth = 2;
    ctx.beginPath();
    l.values.forEach((p, j) => {
      const x = pad + ((p.t - tMin) / (tMax - tMin || 1)) * (w - pad - 8);
      const y = Math.round(h - 20 - (p.v / vMax) * (h - 28));
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

// -- + Add ------------------------------------------------------------------------------------------

const STEPS = ["basics", "config", "filters"];
let step = 0;

function goStep(n) {
  step = Math.max(0, Math.min(STEPS.length - 1, n));
  document.querySelectorAll("fieldset[data-step]").forEach((f) => { f.hidden = f.dataset.step !== STEPS[step]; });
  document.querySelectorAll("button.step").forEach((b) => b.classList.toggle("active", b.dataset.step === STEPS[step]));
  $("#prev-step").disabled = step === 0;
  $("#next-step").disabled = step === STEPS.length - 1;
}

function targets(type) {
  if (type === "AzureVM") {
    return agents.filter((a) => !/virtualMachineScaleSets/i.test(a.id)).map((a) => ({ id: a.id, label: shortName(a.id) }));
  }
  const sets = new Map();
  for (const a of agents.filter((x) => /virtualMachineScaleSets/i.test(x.id))) {
    const id = a.id.replace(/\/virtualMachines\/[^/]+$/i, "");
    if (!sets.has(id)) sets.set(id, { id, label: shortName(id), instances: [] });
    sets.get(id).instances.push(a.id.split("/").pop());
  }
  return [...sets.values()];
}

function fillTargets() {
  const type = $("#f-target-type").value;
  const list = targets(type);
  $("#f-target").replaceChildren(...list.map((t) => el("option", { value: t.id }, t.label)));
  fillInstances();
}

function fillInstances() {
  const type = $("#f-target-type").value;
  const t = targets(type).find((x) => x.id === $("#f-target").value);
  $("#f-instances-box").hidden = type !== "AzureVMSS";
  const insts = (t && t.instances) || [];
  $("#f-instances").replaceChildren(...insts.sort((a, b) => a - b).map((i) =>
    el("label", {}, el("input", { type: "checkbox", value: i, class: "f-instance" }), ` ${shortName(t.id)}_${i}`)));
  syncAll();
  defaultName();
}

function syncAll() {
  const all = $("#f-all-instances").checked;
  document.querySelectorAll(".f-instance").forEach((c) => { c.checked = all; c.disabled = all; });
}

function defaultName() {
  if (nameEdited) return;
  const t = $("#f-target").selectedOptions[0];
  const stamp = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14);
  $("#f-name").value = `pc-${t ? t.textContent : "capture"}-${stamp}`.slice(0, 80);
  defaultPath();
}

function defaultPath() {
  if (!$("#f-path").dataset.edited) $("#f-path").value = `/var/captures/${$("#f-name").value}.cap`;
}

function syncLocation() {
  const loc = document.querySelector("input[name=location]:checked").value;
  $("#f-account-box").hidden = loc === "file";
  $("#f-path-box").hidden = loc === "storage";
  const continuous = $("#f-continuous").checked;
  $("#f-ring-box").hidden = !continuous;
  $("#f-session-box").hidden = continuous;
  $("#f-time-box").hidden = continuous;
}

function addFilterRow() {
  const input = (cls) => el("input", { class: cls });
  const protocol = el("select", { class: "f-protocol" }, ...["Any", "TCP", "UDP"].map((p) => el("option", { value: p }, p)));
  const row = el("tr", {}, el("td", {}, protocol), el("td", {}, input("f-local-ip")), el("td", {}, input("f-local-port")),
                 el("td", {}, input("f-remote-ip")), el("td", {}, input("f-remote-port")),
                 el("td", {}, el("button", { type: "button", onclick: () => row.remove() }, "Remove")));
  $("#filters tbody").append(row);
}

const int = (sel) => Number($(sel).value);

function request() {
  const loc = document.querySelector("input[name=location]:checked").value;
  const continuous = $("#f-continuous").checked;
  const props = { target: $("#f-target").value, targetType: $("#f-target-type").value,
                  bytesToCapturePerPacket: int("#f-snaplen"), storageLocation: {}, filters: [] };
  if (loc !== "file") props.storageLocation.storageId = $("#f-account").value;
  if (loc !== "storage") props.storageLocation[continuous ? "localPath" : "filePath"] = $("#f-path").value;
  if (continuous) {
    props.continuousCapture = true;
    props.captureSettings = { fileCount: int("#f-file-count"), fileSizeInBytes: int("#f-file-size"),
                              sessionTimeLimitInSeconds: int("#f-session-time") };
  } else {
    props.totalBytesPerSession = int("#f-session-bytes");
    props.timeLimitInSeconds = int("#f-time");
  }
  if (props.targetType === "AzureVMSS" && !$("#f-all-instances").checked) {
    props.scope = { include: [...document.querySelectorAll(".f-instance:checked")].map((c) => c.value) };
  }
  for (const row of document.querySelectorAll("#filters tbody tr")) {
    const f = { protocol: row.querySelector(".f-protocol").value };
    for (const [cls, key] of [["f-local-ip", "localIPAddress"], ["f-local-port", "localPort"],
                              ["f-remote-ip", "remoteIPAddress"], ["f-remote-port", "remotePort"]]) {
      const v = row.querySelector("." + cls).value.trim();
      if (v) f[key] = v;
    }
    props.filters.push(f);
  }
  const bpf = $("#f-bpf").value.trim();
  if (bpf) props.bpfFilter = bpf;
  return { properties: props };
}

async function openAdd() {
  banner("");
  let accounts;
  try {
    agents = (await api("GET", "/fleetcap/v1/agents")).value;
    accounts = (await api("GET", "/fleetcap/v1/storage-accounts")).value;
  } catch (e) {
    if (e.status !== 401) banner(`Could not list targets and storage accounts: ${e.code}: ${e.message}`);
    return;
  }
  $("#f-account").replaceChildren(...accounts.map((a) =>
    el("option", { value: a.name, title: a.endpoint }, `${a.name} (${STORAGE_KIND_LABELS[a.kind] || a.kind})`)));
  nameEdited = false;
  delete $("#f-path").dataset.edited;
  $("#filters tbody").replaceChildren();
  fillTargets();
  goStep(0);
  syncLocation();
  show("add");
}

async function submitAdd(ev) {
  ev.preventDefault();
  const name = $("#f-name").value.trim();
  try {
    await api("PUT", `${ARM}/${encodeURIComponent(name)}${API}`, request());
  } catch (e) {
    banner(`${e.code}: ${e.message}`);
    return;
  }
  banner(`Started packet capture ${name}`, true);
  show("list");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("#token").value = "";
    banner("");
    show("list");
  });
  $("#signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); signIn("Signed out"); });
  $("#page-prev").addEventListener("click", () => { page -= 1; drawTable(); });
  $("#page-next").addEventListener("click", () => { page += 1; drawTable(); });
  $("#instance-filter").addEventListener("input", () => { page = 0; drawTable(); });
  $("#add").addEventListener("click", openAdd);
  $("#refresh").addEventListener("click", refreshList);
  $("#back").addEventListener("click", () => show("list"));
  $("#cancel-add").addEventListener("click", () => { banner(""); show("list"); });
  $("#prev-step").addEventListener("click", () => goStep(step - 1));
  $("#next-step").addEventListener("click", () => goStep(step + 1));
  document.querySelectorAll("button.step").forEach((b) =>
    b.addEventListener("click", (e) => { e.preventDefault(); goStep(STEPS.indexOf(b.dataset.step)); }));
  $("#f-target-type").addEventListener("change", fillTargets);
  $("#f-target").addEventListener("change", fillInstances);
  $("#f-all-instances").addEventListener("change", syncAll);
  $("#f-name").addEventListener("input", () => { nameEdited = true; defaultPath(); });
  $("#f-path").addEventListener("input", () => { $("#f-path").dataset.edited = "1"; });
  document.querySelectorAll("input[name=location]").forEach((r) => r.addEventListener("change", syncLocation));
  $("#f-continuous").addEventListener("change", syncLocation);
  $("#add-filter").addEventListener("click", addFilterRow);
  $("#add-form").addEventListener("submit", submitAdd);
  show("list");
});
