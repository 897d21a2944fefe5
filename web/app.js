// The demo page: load a Hugging Face folder by URL, embed sentences, fine-tune a classifier with
// any tramway optimizer while plotting the loss and TRAM's d, classify typed text.
// `window.runScenario` runs web/scenario.json's checks for web/test.mjs.
import init, { Session, optimizerNames } from './pkg/tramway_web.js';

const $ = (id) => document.getElementById(id);
let session = null;
let busy = false;
let adapterText = '';

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${r.statusText}`);
  return new Uint8Array(await r.arrayBuffer());
}

/// Open a model folder (URL ending in /): config.json, model.safetensors, tokenizer.json.
async function openModel(base, maxLen, layers, seed) {
  if (!base.endsWith('/')) base += '/';
  const [config, weights, tokenizer] = await Promise.all(
    ['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => fetchBytes(base + f)));
  return Session.open(config, weights, tokenizer, maxLen, layers, seed);
}

/// Run `f` with the buttons disabled; errors go to the status line (and the console).
async function guarded(what, f) {
  if (busy) return;
  busy = true;
  document.querySelectorAll('button').forEach((b) => { b.disabled = true; });
  try {
    await f();
  } catch (e) {
    status(`${what} failed: ${e.message ?? e}`, true);
    console.error(`${what} failed:`, e);
  } finally {
    busy = false;
    document.querySelectorAll('button').forEach((b) => { b.disabled = false; });
  }
}

function cosine(e, h, i, j) {
  let s = 0;
  for (let k = 0; k < h; k++) s += e[i * h + k] * e[j * h + k];
  return s; // rows are unit length
}

// ---- the chart: loss (left axis) and TRAM's d (right axis) per step ----
const history = [];
window.demoHistory = history; // for web/test.mjs
function drawChart() {
  const c = $('chart'), g = c.getContext('2d');
  const W = c.width, H = c.height, L = 56, R = 64, T = 16, B = 30;
  g.clearRect(0, 0, W, H);
  g.font = '12px system-ui, sans-serif';
  g.strokeStyle = '#c9ced9';
  g.strokeRect(L, T, W - L - R, H - T - B);
  if (history.length === 0) return;
  const n = Math.max(history.length, 2);
  const x = (i) => L + ((W - L - R) * i) / (n - 1);
  const series = [
    { key: 'loss', color: '#3b6fd8', side: 'left', label: 'loss' },
    { key: 'd', color: '#e07b18', side: 'right', label: "TRAM's d" },
  ];
  for (const s of series) {
    const v = history.map((m) => m[s.key]);
    let lo = Math.min(...v), hi = Math.max(...v);
    if (!(hi > lo)) { hi = lo + (Math.abs(lo) || 1) * 0.1; lo -= (Math.abs(lo) || 1) * 0.1; }
    const y = (val) => T + (H - T - B) * (1 - (val - lo) / (hi - lo));
    g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 2;
    g.beginPath();
    v.forEach((val, i) => (i ? g.lineTo(x(i), y(val)) : g.moveTo(x(i), y(val))));
    g.stroke();
    v.forEach((val, i) => { g.beginPath(); g.arc(x(i), y(val), 2.5, 0, 7); g.fill(); });
    const ax = s.side === 'left' ? 4 : W - R + 6;
    g.fillText(hi.toPrecision(3), ax, T + 10);
    g.fillText(lo.toPrecision(3), ax, H - B);
    g.fillText(s.label, ax, T + (H - T - B) / 2);
  }
  g.fillStyle = '#5a6275';
  g.fillText('step 1', L, H - 10);
  g.fillText(`step ${history.length}`, W - R - 44, H - 10);
}

function parseData() {
  const rows = $('data').value.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const texts = [], labels = [];
  rows.forEach((l, i) => {
    const tab = l.lastIndexOf('\t');
    if (tab < 0) throw new Error(`line ${i + 1} of the labelled set has no tab between text and label: ${JSON.stringify(l)}`);
    texts.push(l.slice(0, tab).trim());
    labels.push(l.slice(tab + 1).trim());
  });
  const classes = [...new Set(labels)];
  if (classes.length < 2) throw new Error('the labelled set needs at least two different labels');
  return { texts, labels, classes };
}

/// Batch `k` of `batch` examples, cycling through the set in order (as web-reference does).
function batchOf(texts, labels, k, batch) {
  const idx = Array.from({ length: batch }, (_, i) => (k * batch + i) % texts.length);
  return [idx.map((i) => texts[i]), idx.map((i) => labels[i])];
}

async function load() {
  const base = $('model').value, layers = +$('layers').value, maxLen = +$('maxlen').value;
  status(`loading ${base} ...`);
  const t0 = performance.now();
  session = null;
  session = await openModel(base, maxLen, layers, 1);
  $('adapter').textContent = `${adapterText}; tramway runs on ${session.adapter.trim()}`;
  $('modelinfo').textContent = `${session.layers} layers, width ${session.hiddenSize}`;
  status(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

async function embed() {
  if (!session) await load();
  const sentences = $('sentences').value.split('\n').map((s) => s.trim()).filter((s) => s);
  const t0 = performance.now();
  const e = await session.embed(sentences);
  const h = session.hiddenSize;
  let html = '<table><tr><th></th>' + sentences.map((_, j) => `<th>${j + 1}</th>`).join('') + '</tr>';
  sentences.forEach((s, i) => {
    html += `<tr><th title="${s.replace(/"/g, '&quot;')}">${i + 1}</th>`;
    sentences.forEach((_, j) => { html += `<td>${cosine(e, h, i, j).toFixed(3)}</td>`; });
    html += '</tr>';
  });
  $('similarity').innerHTML = html + '</table>cosine similarity of the sentence embeddings';
  status(`embedded ${sentences.length} sentences in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}

async function train() {
  if (!session) await load();
  const { texts, labels, classes } = parseData();
  const opt = $('optimizer').value, lr = +$('lr').value, steps = +$('steps').value, batch = +$('batch').value;
  session.startTraining(classes, opt, lr, 1);
  history.length = 0;
  drawChart();
  for (let k = 0; k < steps; k++) {
    const t0 = performance.now();
    const [t, l] = batchOf(texts, labels, k, batch);
    const m = await session.step(t, l);
    history.push({ loss: m.loss, d: m.d });
    drawChart();
    status(`${opt} step ${m.step}/${steps}: loss ${m.loss.toFixed(4)}, d ${m.d.toExponential(3)}, ` +
      `|g| ${m.gradNorm.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
  }
  status($('status').textContent + '\ntraining done');
}

async function classify() {
  if (!session) throw new Error('load a model and train it first');
  const labels = session.labels;
  const p = await session.classify([$('query').value]);
  $('prediction').innerHTML = labels
    .map((l, i) => `<div>${l.padEnd(12, '\u00a0')} <span class="bar" style="width:${(200 * p[i]).toFixed(0)}px"></span> ${p[i].toFixed(3)}</div>`)
    .join('');
  status(`classified: ${labels[p.indexOf(Math.max(...p))]}`);
}

/// web/scenario.json's checks, the same steps as web-reference (web/src/reference.rs).
window.runScenario = async (sc) => {
  const url = (part) => `../${part.model}/`;
  const e = sc.embed;
  let s = await openModel(url(e), e.max_len, e.layers, e.seed);
  const flat = await s.embed(e.sentences);
  const h = s.hiddenSize, adapter = s.adapter;
  const embed = e.sentences.map((_, i) => Array.from(flat.slice(i * h, (i + 1) * h)));
  s.free();
  const train = async (p) => {
    const s = await openModel(url(p), p.max_len, p.layers, p.seed);
    const out = {};
    for (const opt of p.optimizers) {
      s.startTraining(p.classes, opt, p.lr, p.seed);
      const steps = [];
      for (let k = 0; k < p.steps; k++) {
        const [t, l] = batchOf(p.texts, p.labels, k, p.batch);
        const m = await s.step(t, l);
        steps.push({ loss: m.loss, d: m.d, gradNorm: m.gradNorm });
      }
      const probs = await s.classify(p.probe);
      const c = p.classes.length;
      out[opt] = { steps, probs: p.probe.map((_, i) => Array.from(probs.slice(i * c, (i + 1) * c))) };
    }
    s.free();
    return out;
  };
  return { adapter, embed, small: await train(sc.small), real: await train(sc.real) };
};

async function main() {
  await init();
  const sel = $('optimizer');
  for (const name of optimizerNames()) sel.add(new Option(name, name, false, name === 'tram-x'));
  if (!navigator.gpu) {
    status('this browser exposes no WebGPU (navigator.gpu): use a recent Chrome, Edge or Safari, or Firefox with WebGPU on', true);
    return;
  }
  const a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!a) {
    status('navigator.gpu.requestAdapter() found no adapter', true);
    return;
  }
  const info = a.info ?? {};
  const desc = `${info.vendor ?? ''} ${info.architecture ?? ''} ${info.description ?? ''}`;
  // A software adapter (SwiftShader, llvmpipe) runs a MiniLM step in seconds, a real GPU in
  // milliseconds; fewer layers (the "layers" box) make it faster but learn more slowly.
  const slow = info.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|cpu/i.test(desc);
  adapterText = `adapter: ${desc.trim() || '(unnamed)'}${slow ? ' (a software adapter: expect seconds per step)' : ''}`;
  $('adapter').textContent = adapterText;
  $('load').onclick = () => guarded('loading', load);
  $('embed').onclick = () => guarded('embedding', embed);
  $('train').onclick = () => guarded('training', train);
  $('classify').onclick = () => guarded('classifying', classify);
  drawChart();
  status('ready: Load a model (or press Train, which loads it first)');
  window.tramwayReady = true;
}

main().catch((e) => { status(`start failed: ${e.message ?? e}`, true); console.error(e); });
