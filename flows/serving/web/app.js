// FusionRx web page: ranking with weight sliders (sortable), target pages, experiments. Plain JS over /api.
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

async function showTarget(gene) {
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
    $("compounds").innerHTML = t.compounds.length ? t.compounds.map((c) =>
      `<div class="compound"><img class="structure" alt="${c.id}" src="/api/compounds/depict.svg?smiles=${encodeURIComponent(c.canonical_smiles)}">
       <div><b>${c.name || c.id}</b> <span class="badge ${c.link}">${c.link}</span> pChEMBL ${c.pchembl.toFixed(2)}
       ${c.model_version ? `<br>model ${c.model_version}` : ""}</div></div>`).join("") : "<p>no linked compound</p>";
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

function route() {
  const h = location.hash || "#/";
  const m = h.match(/^#\/target\/(.+)$/);
  $("ranking-view").hidden = !(h === "#/" || h === "#");
  $("target-view").hidden = !m;
  $("experiments-view").hidden = h !== "#/experiments";
  if (m) showTarget(decodeURIComponent(m[1]));
  if (h === "#/experiments") showExperiments();
}

window.addEventListener("hashchange", route);
$("has-compound").addEventListener("change", loadRanking);
$("min-score").addEventListener("change", loadRanking);
initSliders().then(loadRanking).then(route).catch(showError);
