// The sidecar dashboard: a single page over the JSON API under /api (no build step, no libraries).
"use strict";

const STATUSES = ["RUNNING", "PENDING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED", "CONTINUED_AS_NEW", "CANCELED"];
const REFRESH_MS = 2000;
let refreshTimer = null;
let listFilters = {};

// --- helpers --------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch("/api/" + path, {credentials: "same-origin", ...options});
  if (response.status === 401) { window.location.reload(); throw new Error("log in again"); }
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || response.statusText);
  return payload;
}

function toast(message, isError) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = "toast" + (isError ? " error" : "");
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

function when(text) { return text ? new Date(text).toLocaleString() : ""; }

function badge(status) { return el("span", {class: "badge status-" + status.toLowerCase(), text: status}); }

function pretty(text) {
  if (text === null || text === undefined) return el("span", {class: "muted", text: "none"});
  let shown = text;
  try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: shown as it is */ }
  return el("pre", {text: shown});
}

function duration(ms) {
  if (ms === null || ms === undefined) return "running";
  if (ms < 1000) return ms.toFixed(0) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function table(headers, rows, id) {
  return el("table", {id},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {text: h})))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", {colspan: headers.length, class: "muted", text: "nothing here"}))));
}

function setView(name, ...content) {
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
  const main = document.getElementById("main");
  main.replaceChildren(...content.flat().filter((child) => child !== null && child !== undefined));
}

function live(fn) {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { fn().catch((e) => toast(e.message, true)); }, REFRESH_MS);
}

// --- confirmation dialog ------------------------------------------------------------------------

function confirmAction(title, text, fields) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const inputs = fields.map((f) => el("input", {name: f.name, id: "confirm-" + f.name, placeholder: f.placeholder || "",
    required: f.required || false}));
  document.getElementById("confirm-fields").replaceChildren(
    ...fields.map((f, i) => el("label", {}, f.label, inputs[i])));
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") { resolve(null); return; }
      const values = {};
      fields.forEach((f, i) => { values[f.name] = inputs[i].value; });
      resolve(values);
    }, {once: true});
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function parseData(text) {
  if (text === "") return null;
  try { return JSON.parse(text); } catch (e) { return text; }
}

const ACTIONS = {
  terminate: {title: "Terminate", text: "Terminate this instance? It stops at once and cannot be resumed.",
    fields: [{name: "reason", label: "Reason (optional)"}], body: (v) => ({reason: v.reason || null})},
  suspend: {title: "Suspend", text: "Suspend this instance? It gets no turns until resumed.",
    fields: [{name: "reason", label: "Reason (optional)"}], body: (v) => ({reason: v.reason || null})},
  resume: {title: "Resume", text: "Resume this instance?",
    fields: [{name: "reason", label: "Reason (optional)"}], body: (v) => ({reason: v.reason || null})},
  "raise-event": {title: "Raise event", text: "Send an external event to this instance?",
    fields: [{name: "name", label: "Event name", required: true}, {name: "data", label: "Data (JSON, optional)"}],
    body: (v) => ({name: v.name, data: parseData(v.data)})},
  rewind: {title: "Rewind", text: "Rewind this failed instance? Its failed work runs again.",
    fields: [{name: "reason", label: "Reason (optional)"}], body: (v) => ({reason: v.reason || null})},
  restart: {title: "Restart", text: "Restart this instance from the beginning, with the same input?",
    fields: [], body: () => ({})},
  purge: {title: "Purge", text: "Delete this instance and its history for good?", fields: [], body: () => ({})},
};

async function runAction(instanceId, action) {
  const spec = ACTIONS[action];
  const values = await confirmAction(spec.title + " " + instanceId, spec.text, spec.fields);
  if (values === null) return;
  try {
    const result = await api("instances/" + encodeURIComponent(instanceId) + "/" + action, spec.body(values));
    toast(spec.title + ": done");
    if (action === "purge") { window.location.hash = "#/"; return; }
    window.location.hash = "#/instance/" + encodeURIComponent(result.instance_id || instanceId);
    route();
  } catch (e) {
    toast(spec.title + " failed: " + e.message, true);
  }
}

// --- views ----------------------------------------------------------------------------------

async function refreshBacklog() {
  const data = await api("backlog");
  const labels = {orchestration: "orchestrations", activity: "activities", entity: "entities"};
  const parts = Object.entries(labels).map(([kind, label]) =>
    el("span", {class: "pill", id: "backlog-" + kind, text: label + " " + data.backlog[kind] + " / " + data.in_flight[kind]}));
  parts.push(el("span", {class: "pill", id: "open-streams", text: "streams " + data.open_streams}));
  document.getElementById("backlog").replaceChildren(...parts);
}

function filterForm() {
  const status = el("select", {name: "status", id: "filter-status"}, el("option", {value: "", text: "any status"}),
    STATUSES.map((s) => el("option", {value: s, text: s, selected: listFilters.status === s})));
  const input = (name, placeholder, type) => el("input", {name, id: "filter-" + name, placeholder, type: type || "text",
    value: listFilters[name] || ""});
  const form = el("form", {class: "filters", id: "filters"}, status, input("name", "orchestration name"),
    input("prefix", "instance ID prefix"),
    el("label", {}, "created from ", input("created_from", "", "datetime-local")),
    el("label", {}, "to ", input("created_to", "", "datetime-local")),
    el("button", {type: "submit", text: "Apply"}),
    el("label", {class: "live"}, el("input", {type: "checkbox", id: "live", checked: true}), " live"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    listFilters = Object.fromEntries(new FormData(form).entries());
    showInstances();
  });
  return form;
}

function listQuery() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(listFilters)) {
    if (!value) continue;
    params.set(key, key.startsWith("created_") ? new Date(value).toISOString() : value);
  }
  return params;
}

async function showInstances() {
  const holder = el("div", {id: "instance-list"});
  setView("instances", el("h2", {text: "Instances"}), filterForm(), holder);
  let continuation = null;
  const load = async (more) => {
    const params = listQuery();
    if (more && continuation) params.set("continuation", continuation);
    const data = await api("instances?" + params.toString());
    continuation = data.continuation;
    const rows = data.instances.map((i) => el("tr", {"data-instance-id": i.instance_id},
      el("td", {}, el("a", {href: "#/instance/" + encodeURIComponent(i.instance_id), class: "instance-link", text: i.instance_id})),
      el("td", {text: i.name}), el("td", {}, badge(i.status)), el("td", {text: when(i.created_at)}),
      el("td", {text: when(i.last_updated_at)})));
    const existing = holder.querySelector("tbody");
    if (more && existing) { existing.append(...rows); } else {
      holder.replaceChildren(table(["Instance ID", "Name", "Status", "Created", "Last updated"], rows, "instances-table"));
    }
    holder.querySelector(".more")?.remove();
    if (continuation) holder.append(el("button", {class: "more", text: "More", onclick: () => load(true)}));
  };
  await load(false);
  live(async () => { if (document.getElementById("live")?.checked) await load(false); });
}

function timelineView(spans) {
  if (!spans.length) return el("p", {class: "muted", text: "no history yet"});
  const start = Math.min(...spans.map((s) => Date.parse(s.start)));
  const end = Math.max(...spans.map((s) => Date.parse(s.end || s.start)), start + 1);
  const rows = spans.map((s) => {
    const bar = el("div", {class: "bar outcome-" + s.outcome});
    const from = Date.parse(s.start);
    const to = s.end ? Date.parse(s.end) : end;
    bar.style.left = ((from - start) / (end - start) * 100).toFixed(2) + "%";
    bar.style.width = Math.max((to - from) / (end - start) * 100, 0.6).toFixed(2) + "%";
    return el("div", {class: "timeline-row kind-" + s.kind},
      el("span", {class: "t-kind", text: s.kind}), el("span", {class: "t-name", text: s.name, title: s.detail}),
      el("div", {class: "track"}, bar),
      el("span", {class: "t-duration", text: s.outcome === "instant" ? when(s.start) : duration(s.duration_ms) + " · " + s.outcome}));
  });
  return el("div", {id: "timeline", class: "timeline"}, rows);
}

async function showInstance(instanceId) {
  clearInterval(refreshTimer);
  const [inst, history] = await Promise.all([
    api("instances/" + encodeURIComponent(instanceId)), api("instances/" + encodeURIComponent(instanceId) + "/history"),
  ]);
  const field = (label, value) => [el("dt", {text: label}), el("dd", {}, value || el("span", {class: "muted", text: "none"}))];
  const actions = Object.keys(ACTIONS).map((a) => el("button", {"data-action": a, class: a === "purge" || a === "terminate" ? "danger" : "",
    text: ACTIONS[a].title, onclick: () => runAction(instanceId, a)}));
  const events = history.events.map((e) => el("tr", {},
    el("td", {text: e.event_id}), el("td", {text: when(e.timestamp)}), el("td", {text: e.type}),
    el("td", {}, el("code", {text: JSON.stringify(e.fields)}))));
  setView("instances",
    el("h2", {}, "Instance ", el("code", {id: "instance-id", text: inst.instance_id}), " ",
      el("span", {id: "instance-status"}, badge(inst.status))),
    el("div", {class: "actions", id: "actions"}, actions),
    el("dl", {class: "details"},
      field("Name", inst.name), field("Version", inst.version), field("Execution", inst.execution_id),
      field("Created", when(inst.created_at)), field("Last updated", when(inst.last_updated_at)),
      field("Completed", when(inst.completed_at)),
      field("Parent", inst.parent_instance_id && el("a", {href: "#/instance/" + encodeURIComponent(inst.parent_instance_id),
        text: inst.parent_instance_id}))),
    el("h3", {text: "Input"}), el("div", {id: "instance-input"}, pretty(inst.input)),
    el("h3", {text: "Output"}), el("div", {id: "instance-output"}, pretty(inst.output)),
    el("h3", {text: "Custom status"}), el("div", {id: "instance-custom-status"}, pretty(inst.custom_status)),
    inst.failure ? [el("h3", {text: "Failure"}), el("div", {id: "instance-failure", class: "failure"},
      el("strong", {text: inst.failure.error_type + ": "}), inst.failure.message,
      inst.failure.stack_trace ? el("pre", {text: inst.failure.stack_trace}) : null)] : null,
    el("h3", {text: "Timeline"}), timelineView(history.timeline),
    el("details", {}, el("summary", {text: "History events (" + history.events.length + ")"}),
      table(["ID", "Time", "Type", "Fields"], events, "history-table")));
  if (["RUNNING", "PENDING", "SUSPENDED"].includes(inst.status)) {
    live(async () => { if (window.location.hash === "#/instance/" + encodeURIComponent(instanceId)) await showInstance(instanceId); });
  }
}

async function showEntities() {
  const data = await api("entities");
  const rows = data.entities.map((e) => el("tr", {"data-entity-id": e.entity_id},
    el("td", {}, el("code", {text: e.entity_id})), el("td", {text: e.locked_by || ""}), el("td", {text: e.queue_length}),
    el("td", {text: when(e.last_modified_at)}), el("td", {}, pretty(e.state))));
  setView("entities", el("h2", {text: "Entities"}),
    table(["Entity", "Locked by", "Queue", "Last modified", "State"], rows, "entities-table"));
  live(async () => { if (window.location.hash === "#/entities") await showEntities(); });
}

async function showSchedules() {
  const data = await api("schedules");
  const rows = data.schedules.map((s) => el("tr", {},
    el("td", {text: s.schedule_id}), el("td", {text: s.status}), el("td", {text: s.orchestration_name}),
    el("td", {text: s.cron || s.interval || ""}), el("td", {text: when(s.last_run_at)}), el("td", {text: when(s.next_run_at)})));
  setView("schedules", el("h2", {text: "Schedules"}),
    table(["Schedule", "Status", "Orchestration", "Every", "Last run", "Next run"], rows, "schedules-table"));
}

async function showWorkers() {
  const data = await api("workers");
  const names = (list) => list === null ? "all" : (list.length ? list.join(", ") : "none");
  const rows = data.workers.map((w) => el("tr", {},
    el("td", {text: w.id}), el("td", {text: w.worker_id || ""}), el("td", {text: when(w.opened_at)}),
    el("td", {text: ["orchestration", "activity", "entity"].map((k) => w.in_flight[k] + "/" + w.limits[k]).join(" · ")}),
    el("td", {text: "orchestrations: " + names(w.names.orchestration) + "; activities: " + names(w.names.activity) +
      "; entities: " + names(w.names.entity)}),
    el("td", {text: JSON.stringify(w.versions)})));
  setView("workers", el("h2", {text: "Connected workers"}),
    table(["Stream", "Worker", "Connected", "In flight (orch · act · ent)", "Filters", "Versions"], rows, "workers-table"));
  live(async () => { if (window.location.hash === "#/workers") await showWorkers(); });
}

async function route() {
  clearInterval(refreshTimer);
  const hash = window.location.hash || "#/";
  try {
    if (hash.startsWith("#/instance/")) await showInstance(decodeURIComponent(hash.slice("#/instance/".length)));
    else if (hash === "#/entities") await showEntities();
    else if (hash === "#/schedules") await showSchedules();
    else if (hash === "#/workers") await showWorkers();
    else await showInstances();
  } catch (e) {
    setView("", el("p", {class: "error", id: "page-error", text: e.message}));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  route();
  refreshBacklog().catch(() => {});
  setInterval(() => refreshBacklog().catch(() => {}), REFRESH_MS);
});
