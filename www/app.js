// The demo page's UI. All model work happens in webbert (Rust/wasm in a worker); this file only draws.
import { Classifier, Embedder, FillMask, QuestionAnswerer, TokenClassifier } from './webbert/js/index.js';

const DEFAULT_MODEL = new URL('models/all-MiniLM-L6-v2/', location.href).href;
// all-MiniLM-L6-v2 with a masked-LM head, trained by `webbert train-mlm` (README: "The fill-mask model").
const DEFAULT_MLM = new URL('models/minilm-l6-mlm/', location.href).href;
const $ = (id) => document.getElementById(id);
let embedder = null;
let attention = null;
/** The models loaded into a section (`mlm`, `rr`, `ner`, `qa`): replaced only by `loadModel`. */
const models = {};

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
  const model = await loadModel(FillMask, source, 'mlm');
  if (!model) return;
  $('mlm-note').textContent = typeof source === 'string' && source === DEFAULT_MLM
    ? `minilm-l6-mlm loaded (${model.backend}): all-MiniLM-L6-v2 trained on by webbert as a masked LM (19 M words, whole-word masking). Load another below.`
    : `Masked-LM loaded (${model.backend}).`;
  $('progress').textContent = 'fill-mask model loaded';
  await predict();
}

async function predict() {
  try {
    const masks = await timed('mlm-timing', 'fill-mask', () => models.mlm.predict($('mlm-text').value, { topK: 5 }));
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

// Reranking ---------------------------------------------------------------------------------------------
async function loadReranker(source) {
  const model = await loadModel(Classifier, source, 'rr');
  if (!model) return;
  $('rr-note').textContent = `Cross-encoder loaded (${model.backend}): each (query, passage) pair is read together.`;
  await rank();
}

async function rank() {
  const query = $('rr-query').value;
  const passages = $('rr-passages').value.split('\n').map((s) => s.trim()).filter(Boolean);
  try {
    const ranked = await timed('rr-timing', `${passages.length} passages ranked`, async () => {
      if (models.rr) return models.rr.rerank(query, passages);
      // Without a cross-encoder: the sentence encoder's cosine similarity (unit vectors: dot = cosine).
      const [q, ...rows] = await embedder.embed([query, ...passages]);
      const scored = rows.map((row, index) => ({ index, text: passages[index], score: row.reduce((s, x, k) => s + x * q[k], 0) }));
      return scored.sort((a, b) => b.score - a.score);
    });
    $('rr-results').innerHTML = '';
    for (const { text, score } of ranked) {
      const bar = cell('bar');
      bar.append(cell('label', text), cell('fill'), cell('score', score.toFixed(3)));
      bar.children[1].style.width = `${Math.max(1, 200 * Math.max(0, score))}px`;
      const item = document.createElement('li');
      item.append(bar);
      $('rr-results').append(item);
    }
  } catch (error) {
    showError('rr-results', error);
  }
}

// Named entities and answers, marked in their text ------------------------------------------------------
/** `text` with each `{start, end, kind, title}` span (character offsets) wrapped in a <mark>. */
function markSpans(where, text, spans) {
  const chars = Array.from(text);
  const out = $(where);
  out.innerHTML = '';
  let at = 0;
  for (const { start, end, kind, title } of spans) {
    out.append(chars.slice(at, start).join(''));
    const mark = document.createElement('mark');
    mark.className = kind ?? '';
    mark.title = title;
    mark.append(chars.slice(start, end).join(''));
    if (kind) mark.append(Object.assign(document.createElement('small'), { textContent: kind }));
    out.append(mark);
    at = end;
  }
  out.append(chars.slice(at).join(''));
}

/** Each section's load under way: a newer load of the section aborts it, which stops its worker. */
const loads = {};

/** Loads `kind` from `source` into `section` in place of its model, showing progress, time and errors
 * there. Resolves to the model, or to null if it failed or a newer load of the section took its place. */
async function loadModel(kind, source, section) {
  loads[section]?.abort();
  const { signal } = (loads[section] = new AbortController());
  models[section]?.dispose();
  models[section] = null;
  $(`${section}-results`).textContent = 'loading…';
  try {
    const model = await timed(`${section}-timing`, 'model load', () => kind.load(source, { onProgress: showProgress, signal }));
    if (signal.aborted) {
      model.dispose();
      return null;
    }
    $(`${section}-form`).querySelector('button').disabled = false;
    $(`${section}-results`).textContent = '';
    return (models[section] = model);
  } catch (error) {
    if (!signal.aborted) showError(`${section}-results`, error);
    return null;
  }
}

async function findEntities() {
  const tagger = models.ner;
  if (!tagger) return;
  const text = $('ner-text').value;
  try {
    const entities = await timed('ner-timing', 'entities', () => tagger.entities(text, { aggregation: 'simple' }));
    markSpans('ner-results', text, entities.map((e) => ({
      start: e.start, end: e.end, kind: e.entityGroup, title: `${e.entityGroup} ${(100 * e.score).toFixed(1)}%`,
    })));
  } catch (error) {
    showError('ner-results', error);
  }
}

async function answer() {
  const reader = models.qa;
  if (!reader) return;
  const context = $('qa-context').value;
  try {
    const [best] = await timed('qa-timing', 'answer', () => reader.answer($('qa-question').value, context));
    // A context of only characters the tokenizer drops has no span to give.
    if (!best) return void ($('qa-results').textContent = 'No answer in this context.');
    markSpans('qa-results', context, [{ start: best.start, end: best.end, title: `score ${best.score.toFixed(4)}` }]);
  } catch (error) {
    showError('qa-results', error);
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
$('rr-load').onsubmit = (e) => { e.preventDefault(); if ($('rr-url').value) loadReranker($('rr-url').value); };
$('rr-files').onchange = (e) => { if (e.target.files.length) loadReranker(e.target.files); };
$('rr-form').onsubmit = (e) => { e.preventDefault(); rank(); };
const loadTagger = async (source) => {
  if (await loadModel(TokenClassifier, source, 'ner')) await findEntities();
};
const loadReader = async (source) => {
  if (await loadModel(QuestionAnswerer, source, 'qa')) await answer();
};
$('ner-load').onsubmit = (e) => { e.preventDefault(); if ($('ner-url').value) loadTagger($('ner-url').value); };
$('ner-files').onchange = (e) => { if (e.target.files.length) loadTagger(e.target.files); };
$('ner-form').onsubmit = (e) => { e.preventDefault(); findEntities(); };
$('qa-load').onsubmit = (e) => { e.preventDefault(); if ($('qa-url').value) loadReader($('qa-url').value); };
$('qa-files').onchange = (e) => { if (e.target.files.length) loadReader(e.target.files); };
$('qa-form').onsubmit = (e) => { e.preventDefault(); answer(); };
$('att-head').onchange = drawAttention;

// The fill-mask model first: the page's first result needs nothing else.
await loadFillMask(DEFAULT_MLM);
try {
  embedder = await timed('emb-timing', 'model load', () => Embedder.load(DEFAULT_MODEL, { onProgress: showProgress }));
  $('backend').textContent = embedder.backend === 'cpu' ? 'CPU'
    : embedder.crossover ? `WebGPU (CPU under ${embedder.crossover} tokens)` : 'WebGPU';
  $('progress').textContent = 'all-MiniLM-L6-v2 loaded';
  for (const id of ['emb-form', 'att-form', 'rr-form']) $(id).querySelector('button').disabled = false;
  await showAttention();
  await compare();
  await rank();
  $('progress').textContent = 'models loaded';
  document.body.dataset.ready = 'true';
} catch (error) {
  $('backend').textContent = 'unavailable';
  showError('emb-heatmap', error);
  document.body.dataset.ready = 'error';
}
