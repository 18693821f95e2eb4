// FusionRx web page: ranking with weight sliders (sortable), target pages, experiments, patients. Plain JS over /api.
"use strict";
const state = { types: [], weights: {}, rows: [], sortKey: "rank", sortAsc: true };
const $ = (id) => document.getElementById(id);

async function api(path) {
  const r = await fetch(path);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.detail && JSON.stringify(body.detail)) || r.statusText);
  return body;
}
function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

function weightsParam() {
  return state.types.map((t) => `${t}:${state.weights[t]}`).join(",");
}

async function loadRanking() {
  showError(null);
  const q = new URLSearchParams({ top: "50", weights: weightsParam() });
  if ($("has-compound").checked) q.set("has_compound", "true");
  const ms = parseFloat($("min-score").value);
  if (ms > 0) q.set("min_score", String(ms));
  try {
    const page = await api(`/api/targets?${q}`);
    state.rows = page.rows;
    $("run-info").textContent = `run ${page.run_id} · scoring ${page.scoring_version}`;
    $("ranking-status").textContent = `${page.total} genes match; showing ${page.rows.length}`;
    renderRanking();
  } catch (e) { showError(e); }
}

function renderRanking() {
  const cols = ["rank", "gene", "score", ...state.types, "compounds"];
  $("ranking").querySelector("thead").innerHTML = "<tr>" + cols.map((c) =>
    `<th data-key="${c}" class="${c === "gene" ? "gene" : ""}">${c.replace(/_/g, " ")}${state.sortKey === c ? (state.sortAsc ? " ▲" : " ▼") : ""}</th>`).join("") + "</tr>";
  const val = (r, k) => k === "compounds" ? r.compounds.length : (k in r ? r[k] : r.evidence[k]);
  const rows = [...state.rows].sort((a, b) => {
    const x = val(a, state.sortKey), y = val(b, state.sortKey);
    return (x < y ? -1 : x > y ? 1 : 0) * (state.sortAsc ? 1 : -1);
  });
  $("ranking").querySelector("tbody").innerHTML = rows.map((r) => "<tr>" + cols.map((c) => {
    if (c === "gene") return `<td class="gene"><a href="#/target/${encodeURIComponent(r.gene)}" class="gene-link">${r.gene}</a></td>`;
    const v = val(r, c);
    return `<td>${typeof v === "number" && c !== "rank" && c !== "compounds" ? v.toFixed(3) : v}</td>`;
  }).join("") + "</tr>").join("");
  $("ranking").querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
    const k = th.dataset.key;
    state.sortAsc = state.sortKey === k ? !state.sortAsc : k === "rank" || k === "gene";
    state.sortKey = k;
    renderRanking();
  }));
}

async function initSliders() {
  const info = await api("/api/evidence-types");
  state.types = info.types;
  state.weights = { ...info.weights };
  $("sliders").innerHTML = state.types.map((t) =>
    `<label class="slider">${t.replace(/_/g, " ")} <input type="range" min="0" max="1" step="0.05" id="w-${t}" value="${state.weights[t]}">
     <span id="wv-${t}">${state.weights[t]}</span></label>`).join("");
  state.types.forEach((t) => $(`w-${t}`).addEventListener("change", (ev) => {
    state.weights[t] = parseFloat(ev.target.value);
    $(`wv-${t}`).textContent = ev.target.value;
    loadRanking();
  }));
}

const fmt = (v, d = 2) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));

function domainBadge(d) {
  if (!d || d.in_domain === null || d.in_domain === undefined) return "";
  const title = `nearest training compound on this target: Tanimoto ${fmt(d.nn_tanimoto_target)}; ` +
    `on any target: ${fmt(d.nn_tanimoto_any)} (in domain at >= ${d.threshold})`;
  return `<span class="domain ${d.in_domain ? "in" : "out"}" title="${title}">${d.in_domain ? "in domain" : "out of domain"}</span>`;
}

function compoundCard(gene, c) {
  const predicted = c.link === "predicted";
  const badge = predicted && c.model_version
    ? `<a class="badge predicted" title="model card" href="#/target/${encodeURIComponent(gene)}/model/${c.model_version}">predicted</a>`
    : `<span class="badge ${c.link}">${c.link}</span>`;
  const type = c.activity && c.activity.type ? ` (${c.activity.type})` : "";
  const extra = predicted
    ? `<br>${Math.round(100 * (c.interval?.nominal ?? 0.9))}% interval ${fmt(c.interval?.lower)}-${fmt(c.interval?.upper)}
       ${domainBadge(c.domain)}<br>nearest training Tanimoto: target ${fmt(c.domain?.nn_tanimoto_target)},
       any ${fmt(c.domain?.nn_tanimoto_any)}<br>model ${c.model_version}` : "";
  return `<div class="compound"><img class="structure" alt="${c.id}" src="/api/compounds/depict.svg?smiles=${encodeURIComponent(c.canonical_smiles)}">
    <div><b>${c.name || c.id}</b> ${badge} pChEMBL${type} ${c.pchembl.toFixed(2)}${extra}</div></div>`;
}

function metricRow(split, m) {
  if (m.skipped) return `<tr><td>${split}</td><td colspan="5">not evaluated: ${m.skipped}</td></tr>`;
  return `<tr><td>${split}</td><td>${m.n_train} / ${m.n_test}</td><td>${fmt(m.model.ci, 3)} / ${fmt(m.model.mse, 3)}</td>
    <td>${fmt(m.baseline_drug_target_mean.ci, 3)} / ${fmt(m.baseline_drug_target_mean.mse, 3)}</td>
    <td>${fmt(m.coverage, 3)} (nominal ${m.nominal})</td></tr>`;
}

function showModelCard(t, version) {
  const card = version ? (t.activity_models || {})[version] : null;
  $("model-card").hidden = !card;
  if (!card) return;
  const d = card.training_data;
  $("model-card-title").textContent = `Activity model ${card.model_version}`;
  $("model-card-body").innerHTML = `<p>${card.description}<br>${card.architecture}; trained on
    ${card.activity_types.join(", ")}</p>
    <p>training data: ${d.rows} measured pairs, ${d.targets} targets (${d.tasks} target x activity-type tasks),
    ${d.compounds} compounds; sha256 <code>${d.sha256.slice(0, 16)}</code></p>
    <table><thead><tr><th>held-out split</th><th>train / test pairs</th><th>model CI / MSE</th>
    <th>drug + target mean baseline CI / MSE</th><th>interval coverage</th></tr></thead>
    <tbody>${Object.entries(card.metrics).map(([k, m]) => metricRow(k, m)).join("")}</tbody></table>
    <p>${Math.round(100 * card.interval.nominal)}% interval: prediction &plusmn; ${fmt(card.interval.halfwidth)}
    (${card.interval.method}, ${card.splits.calibration.n} calibration pairs).
    In domain: ${card.domain.measure} &ge; ${card.domain.in_domain_at_least}.</p>`;
  $("model-card").scrollIntoView();
}

async function showTarget(gene, model) {
  showError(null);
  try {
    const t = await api(`/api/targets/${encodeURIComponent(gene)}`);
    $("target-title").textContent = `${t.gene}: rank ${t.rank}, score ${t.score.toFixed(3)}`;
    $("evidence-bars").innerHTML = t.evidence.map((e) =>
      `<div class="bar-row evidence-bar" data-type="${e.type}"><span class="bar-label">${e.type.replace(/_/g, " ")}</span>
       <span class="bar-bg"><div class="bar" style="width:${Math.round(300 * e.score)}px"></div></span>
       <span>${e.score.toFixed(3)} × ${e.weight} (${e.n_rows} row${e.n_rows === 1 ? "" : "s"})</span></div>`).join("") +
      `<div class="bar-row"><span class="bar-label">tractability (not in score)</span>
       <span class="bar-bg"><div class="bar" style="width:${Math.round(300 * t.tractability.score)}px;background:#888"></div></span>
       <span>${t.tractability.score.toFixed(3)}</span></div>`;
    $("compounds").innerHTML = t.compounds.length ? t.compounds.map((c) => compoundCard(t.gene, c)).join("")
      : "<p>no linked compound</p>";
    showModelCard(t, model);
    const img = $("spatial-img");
    img.hidden = false;
    $("spatial-status").textContent = "";
    img.onerror = () => { img.hidden = true; $("spatial-status").textContent = "not measured in any spatial sample"; };
    img.src = `/api/targets/${encodeURIComponent(t.gene)}/spatial.png`;
  } catch (e) { showError(e); }
}

async function showExperiments() {
  try {
    const rows = await api("/api/experiments");
    $("experiments").querySelector("tbody").innerHTML = rows.map((r) =>
      `<tr><td>${r.task}</td><td class="gene">${r.name}</td><td>${r.metric}</td><td>${(r.mean ?? NaN).toFixed(3)}</td>
       <td>${(r.std ?? NaN).toFixed(3)}</td><td>${r.n_folds}</td></tr>`).join("");
  } catch (e) { showError(e); }
}

const esc = (v) => String(v ?? "-").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// the report part each figure draws (flows.patients.render.FIGURES), and its caption
const PATIENT_FIGURES = [
  ["probabilities", "diagnosis", "Calibrated class probabilities"],
  ["contributions", "modality_contributions", "Modality contributions (exact Shapley values)"],
  ["slide_attention", "slide", "Slide: MIL attention and the top tiles"],
  ["pet_ct", "radiology", "PET/CT through the ROI centre, ROI contour"],
  ["spatial", "spatial", "Spatial sample: tumour-region spots and genes"],
];

async function showPatients(gene) {
  showError(null);
  try {
    const rows = await api("/api/patients");
    const q = gene ? `?gene=${encodeURIComponent(gene)}` : "";
    $("patients").querySelector("tbody").innerHTML = rows.map((r) =>
      `<tr><td><a class="patient-link" href="#/patient/${encodeURIComponent(r.patient_id)}${q}">${esc(r.patient_id)}</a></td>
       <td>${esc(r.diagnosis)}</td><td>${esc(r.modalities.join(", "))}</td></tr>`).join("");
  } catch (e) { showError(e); }
}

function patientSummary(p) {
  const out = [];
  if (p.diagnosis) out.push(`diagnosis <b>${esc(p.diagnosis.predicted)}</b> (p = ${fmt(p.diagnosis.probabilities[p.diagnosis.predicted], 3)};
    recorded: ${esc(p.diagnosis.recorded)}) by ${esc(p.diagnosis.model)}, version ${esc(p.diagnosis.version)}`);
  if (p.survival) out.push(`survival risk ${fmt(p.survival.risk, 3)} (percentile ${fmt(p.survival.risk_percentile, 1)})`);
  if (p.radiology && p.radiology.roi) out.push(`ROI ${esc(p.radiology.roi.label)} (${esc(p.radiology.roi.source)}), ${fmt(p.radiology.roi.volume_ml)} ml`);
  if (p.slide) out.push(`slide ${esc(p.slide.path.split("/").pop())}: ${p.slide.tiles.length} tiles`);
  if (p.spatial) out.push(`${p.spatial.tumour_spots.length} tumour-region spots`);
  return out.length ? `<p>${out.join("<br>")}</p>` : "<p>no model output for this patient</p>";
}

async function showPatient(pid, gene) {
  showError(null);
  $("patient-title").textContent = `Patient ${pid}`;
  $("patient-figures").innerHTML = "";
  try {
    const p = await api(`/api/patients/${encodeURIComponent(pid)}`);
    const base = `/api/patients/${encodeURIComponent(p.patient_id)}`;
    $("patient-report-link").href = `${base}/report`;
    $("patient-summary").innerHTML = patientSummary(p);
    $("patient-figures").innerHTML = PATIENT_FIGURES.filter(([, part]) => p[part]).map(([name, , caption]) =>
      `<figure><img class="patient-figure" data-figure="${name}" alt="${caption}" src="${base}/figures/${name}.png">
       <figcaption>${caption}</figcaption></figure>`).join("");
    $("patient-neighbours").querySelector("tbody").innerHTML = (p.neighbours || []).map((n) =>
      `<tr><td><a href="#/patient/${encodeURIComponent(n.patient_id)}">${esc(n.patient_id)}</a></td><td>${fmt(n.distance, 3)}</td>
       <td>${esc(n.diagnosis)}</td></tr>`).join("");
    $("patient-targets").querySelector("tbody").innerHTML = (p.targets || []).map((t) => {
      const e = t.evidence || {};
      const mut = Array.isArray(e.mutation) ? (e.mutation.join("; ") || "none") : e.mutation;
      return `<tr class="${t.gene === gene ? "hl" : ""}"><td>${t.rank}</td><td class="gene"><a href="#/target/${encodeURIComponent(t.gene)}">${esc(t.gene)}</a></td>
        <td>${fmt(t.score, 3)}</td><td>${fmt(e.expression_z)}</td><td>${esc(e.copy_number)}</td><td>${esc(mut)}</td>
        <td>${fmt(e.spatial_enrichment)}</td></tr>`;
    }).join("");
  } catch (e) { showError(e); }
}

function route() {
  const h = location.hash || "#/";
  const m = h.match(/^#\/target\/([^/]+)(?:\/model\/([0-9a-f]+))?$/);
  const pl = h.match(/^#\/patients(?:\?gene=([^&]*))?$/);
  const pv = h.match(/^#\/patient\/([^/?]+)(?:\?gene=([^&]*))?$/);
  $("ranking-view").hidden = !(h === "#/" || h === "#");
  $("target-view").hidden = !m;
  $("experiments-view").hidden = h !== "#/experiments";
  $("patients-view").hidden = !pl;
  $("patient-view").hidden = !pv;
  if (m) {
    $("target-patients").href = `#/patients?gene=${m[1]}`;
    showTarget(decodeURIComponent(m[1]), m[2]);
  }
  if (h === "#/experiments") showExperiments();
  if (pl) showPatients(pl[1] ? decodeURIComponent(pl[1]) : null);
  if (pv) showPatient(decodeURIComponent(pv[1]), pv[2] ? decodeURIComponent(pv[2]) : null);
}

window.addEventListener("hashchange", route);
$("has-compound").addEventListener("change", loadRanking);
$("min-score").addEventListener("change", loadRanking);
initSliders().then(loadRanking).then(route).catch(showError);
