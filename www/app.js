// The demo page's UI. All model work happens in webbert (Rust/wasm in a worker); this file only draws.
import { Embedder, FillMask } from './webbert/js/index.js';

const DEFAULT_MODEL = new URL('models/all-MiniLM-L6-v2/', location.href).href;
// all-MiniLM-L6-v2 with a masked-LM head, trained by `webbert train-mlm` (README: "The fill-mask model").
const DEFAULT_MLM = new URL('models/minilm-l6-mlm/', location.href).href;
const $ = (id) => document.getElementById(id);
let embedder = null;
let fillMask = null;
let attention = null;

function showProgress({ file, loaded, total }) {
  const mb = (n) => (n / 1e6).toFixed(1);
  $('progress').textContent = `downloading ${file}: ${mb(loaded)}${total ? ` / ${mb(total)}` : ''} MB`;
}

function showError(where, error) {
  $(where).innerHTML = '';
  const p = document.createElement('p');
  p.className = 'error';
  p.textContent = error.message;
  $(where).append(p);
}

async function timed(where, label, work) {
  const start = performance.now();
  const result = await work();
  $(where).textContent = `${label}: ${(performance.now() - start).toFixed(0)} ms`;
  return result;
}

function cell(className, text, background, title) {
  const div = document.createElement('div');
  div.className = className;
  if (text !== undefined) div.textContent = text;
  if (background) div.style.background = background;
  if (title) div.title = title;
  return div;
}

const heat = (v) => `hsl(220 80% ${100 - 55 * Math.max(0, Math.min(1, v))}%)`;

// Fill-mask ---------------------------------------------------------------------------------------------
async function loadFillMask(source) {
  $('mlm-results').textContent = 'loading…';
  try {
    fillMask?.dispose();
    fillMask = await timed('mlm-timing', 'model load', () => FillMask.load(source, { onProgress: showProgress }));
    $('mlm-note').textContent = typeof source === 'string' && source === DEFAULT_MLM
      ? `minilm-l6-mlm loaded (${fillMask.backend}): all-MiniLM-L6-v2 with a masked-LM head trained by webbert. Load another below.`
      : `Masked-LM loaded (${fillMask.backend}).`;
    $('mlm-form').querySelector('button').disabled = false;
    $('progress').textContent = 'models loaded';
    $('mlm-results').textContent = '';
    await predict();
  } catch (error) {
    fillMask = null;
    showError('mlm-results', error);
  }
}

async function predict() {
  try {
    const masks = await timed('mlm-timing', 'fill-mask', () => fillMask.predict($('mlm-text').value, { topK: 5 }));
    $('mlm-results').innerHTML = '';
    masks.forEach((predictions, i) => {
      const block = cell('mask');
      block.append(cell('title', `[MASK] ${i + 1}`));
      for (const p of predictions) {
        const bar = cell('bar');
        bar.append(cell('label', p.token), cell('fill'), cell('score', `${(100 * p.score).toFixed(1)}%`));
        bar.children[1].style.width = `${Math.max(1, 300 * p.score)}px`;
        bar.title = p.sequence;
        block.append(bar);
      }
      $('mlm-results').append(block);
    });
  } catch (error) {
    showError('mlm-results', error);
  }
}

// Embeddings --------------------------------------------------------------------------------------------
async function compare() {
  const sentences = $('emb-text').value.split('\n').map((s) => s.trim()).filter(Boolean);
  try {
    const rows = await timed('emb-timing', `${sentences.length} embeddings`, () => embedder.embed(sentences));
    const grid = $('emb-heatmap');
    grid.innerHTML = '';
    grid.style.gridTemplateColumns = `18rem repeat(${rows.length}, 2.2rem)`;
    grid.append(cell('cell head'), ...sentences.map((_, j) => cell('cell head', `${j + 1}`)));
    rows.forEach((a, i) => {
      grid.append(cell('cell head', `${i + 1}. ${sentences[i]}`, null, sentences[i]));
      rows.forEach((b, j) => {
        const sim = a.reduce((sum, x, k) => sum + x * b[k], 0); // unit vectors: dot = cosine
        grid.append(cell('cell sim', sim.toFixed(2), heat(sim), `${sentences[i]}\n${sentences[j]}\ncosine ${sim.toFixed(4)}`));
      });
    });
  } catch (error) {
    showError('emb-heatmap', error);
  }
}

// Attention ---------------------------------------------------------------------------------------------
async function showAttention() {
  try {
    attention = await timed('att-timing', 'attention', () => embedder.attention($('att-text').value));
    for (const [id, n] of [['att-layer', attention.numLayers], ['att-head', attention.numHeads]]) {
      const keep = Math.min(Number($(id).value || 0), n - 1);
      $(id).innerHTML = Array.from({ length: n }, (_, i) => `<option value="${i}">${i + 1}</option>`).join('');
      $(id).value = String(keep);
    }
    drawAttention();
  } catch (error) {
    showError('att-heatmap', error);
  }
}

function drawAttention() {
  const { tokens, numHeads, weights } = attention;
  const n = tokens.length;
  const layer = Number($('att-layer').value);
  const head = Number($('att-head').value);
  const base = (layer * numHeads + head) * n * n;
  const grid = $('att-heatmap');
  grid.innerHTML = '';
  grid.style.gridTemplateColumns = `7rem repeat(${n}, 1.6rem)`;
  grid.append(cell('cell head'), ...tokens.map((t) => cell('cell head col', t)));
  tokens.forEach((query, q) => {
    grid.append(cell('cell head', query));
    tokens.forEach((key, k) => {
      const w = weights[base + q * n + k];
      const c = cell('cell weight', undefined, heat(w * 2));
      c.dataset.weight = w.toFixed(4);
      c.onmouseenter = () => { $('att-readout').textContent = `${query} → ${key}: ${w.toFixed(4)}`; };
      grid.append(c);
    });
  });
}

// Wiring ------------------------------------------------------------------------------------------------
$('mlm-load').onsubmit = (e) => { e.preventDefault(); if ($('mlm-url').value) loadFillMask($('mlm-url').value); };
$('mlm-files').onchange = (e) => { if (e.target.files.length) loadFillMask(e.target.files); };
$('mlm-form').onsubmit = (e) => { e.preventDefault(); predict(); };
$('emb-form').onsubmit = (e) => { e.preventDefault(); compare(); };
$('att-form').onsubmit = (e) => { e.preventDefault(); showAttention(); };
$('att-layer').onchange = drawAttention;
$('att-head').onchange = drawAttention;

try {
  embedder = await timed('emb-timing', 'model load', () => Embedder.load(DEFAULT_MODEL, { onProgress: showProgress }));
  $('backend').textContent = embedder.backend === 'cpu' ? 'CPU'
    : embedder.crossover ? `WebGPU (CPU under ${embedder.crossover} tokens)` : 'WebGPU';
  $('progress').textContent = 'all-MiniLM-L6-v2 loaded';
  for (const id of ['emb-form', 'att-form']) $(id).querySelector('button').disabled = false;
  await showAttention();
  await compare();
  await loadFillMask(DEFAULT_MLM);
  document.body.dataset.ready = 'true';
} catch (error) {
  $('backend').textContent = 'unavailable';
  showError('emb-heatmap', error);
  document.body.dataset.ready = 'error';
}
