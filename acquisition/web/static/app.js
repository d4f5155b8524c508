// exsylab station page: renders /api/state, kept current by the server-sent events of /api/events.
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("exsylab-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("exsylab-token", tokenInput.value));

let selected = null;  // a past run the user chose to look at; null: follow the current (or latest) run
let reportShown = "";

function text(el, value) { el.textContent = value; }

function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "-";
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  const clock = [h, m, s].map((v) => String(v).padStart(2, "0")).join(":");
  return d ? `${d} d ${clock}` : clock;
}

function when(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "-"; }

function badge(el, state) {
  text(el, state || "");
  el.className = "badge " + ({done: "ok", running: "ok", paused: "warn", stopped: "warn", failed: "bad", refused: "bad"}[state] || "");
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
  return tr;
}

function showPlot(img, runId, name, version, extra) {
  if (!version) { img.hidden = true; return; }
  const src = `/api/runs/${encodeURIComponent(runId)}/plots/${name}.png?v=${encodeURIComponent(version)}${extra || ""}`;
  if (img.dataset.src !== src) {
    img.dataset.src = src;
    img.onload = () => { img.hidden = false; img.dataset.loaded = version; };
    img.src = src;
  }
}

function renderInstruments(run) {
  const vt = run && run.instruments && run.instruments.vt;
  const dl = $("vt-state");
  dl.replaceChildren();
  const add = (k, v) => { const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; dl.append(dt, dd); };
  if (vt) {
    add("VT set point", vt.setpoint_k != null ? `${vt.setpoint_k.toFixed(2)} K (sensor)` : "-");
    add("sample", vt.sample_k != null ? `${vt.sample_k.toFixed(2)} K` : "-");
    add("MAS rate", vt.mas_rate_hz != null ? `${(vt.mas_rate_hz / 1000).toFixed(1)} kHz` : "-");
    add("recorded", when(vt.at));
  } else {
    add("VT", "nothing recorded yet");
  }
  const body = $("cyclers").tBodies[0];
  body.replaceChildren();
  for (const [cell, c] of Object.entries((run && run.instruments && run.instruments.cyclers) || {})) {
    body.appendChild(row([cell, c.voltage_v.toFixed(3), (c.current_a * 1000).toFixed(3), c.cycle, when(c.at)]));
  }
  showPlot($("plot-temperature"), run && run.id, "temperature", run && run.versions && run.versions.temperature);
}

function renderRun(run) {
  if (!run) { text($("run-id"), ""); badge($("run-state"), "no run yet"); return; }
  text($("run-id"), run.id);
  badge($("run-state"), run.state);
  text($("run-names"), (run.entry.names || []).join(", "));
  const body = $("lanes").tBodies[0];
  body.replaceChildren();
  for (const [lane, info] of Object.entries(run.lanes || {})) {
    body.appendChild(row([lane, info.current || "-", `${info.done}/${info.total}` + (info.failed ? ` (${info.failed} failed)` : ""), duration(info.eta_s)]));
  }
  const done = (run.datasets || []).filter((d) => d.status === "done").length;
  text($("datasets-count"), `${done} dataset(s) complete of ${(run.datasets || []).length} written`);
  $("datasets-count").dataset.done = done;
  const v = run.versions || {};
  $("no-exsy").hidden = Boolean(v.contour);
  showPlot($("plot-contour"), run.id, "contour", v.contour);
  showPlot($("plot-buildup"), run.id, "buildup", v.buildup);
  const box = $("cycling-plots");
  if ((run.cells || []).length) {
    for (const cell of run.cells) {
      let img = box.querySelector(`img[data-cell="${CSS.escape(cell)}"]`);
      if (!img) {
        if (!box.querySelector("img")) box.replaceChildren();
        img = document.createElement("img");
        img.className = "plot"; img.dataset.cell = cell; img.alt = `cell ${cell}: voltage and capacity per cycle`; img.hidden = true;
        box.appendChild(img);
      }
      showPlot(img, run.id, "cycling", v[`cycling-${cell}`], `&cell=${encodeURIComponent(cell)}`);
    }
  }
  const reportKey = run.report ? `${run.id}:${run.state}` : "";
  if (reportKey && reportKey !== reportShown) {
    reportShown = reportKey;
    fetch(`/api/runs/${encodeURIComponent(run.id)}/report`).then((r) => r.ok ? r.text() : "").then((t) => text($("report"), t || "-"));
  }
}

function renderQueue(queue, current) {
  $("queue-held").hidden = !queue.held;
  $("continue").hidden = !queue.held;
  const ol = $("queue");
  ol.replaceChildren();
  for (const e of queue.entries) {
    if (e.state === "removed") continue;
    const li = document.createElement("li");
    li.dataset.id = e.id;
    li.dataset.state = e.state;
    li.textContent = `${e.id} ${e.state}: ${e.names.join(", ")}` + (e.message ? ` (${e.message})` : "");
    if (e.run_dir) {
      const show = document.createElement("button"); show.textContent = "show"; show.className = "show";
      show.onclick = () => { selected = e.id; refreshSelected(); };
      li.append(show);
    }
    if (["failed", "stopped", "refused"].includes(e.state)) {
      const again = document.createElement("button"); again.textContent = "run again"; again.className = "requeue";
      again.title = "queue it next; its run resumes where it stopped";
      again.onclick = () => control("POST", `/api/queue/${e.id}/requeue`);
      li.append(again);
    }
    if (e.state === "queued") {
      const up = document.createElement("button"); up.textContent = "▲"; up.title = "run earlier";
      up.onclick = () => control("POST", `/api/queue/${e.id}/move`, {position: 0});
      const rm = document.createElement("button"); rm.textContent = "remove"; rm.className = "remove";
      rm.onclick = () => control("DELETE", `/api/queue/${e.id}`);
      li.append(up, rm);
    }
    ol.appendChild(li);
  }
}

function showRun(run) {
  renderInstruments(run);
  renderRun(run);
  $("follow").hidden = selected === null;
}

async function refreshSelected() {
  const r = await fetch(`/api/runs/${encodeURIComponent(selected)}`);
  if (r.ok) showRun(await r.json());
}

function render(state) {
  text($("station-name"), state.station.name);
  document.title = `exsylab: ${state.station.name}`;
  if (selected === null || (state.run && state.run.id === selected)) showRun(state.run);
  else refreshSelected();
  renderQueue(state.queue, state.current);
}

async function control(method, path, body) {
  const message = $("message");
  const headers = {"Content-Type": "application/json"};
  if (tokenInput.value) headers.Authorization = `Bearer ${tokenInput.value}`;
  try {
    const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      message.className = "bad";
      text(message, `refused (${r.status}): ${data.detail || r.statusText}`);
      return null;
    }
    message.className = "";
    text(message, `${method} ${path}: ok`);
    return data;
  } catch (err) {
    message.className = "bad";
    text(message, `server not reachable: ${err}`);
    return null;
  }
}

$("pause").onclick = () => control("POST", "/api/run/pause");
$("resume").onclick = () => control("POST", "/api/run/resume");
$("stop").onclick = () => { if (confirm("Stop the run safely (channels off, VT held)?")) control("POST", "/api/run/stop"); };
$("follow").onclick = () => { selected = null; fetch("/api/state").then((r) => r.json()).then(render); };
$("continue").onclick = () => control("POST", "/api/queue/continue");
$("add-form").onsubmit = async (event) => {
  event.preventDefault();
  const paths = $("add-paths").value.split(",").map((p) => p.trim()).filter(Boolean);
  const uploads = await Promise.all([...$("add-files").files].map(async (f) => ({name: f.name, text: await f.text()})));
  if (await control("POST", "/api/queue", {paths, uploads})) { $("add-paths").value = ""; $("add-files").value = ""; }
};

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => badge($("connection"), "live"));
  source.addEventListener("state", (event) => render(JSON.parse(event.data)));
  source.addEventListener("error", () => badge($("connection"), "reconnecting…"));
}

fetch("/api/state").then((r) => r.json()).then(render);
connect();
