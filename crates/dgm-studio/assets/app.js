// dgm studio: the page's script. Plain DOM, no library; every text from the server goes through textContent.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
let RUNS = [];
let SELECTED = null;
let EVENTS = null;

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function post(path, obj) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(obj) });
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function num(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

// ---- tabs
for (const b of $$(".tab")) {
  b.addEventListener("click", () => {
    for (const t of $$(".tab")) t.classList.toggle("active", t === b);
    for (const p of $$(".page")) p.hidden = p.id !== `page-${b.dataset.page}`;
  });
}

// ---- runs
async function loadRuns() {
  const d = await api("/api/runs");
  RUNS = d.runs;
  $("#root").textContent = d.root;
  const models = $("#train-form select[name=model]");
  if (!models.options.length) {
    for (const m of d.models) {
      const o = el("option", m.name);
      o.value = m.name;
      o.title = `${m.family}: ${m.about} (default data ${m.default_data})`;
      models.append(o);
    }
  }
  const tb = $("#runs-table tbody");
  tb.replaceChildren();
  for (const r of RUNS) {
    const tr = el("tr");
    tr.dataset.run = r.name;
    if (r.name === SELECTED) tr.classList.add("selected");
    const lik = r.likelihood;
    const step = r.training && r.training.state !== "finished"
      ? `${r.training.step} / ${r.training.total_steps} (${r.training.state})`
      : `${r.step ?? "–"}${r.total_steps ? " / " + r.total_steps : ""}`;
    const fid = num(r.fid, 2);
    for (const c of [r.name, r.model ?? "–", r.data ?? "–", step,
      lik ? `${num(lik.nll_nats, 2)} nats, ${num(lik.bits_per_dim, 3)} bits/dim` : "–",
      lik ? lik.kind : "–", fid]) tr.append(el("td", c));
    tr.addEventListener("click", () => selectRun(r.name));
    tb.append(tr);
  }
  $("#runs-empty").hidden = RUNS.length > 0;
  fillRunSelects();
}

function fillRunSelects() {
  const fill = (sel, wants, reasonEl) => {
    const keep = sel.value;
    sel.replaceChildren();
    for (const r of RUNS) {
      if (!r.abilities) continue;
      const o = el("option", r.name);
      o.value = r.name;
      const why = wants(r);
      if (why) { o.disabled = true; o.textContent = `${r.name} — ${why}`; }
      sel.append(o);
    }
    if ([...sel.options].some(o => o.value === keep && !o.disabled)) sel.value = keep;
    else { const first = [...sel.options].find(o => !o.disabled); if (first) sel.value = first.value; }
    reasonEl.textContent = [...sel.options].some(o => !o.disabled) ? "" : "no run can do this yet";
  };
  fill($("#sample-form select[name=run]"),
    r => r.abilities.text ? "a language model: use Text" : "", $("#sample-reason"));
  fill($("#edit-form select[name=run]"),
    r => r.abilities.denoiser && r.shape && r.shape.length === 3 ? "" : `not a diffusion image model (${r.model})`,
    $("#edit-reason"));
  fill($("#score-form select[name=run]"),
    r => r.abilities.text ? "" : `not a language model (${r.model})`, $("#text-reason"));
  fill($("#likelihood-form select[name=run]"),
    r => !r.abilities.density ? `no likelihood (${r.model})`
      : !(r.shape && r.shape.length === 3) ? "not an image model" : "",
    $("#likelihood-reason"));
  fill($("#latent-form select[name=run]"),
    r => !r.abilities.latent ? `no latent space (${r.model})`
      : !(r.shape && r.shape.length === 3) ? "not an image model" : "",
    $("#latent-reason"));
  for (const p of PICKERS) p.resize();
  fill($("#text-form select[name=run]"),
    r => r.abilities.text ? "" : `not a language model (${r.model})`, $("#text-reason"));
  updateSampleFields();
  setupEditCanvas();
}

function updateSampleFields() {
  const name = $("#sample-form select[name=run]").value;
  const r = RUNS.find(x => x.name === name);
  for (const l of $$("#sample-form label[data-needs]")) {
    const ok = !!(r && r.abilities && r.abilities[l.dataset.needs]);
    l.classList.toggle("off", !ok);
    for (const i of $$("input, select", l)) i.disabled = !ok;
    l.title = ok ? "" : `model '${r ? r.model : "?"}' does not take this`;
  }
}
$("#sample-form select[name=run]").addEventListener("change", updateSampleFields);

async function selectRun(name) {
  SELECTED = name;
  for (const tr of $$("#runs-table tbody tr")) tr.classList.toggle("selected", tr.dataset.run === name);
  const box = $("#run-detail");
  box.hidden = false;
  $("#detail-name").textContent = name;
  const q = `run=${encodeURIComponent(name)}`;
  let d = null;
  try { d = await api(`/api/run?${q}`); } catch (e) { $("#detail-meta").textContent = e.message; }
  if (d) {
    $("#detail-meta").textContent =
      `${d.model} on ${d.data} · ${d.preprocessing ?? ""} · step ${d.step ?? "–"}${d.finished ? " (finished)" : ""}`;
    $("#detail-config").textContent = d.config ?? "";
    const tb = $("#detail-nll tbody");
    tb.replaceChildren();
    for (const n of d.likelihoods) {
      const tr = el("tr");
      for (const c of [n.split, n.estimator, n.kind, `${num(n.nll_nats, 2)} ± ${num(n.stderr_nats, 2)}`, num(n.bits_per_dim, 4)])
        tr.append(el("td", c));
      tr.title = n.kind_text;
      tb.append(tr);
    }
    showLive(d.training);
  }
  refreshImages();
  if (EVENTS) EVENTS.close();
  EVENTS = new EventSource(`/api/run/events?${q}`);
  let lastLoss = 0;
  EVENTS.addEventListener("metrics", () => {
    const now = Date.now();
    if (now - lastLoss > 2000) { lastLoss = now; refreshImages(true); }
  });
  EVENTS.addEventListener("checkpoint", () => { refreshImages(); loadRuns(); });
  EVENTS.addEventListener("progress", ev => showLive(JSON.parse(ev.data)));
}

function showLive(t) {
  const p = $("#detail-live");
  const stop = $("#detail-stop");
  if (!t) { p.textContent = ""; stop.hidden = true; return; }
  p.textContent = `${t.state}: step ${t.step} / ${t.total_steps}` +
    (t.it_s ? `, ${t.it_s.toFixed(1)} steps/s` : "") + (t.loss !== null ? `, loss ${num(t.loss, 4)}` : "") +
    (t.error ? ` — ${t.error}` : "");
  p.className = t.error ? "error" : "";
  stop.hidden = !(t.state === "training" || t.state === "starting");
}

function refreshImages(lossOnly = false) {
  const q = `run=${encodeURIComponent(SELECTED)}&t=${Date.now()}`;
  const loss = $("#detail-loss");
  loss.onerror = () => { loss.hidden = true; };
  loss.onload = () => { loss.hidden = false; };
  loss.src = `/api/run/loss.svg?${q}`;
  if (lossOnly) return;
  const s = $("#detail-samples");
  s.onerror = () => { s.hidden = true; };
  s.onload = () => { s.hidden = false; };
  s.src = `/api/run/samples.png?${q}`;
}

$("#detail-stop").addEventListener("click", async () => {
  try { await post(`/api/run/stop?run=${encodeURIComponent(SELECTED)}`, {}); }
  catch (e) { $("#detail-live").textContent = e.message; }
});

$("#train-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const req = { name: f.get("name"), model: f.get("model"),
    set: String(f.get("set") || "").split("\n").map(s => s.trim()).filter(Boolean) };
  if (f.get("data")) req.data = f.get("data");
  if (f.get("steps")) req.steps = Number(f.get("steps"));
  if (f.get("seed")) req.seed = Number(f.get("seed"));
  $("#train-error").textContent = "";
  try {
    await post("/api/train", req);
    await loadRuns();
    selectRun(req.name);
  } catch (e) { $("#train-error").textContent = e.message; }
});

// ---- jobs
async function follow(id, status, onUpdate) {
  for (;;) {
    const j = await api(`/api/jobs/${id}`);
    onUpdate && onUpdate(j);
    if (j.state === "queued") status.textContent = `queued: ${j.jobs_ahead} job(s) ahead`;
    else if (j.state === "running") status.textContent = `running… ${j.ran_s.toFixed(1)} s` +
      (j.progress ? `, step ${j.progress[0]} of ${j.progress[1]}` : "");
    else if (j.state === "done") { status.textContent = `done in ${j.ran_s.toFixed(1)} s`; return j; }
    else { status.textContent = j.error; status.className = "error"; return j; }
    await new Promise(r => setTimeout(r, 250));
  }
}

async function submitJob(path, req, status, button) {
  status.className = "";
  status.textContent = "sending…";
  button.disabled = true;
  try {
    const { job } = await post(path, req);
    return job;
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
    return null;
  } finally { button.disabled = false; }
}

$("#sample-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const req = { run: f.get("run"), n: Number(f.get("n")), seed: Number(f.get("seed")) };
  for (const k of ["sampler", "caption"]) if (f.get(k)) req[k] = f.get(k);
  for (const k of ["steps", "class"]) if (f.get(k)) req[k] = Number(f.get(k));
  if (f.get("guidance")) req.guidance = Number(f.get("guidance"));
  const status = $("#sample-status");
  const id = await submitJob("/api/sample", req, status, $("#sample-form button"));
  if (id === null) return;
  const j = await follow(id, status);
  showPictures(id, j, $("#sample-grid"), $("#sample-each"), `${req.run.replaceAll("/", "_")}-seed${req.seed}`);
});

/// A finished job's grid in `grid` and each of its pictures in `each` as a link that downloads it.
function showPictures(id, j, grid, each, stem) {
  each.replaceChildren();
  if (j.state !== "done") { grid.hidden = true; return false; }
  grid.src = `/api/jobs/${id}/image.png`;
  grid.hidden = false;
  for (let i = 0; i < j.images; i++) {
    const a = el("a");
    a.href = `/api/jobs/${id}/image.png?index=${i}`;
    a.download = `${stem}-${i}.png`;
    a.title = `download sample ${i}`;
    const img = el("img");
    img.src = a.href;
    img.alt = `sample ${i}`;
    a.append(img);
    each.append(a);
  }
  return true;
}

$("#text-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const req = { run: f.get("run"), prompt: f.get("prompt"), max_tokens: Number(f.get("max_tokens")),
    temperature: Number(f.get("temperature")), seed: Number(f.get("seed")) };
  if (f.get("top_k")) req.top_k = Number(f.get("top_k"));
  if (f.get("top_p")) req.top_p = Number(f.get("top_p"));
  const status = $("#text-status");
  const out = $("#text-out");
  out.textContent = "";
  const id = await submitJob("/api/generate", req, status, $("#text-form button"));
  if (id === null) return;
  await follow(id, status, j => { if (j.text !== null) out.textContent = j.text; });
});

// ---- edit: draw → image, mask → fill, restorations
const SOLVERS = { // the first is the task's default (pipelines::edit)
  sdedit: ["sdedit"], inpaint: ["repaint", "project", "dps", "sdedit"],
  "super-resolve": ["project", "dps", "sdedit"], colorize: ["project", "dps", "sdedit"],
  deblur: ["dps", "project", "sdedit"],
};
const imgCanvas = $("#edit-image");
const maskCanvas = $("#edit-mask");
let EDIT_SHAPE = null;

function editRun() {
  return RUNS.find(r => r.name === $("#edit-form select[name=run]").value);
}

function setupEditCanvas(force = false) {
  const r = editRun();
  const shape = r && r.shape && r.shape.length === 3 ? r.shape : [3, 32, 32];
  if (!force && EDIT_SHAPE && EDIT_SHAPE.join() === shape.join()) return;
  EDIT_SHAPE = shape;
  for (const c of [imgCanvas, maskCanvas]) { c.width = shape[2]; c.height = shape[1]; }
  clearEdit(true);
  $("#brush-colour").value = shape[0] === 1 ? "#ffffff" : "#ff3030";
}

function clearEdit(both) {
  const task = $("#edit-form select[name=task]").value;
  if (both || task !== "inpaint") {
    const g = imgCanvas.getContext("2d");
    g.fillStyle = "#000";
    g.fillRect(0, 0, imgCanvas.width, imgCanvas.height);
  }
  if (both || task === "inpaint") maskCanvas.getContext("2d").clearRect(0, 0, maskCanvas.width, maskCanvas.height);
}

function updateEditFields(newTask = false) {
  const task = $("#edit-form select[name=task]").value;
  const sel = $("#edit-form select[name=solver]");
  const keep = sel.value;
  if (newTask || !sel.options.length) {
    // each task starts from its default solver
    sel.replaceChildren(...SOLVERS[task].map((s, i) => { const o = el("option", i ? s : `${s} (default)`); o.value = s; return o; }));
  } else if (SOLVERS[task].includes(keep)) sel.value = keep;
  for (const l of $$("#edit-form label[data-task]")) {
    const show = l.dataset.task === task || (l.dataset.task === "sdedit" && sel.value === "sdedit");
    l.hidden = !show;
  }
  maskCanvas.hidden = task !== "inpaint";
  $("#brush-colour-label").hidden = task === "inpaint";
  $("#edit-hint").textContent = {
    sdedit: "draw a rough picture:",
    inpaint: "load or upload an image, then paint what to fill:",
  }[task] || "load or upload an image:";
}
$("#edit-form select[name=task]").addEventListener("change", () => updateEditFields(true));
$("#edit-form select[name=solver]").addEventListener("change", () => updateEditFields(false));
$("#edit-form select[name=run]").addEventListener("change", () => setupEditCanvas());
$("#edit-form input[name=strength]").addEventListener("input", ev => { $("#strength-out").textContent = ev.target.value; });
$("#edit-clear").addEventListener("click", () => clearEdit(false));

// strokes: on the mask when inpainting, on the image otherwise
let stroke = null;
function canvasPoint(ev) {
  const c = ev.currentTarget;
  const b = c.getBoundingClientRect();
  return [(ev.clientX - b.left) * c.width / b.width, (ev.clientY - b.top) * c.height / b.height];
}
function drawTo(p) {
  const inpaint = $("#edit-form select[name=task]").value === "inpaint";
  const g = (inpaint ? maskCanvas : imgCanvas).getContext("2d");
  g.strokeStyle = inpaint ? "#fff" : $("#brush-colour").value;
  g.fillStyle = g.strokeStyle;
  g.lineWidth = Number($("#brush-size").value) || 1;
  g.lineCap = "round";
  g.beginPath();
  g.moveTo(...stroke);
  g.lineTo(...p);
  g.stroke();
  stroke = p;
}
for (const c of [imgCanvas, maskCanvas]) {
  c.addEventListener("pointerdown", ev => { stroke = canvasPoint(ev); drawTo(stroke); c.setPointerCapture(ev.pointerId); });
  c.addEventListener("pointermove", ev => { if (stroke) drawTo(canvasPoint(ev)); });
  c.addEventListener("pointerup", () => { stroke = null; });
}

function drawImageFrom(src) {
  return new Promise((ok, fail) => {
    const img = new Image();
    img.onload = () => {
      const g = imgCanvas.getContext("2d");
      g.drawImage(img, 0, 0, imgCanvas.width, imgCanvas.height);
      ok();
    };
    img.onerror = () => fail(new Error("the image could not be read"));
    img.src = src;
  });
}
$("#example-load").addEventListener("click", async () => {
  const r = editRun();
  if (!r) return;
  const url = `/api/run/example.png?run=${encodeURIComponent(r.name)}&index=${Number($("#example-index").value) || 0}`;
  const resp = await fetch(url);
  if (!resp.ok) { $("#edit-status").textContent = (await resp.json()).error; return; }
  await drawImageFrom(URL.createObjectURL(await resp.blob()));
  // a caption model's example comes with its caption: the edit is guided by it
  const caption = resp.headers.get("x-dgm-caption");
  if (caption !== null) $("#edit-form input[name=caption]").value = caption;
  $("#edit-status").textContent = "";
});
$("#edit-upload").addEventListener("change", ev => {
  const f = ev.target.files[0];
  if (f) drawImageFrom(URL.createObjectURL(f)).catch(e => { $("#edit-status").textContent = e.message; });
});

/// The painted mask as a black (kept) and white (to fill) PNG.
function maskPng() {
  const { width: w, height: h } = maskCanvas;
  const src = maskCanvas.getContext("2d").getImageData(0, 0, w, h);
  const out = document.createElement("canvas");
  out.width = w; out.height = h;
  const g = out.getContext("2d");
  const dst = g.createImageData(w, h);
  let painted = 0;
  for (let i = 0; i < w * h; i++) {
    const v = src.data[4 * i + 3] >= 128 ? 255 : 0;
    painted += v ? 1 : 0;
    dst.data.set([v, v, v, 255], 4 * i);
  }
  g.putImageData(dst, 0, 0);
  return painted ? out.toDataURL("image/png") : null;
}

$("#edit-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const task = f.get("task");
  const status = $("#edit-status");
  const req = { run: f.get("run"), task, solver: f.get("solver"), n: Number(f.get("n")), seed: Number(f.get("seed")),
    image: imgCanvas.toDataURL("image/png") };
  if (f.get("steps")) req.steps = Number(f.get("steps"));
  if (f.get("caption")) req.caption = f.get("caption");
  if (f.get("guidance")) req.guidance = Number(f.get("guidance"));
  if (req.solver === "sdedit") req.strength = Number(f.get("strength"));
  if (task === "super-resolve") req.factor = Number(f.get("factor"));
  if (task === "deblur") req.blur_sigma = Number(f.get("blur_sigma"));
  if (task === "inpaint") {
    req.mask = maskPng();
    if (!req.mask) { status.textContent = "paint the part to fill first"; status.className = "error"; return; }
  }
  const id = await submitJob("/api/edit", req, status, $("#edit-form button[type=submit]"));
  if (id === null) return;
  const j = await follow(id, status);
  if (!showPictures(id, j, $("#edit-grid"), $("#edit-each"), `${req.run.replaceAll("/", "_")}-${task}-seed${req.seed}`)) return;
  $("#edit-legend").textContent = task === "sdedit"
    ? `the guide, then ${j.images} samples`
    : `the input, the measurement, then ${j.images} samples`;
});
updateEditFields();

// ---- image pickers (a test example or an upload, shown at the model's size)
const PICKERS = [];
function makePicker(box, runSelect, title) {
  box.append(el("h3", title));
  const canvas = el("canvas");
  const tools = el("div", null, "tools");
  const idx = el("input");
  idx.type = "number"; idx.min = "0"; idx.value = String(PICKERS.length * 5);
  const load = el("button", "Load test example");
  load.type = "button";
  const up = el("input");
  up.type = "file"; up.accept = "image/*";
  const status = el("span", "", "muted");
  tools.append(idx, load, up);
  box.append(canvas, tools, status);
  const picker = { source: null, shape: null };
  const run = () => RUNS.find(r => r.name === runSelect.value);
  const draw = src => new Promise((ok, fail) => {
    const img = new Image();
    img.onload = () => { const g = canvas.getContext("2d"); g.drawImage(img, 0, 0, canvas.width, canvas.height); ok(); };
    img.onerror = () => fail(new Error("the image could not be read"));
    img.src = src;
  });
  picker.resize = () => {
    const r = run();
    const shape = r && r.shape && r.shape.length === 3 ? r.shape : [1, 28, 28];
    if (picker.shape && picker.shape.join() === shape.join()) return;
    picker.shape = shape;
    canvas.width = shape[2]; canvas.height = shape[1];
    const g = canvas.getContext("2d"); g.fillStyle = "#000"; g.fillRect(0, 0, canvas.width, canvas.height);
    picker.source = null;
  };
  picker.loadExample = async () => {
    const r = run();
    if (!r) return;
    const i = Number(idx.value) || 0;
    const resp = await fetch(`/api/run/example.png?run=${encodeURIComponent(r.name)}&index=${i}`);
    if (!resp.ok) { status.textContent = (await resp.json()).error; return; }
    await draw(URL.createObjectURL(await resp.blob()));
    picker.source = { example: i };
    status.textContent = `test example ${i}`;
  };
  load.addEventListener("click", picker.loadExample);
  up.addEventListener("change", async () => {
    const f = up.files[0];
    if (!f) return;
    try {
      await draw(URL.createObjectURL(f));
      // uploads are resized to the model's size here and sent as that PNG
      picker.source = { image: canvas.toDataURL("image/png") };
      status.textContent = `${f.name}, resized to ${canvas.width}×${canvas.height}`;
    } catch (e) { status.textContent = e.message; }
  });
  runSelect.addEventListener("change", () => picker.resize());
  PICKERS.push(picker);
  return picker;
}
const likelihoodPicker = makePicker($("#likelihood-picker"), $("#likelihood-form select[name=run]"), "image");
const fromPicker = makePicker($("#latent-from"), $("#latent-form select[name=run]"), "from");
const toPicker = makePicker($("#latent-to"), $("#latent-form select[name=run]"), "to");

// ---- text scoring: each token coloured by its log-probability
$("#score-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const status = $("#score-status");
  const id = await submitJob("/api/score", { run: f.get("run"), text: f.get("text") }, status, $("#score-form button"));
  if (id === null) return;
  const j = await follow(id, status);
  const out = $("#score-out");
  out.replaceChildren();
  if (j.state !== "done") return;
  const r = j.result;
  $("#score-summary").textContent = `${r.tokens.length} ${r.unit}s · NLL ${num(r.nll_nats, 2)} nats · ` +
    `${num(r.bits_per_token, 3)} bits/${r.unit} (${r.kind}` + (r.skipped_bytes ? `; ${r.skipped_bytes} bytes outside the vocabulary skipped` : "") +
    `; context ${r.context}) · red = unlikely`;
  for (const [t, lp] of r.tokens) {
    const span = el("span", t);
    const bad = Math.min(1, -lp / 6);
    span.style.background = `rgba(220, 40, 40, ${bad.toFixed(2)})`;
    span.title = `log p = ${lp.toFixed(3)} nats`;
    out.append(span);
  }
});

// ---- likelihood: the value and the histograms of the reference sets
const SET_COLOURS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#5c677d"];
function histogram(sets, value) {
  const all = sets.flatMap(s => s.bits_per_dim).concat([value]).filter(Number.isFinite);
  if (!all.length) return null;
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const bins = 30, W = 640, H = 220, pad = 30;
  const x = v => pad + (v - lo) / (hi - lo) * (W - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H + 20 * sets.length); svg.classList.add("hist");
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    // a style through the CSSOM: the page's Content-Security-Policy refuses style attributes
    for (const k in attrs) { if (k === "style") e.style.cssText = attrs[k]; else e.setAttribute(k, attrs[k]); }
    if (text) e.textContent = text;
    svg.append(e);
    return e;
  };
  const counts = sets.map(s => { const c = new Array(bins).fill(0); for (const v of s.bits_per_dim) c[Math.min(bins - 1, Math.floor((v - lo) / (hi - lo) * bins))]++; return c.map(k => k / Math.max(1, s.bits_per_dim.length)); });
  const top = Math.max(...counts.flat(), 1e-9);
  counts.forEach((c, k) => {
    let d = `M ${x(lo)} ${H - pad}`;
    c.forEach((v, i) => { const y = H - pad - v / top * (H - 2 * pad); d += ` L ${x(lo + i * (hi - lo) / bins)} ${y} L ${x(lo + (i + 1) * (hi - lo) / bins)} ${y}`; });
    d += ` L ${x(hi)} ${H - pad}`;
    mk("path", { d, fill: "none", stroke: SET_COLOURS[k % SET_COLOURS.length], "stroke-width": 2 });
    mk("text", { x: pad, y: H + 14 + 20 * k, style: `fill: ${SET_COLOURS[k % SET_COLOURS.length]}` }, `${sets[k].name} (${sets[k].bits_per_dim.length} examples)`);
  });
  mk("line", { x1: x(value), x2: x(value), y1: pad / 2, y2: H - pad, stroke: "#000", "stroke-width": 2, "stroke-dasharray": "4 3" });
  mk("text", { x: x(value) + 4, y: pad / 2 + 10 }, "this image");
  mk("line", { x1: pad, x2: W - pad, y1: H - pad, y2: H - pad, stroke: "#999" });
  for (let i = 0; i <= 4; i++) { const v = lo + i * (hi - lo) / 4; mk("text", { x: x(v) - 12, y: H - pad + 14 }, v.toFixed(2)); }
  mk("text", { x: W - pad - 60, y: H - 4 }, "bits / dim");
  return svg;
}

$("#likelihood-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const status = $("#likelihood-status");
  if (!likelihoodPicker.source) { status.textContent = "load a test example or upload an image first"; status.className = "error"; return; }
  const req = { run: f.get("run"), image: likelihoodPicker.source, reference: Number(f.get("reference")) };
  if (f.get("steps")) req.steps = Number(f.get("steps"));
  const id = await submitJob("/api/likelihood", req, status, $("#likelihood-form button"));
  if (id === null) return;
  const j = await follow(id, status);
  const box = $("#likelihood-hist");
  box.replaceChildren();
  if (j.state !== "done") return;
  const r = j.result;
  $("#likelihood-value").textContent = `${num(r.bits_per_dim, 3)} bits/dim (${r.kind}; ${r.preprocessing})` +
    (r.test_share_worse === null ? "" : ` · ${(100 * r.test_share_worse).toFixed(0)} % of ${r.reference} test examples score worse`);
  const svg = histogram(r.sets, r.bits_per_dim);
  if (svg) box.append(svg);
  $("#likelihood-notes").textContent = r.notes.join(" · ");
});

// ---- latent: the strip, and a slider along the path
$("#latent-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const status = $("#latent-status");
  if (!fromPicker.source || !toPicker.source) { status.textContent = "pick both images first"; status.className = "error"; return; }
  const steps = Number(f.get("steps"));
  const id = await submitJob("/api/interpolate", { run: f.get("run"), from: fromPicker.source, to: toPicker.source, steps },
    status, $("#latent-form button"));
  if (id === null) return;
  const j = await follow(id, status);
  const strip = $("#latent-strip");
  if (j.state !== "done") { strip.hidden = true; return; }
  strip.src = `/api/jobs/${id}/image.png`;
  strip.hidden = false;
  const slider = $("#latent-slider");
  slider.max = String(j.images - 1);
  slider.value = "0";
  $("#latent-slider-label").hidden = false;
  const frame = $("#latent-frame");
  const show = () => { frame.src = `/api/jobs/${id}/image.png?index=${slider.value}`; frame.hidden = false; };
  slider.oninput = show;
  show();
});

loadRuns().catch(e => { $("#root").textContent = e.message; });
setInterval(() => loadRuns().catch(() => {}), 15000);
