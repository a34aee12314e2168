// fleetcap portal: the Network Watcher packet-capture blade, on the gateway's ARM-shaped API.
"use strict";

const ARM = "/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/" +
            "networkWatchers/NetworkWatcher_local/packetCaptures";
const API = "?api-version=2024-05-01";
const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);

let agents = [];
let nameEdited = false;
let detailName = null;
let timer = null;
let lastList = "";
let lastDetail = "";

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = (data && data.error) || { code: String(r.status), message: r.statusText };
    throw Object.assign(new Error(e.message), { code: e.code, status: r.status });
  }
  return data;
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
  for (const v of ["list", "detail", "add"]) $(`#${v}-view`).hidden = v !== view;
  clearTimeout(timer);
  lastList = lastDetail = "";
  if (view === "list") refreshList();
  if (view === "detail") refreshDetail();
}

// -- the list -------------------------------------------------------------------------------------

async function refreshList() {
  clearTimeout(timer);
  try {
    const list = (await api("GET", ARM + API)).value;
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
    banner(`Could not list captures: ${e.code}: ${e.message}`);
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
      el("button", { "data-action": "stop", onclick: () => act("POST", `${ARM}/${encodeURIComponent(name)}/stop`, `Stopped ${name}`) }, "Stop"),
      el("button", { "data-action": "delete", onclick: () => {
        if (confirm(`Delete packet capture ${name}? Its files are kept.`)) act("DELETE", `${ARM}/${encodeURIComponent(name)}`, `Deleted ${name}`);
      } }, "Delete"),
      el("a", { href: `/fleetcap/v1/captures/${encodeURIComponent(name)}/merged`, "data-action": "download" },
        "Download")));
}

async function act(method, path, done) {
  try {
    await api(method, path + API);
    banner(done, true);
  } catch (e) {
    banner(`${e.code}: ${e.message}`);
  }
  refreshList();
}

// -- one capture, per instance ----------------------------------------------------------------------

async function refreshDetail() {
  clearTimeout(timer);
  const name = detailName;
  try {
    const [c, s] = await Promise.all([api("GET", `${ARM}/${encodeURIComponent(name)}${API}`),
                                      api("POST", `${ARM}/${encodeURIComponent(name)}/queryStatus${API}`)]);
    const signature = JSON.stringify([c, s]);
    if (signature === lastDetail) throw null;  // nothing changed: keep the page as it is
    lastDetail = signature;
    $("#detail-name").textContent = name;
    const pill = $("#detail-status");
    pill.textContent = s.packetCaptureStatus + (s.stopReason ? ` (${s.stopReason})` : "");
    pill.className = `pill ${s.packetCaptureStatus}`;
    const p = c.properties;
    const props = [["Target", p.target], ["Target type", p.targetType], ["Storage", p.storageLocation.storagePath || "—"],
                   ["File path", p.storageLocation.filePath || p.storageLocation.localPath || "—"],
                   ["Bytes per packet", p.bytesToCapturePerPacket], ["Bytes per session", fmt(p.totalBytesPerSession)],
                   ["Time limit (s)", p.timeLimitInSeconds],
                   ["Filters", p.filters.map((f) => `${f.protocol} local ${f.localIPAddress || "*"}:${f.localPort || "*"} ↔ remote ${f.remoteIPAddress || "*"}:${f.remotePort || "*"}`).join("; ") || "none"]];
    $("#detail-props").replaceChildren(...props.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#instances tbody").replaceChildren(...s.instances.map((i) => el("tr", { "data-instance": i.instanceId },
      el("td", {}, shortName(i.id)),
      el("td", { "data-field": "status" }, i.packetCaptureStatus),
      el("td", { "data-field": "stopReason" }, i.stopReason),
      el("td", {}, (i.packetCaptureError || []).join(", ") + (i.errorMessage ? ` — ${i.errorMessage}` : "")),
      el("td", { class: "num", "data-field": "packets" }, fmt(i.packetsCaptured)),
      el("td", { class: "num" }, fmt(i.bytesCaptured)),
      el("td", { class: "num" }, fmt(i.kernelDrops)),
      el("td", {}, i.captureStartTime), el("td", {}, i.captureStopTime),
      el("td", {}, ...i.files.map((f) => f.uploadComplete
        ? el("a", { href: `/fleetcap/v1/captures/${encodeURIComponent(name)}/files?instance=${encodeURIComponent(i.instanceId)}&file=${encodeURIComponent(f.filePath)}` },
             f.filePath.split("/").pop() + " ")
        : el("span", {}, `${f.filePath.split("/").pop()} (${fmt(f.uploadedBytes)}/${fmt(f.sizeBytes)} stored) `))))));
  } catch (e) {
    if (e) banner(`${e.code}: ${e.message}`);
  }
  if (!$("#detail-view").hidden) timer = setTimeout(refreshDetail, POLL_MS);
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
    banner(`Could not list targets and storage accounts: ${e.code}: ${e.message}`);
    return;
  }
  $("#f-account").replaceChildren(...accounts.map((a) =>
    el("option", { value: a.name, title: a.endpoint }, `${a.name} (${a.kind === "Local" ? "coordinator disk" : "Azure Blob"})`)));
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
