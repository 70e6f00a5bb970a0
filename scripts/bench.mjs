// npm run bench: webbert against transformers.js (ONNX Runtime Web) on the same model, in the same headless
// Chromium, in one run. Prints a table with the webbert / transformers.js latency ratio per case and writes
// bench-results.json. Both runtimes are served locally (no CDN, no hub).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';
import { serve } from './serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const WORDS = 'the cat sat on the mat and the dog ran in the park'.split(' '); // one token each

/** A text of exactly `n` tokens with [CLS] and [SEP]; `mask` puts [MASK] in the middle. */
function text(n, mask = false) {
  const words = Array.from({ length: n - 2 }, (_, i) => WORDS[i % WORDS.length]);
  if (mask) words[Math.floor(words.length / 2)] = '[MASK]';
  return words.join(' ');
}

const CASES = [
  { name: 'embed 1×16', task: 'embed', input: [text(16)], tokens: 16 },
  { name: 'embed 1×128', task: 'embed', input: [text(128)], tokens: 128 },
  { name: 'embed 1×512', task: 'embed', input: [text(512)], tokens: 512 },
  { name: 'embed 8×128', task: 'embed', input: Array(8).fill(text(128)), tokens: 8 * 128 },
  { name: 'fill-mask 16', task: 'fill-mask', input: text(16, true), tokens: 16 },
  { name: 'fill-mask 128', task: 'fill-mask', input: text(128, true), tokens: 128 },
];

// [webbert config, transformers.js config] compared on equal work.
const PAIRS = [
  { key: 'webgpu', label: 'WebGPU', webbert: { device: 'webgpu' }, tjs: { device: 'webgpu', dtype: 'fp32' } },
  { key: 'cpu', label: 'CPU fp32', webbert: { device: 'cpu' }, tjs: { device: 'cpu', dtype: 'fp32' } },
  { key: 'q8', label: 'CPU q8', webbert: { device: 'cpu', dtype: 'q8' }, tjs: { device: 'cpu', dtype: 'q8' } },
  { key: 'fp16', label: 'CPU fp16', webbert: { device: 'cpu', dtype: 'fp16' }, tjs: { device: 'cpu', dtype: 'fp16' } },
  { key: 'webgpu-q8', label: 'WebGPU q8', webbert: { device: 'webgpu', dtype: 'q8' }, tjs: { device: 'webgpu', dtype: 'q8' } },
  { key: 'webgpu-fp16', label: 'WebGPU fp16', webbert: { device: 'webgpu', dtype: 'fp16' }, tjs: { device: 'webgpu', dtype: 'fp16' } },
];

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

function agreement(task, a, b) {
  if (task === 'embed') {
    let max = 0;
    a.forEach((row, i) => row.forEach((x, j) => { max = Math.max(max, Math.abs(x - b[i][j])); }));
    return { maxAbsDiff: max };
  }
  return { sameTop5: a.map((p) => p.token).join() === b.map((p) => p.token).join(), maxAbsDiff: Math.max(...a.map((p, i) => Math.abs(p.score - b[i].score))) };
}

// FLOPs of one BERT forward (multiply-adds ×2): projections, attention, feed-forward; MLM head on one token.
function flops(c, tokens, batch, task) {
  const [h, i, l, v] = [384, 1536, 6, 30522];
  const seq = tokens / batch;
  const perLayer = 2 * tokens * (4 * h * h + 2 * h * i) + 2 * 2 * batch * seq * seq * h;
  return l * perLayer + (task === 'fill-mask' ? 2 * (h * h + h * v) : 0);
}

const server = await serve({
  '/': path.join(ROOT, 'www'),
  '/bench/': path.join(ROOT, 'scripts/bench'),
  '/tjs/': path.join(ROOT, 'node_modules/@huggingface/transformers/dist'),
  '/ort/': path.join(ROOT, 'node_modules/onnxruntime-web/dist'),
});
const browser = await launch({ webgpu: true });
const results = { date: new Date().toISOString(), machine: `${os.cpus().length} × ${os.cpus()[0].model}`, runs: RUNS, cases: [], cold: [], demo: [] };

try {
  const page = await browser.newPage();
  await page.goto(`${server.url}/bench/bench.html`);
  await page.waitForFunction(() => document.title === 'ready');
  const measured = new Map();
  // A runtime that refuses a configuration (transformers.js' fp16 where the adapter has no shader-f16) gives
  // `{refused: message}` for the row instead of stopping the run.
  const measure = async (runtime, config, c) => {
    const full = { runtime, task: c.task, ...config };
    const key = JSON.stringify({ ...full, case: c.name });
    if (!measured.has(key)) {
      try {
        await page.evaluate((cfg) => bench.load(cfg), full);
        measured.set(key, await page.evaluate(([cfg, input, runs]) => bench.run(cfg, input, runs), [full, c.input, RUNS]));
      } catch (e) {
        measured.set(key, { refused: e.message.split('\n')[0].replace(/^page.evaluate: /, '') });
      }
    }
    return measured.get(key);
  };
  const timing = (m) => m.refused ? m : { median: median(m.times), min: Math.min(...m.times), max: Math.max(...m.times), runs: m.times.length };
  // BENCH_PATHS=webgpu,cpu,q8,fp16,webgpu-q8,webgpu-fp16 picks the paths and BENCH_CASES='embed 1×16,…' the
  // cases (all by default); BENCH_COLD_ONLY=1 skips the warm cases, BENCH_WARM_ONLY=1 the cold starts.
  const paths = process.env.BENCH_PATHS?.split(',') ?? PAIRS.map((p) => p.key);
  const cases = process.env.BENCH_CASES?.split(',') ?? CASES.map((c) => c.name);
  for (const pair of process.env.BENCH_COLD_ONLY ? [] : PAIRS.filter((p) => paths.includes(p.key))) {
    for (const c of CASES.filter((c) => cases.includes(c.name))) {
      const w = await measure('webbert', pair.webbert, c);
      const t = await measure('tjs', pair.tjs, c);
      const row = {
        case: c.name, pair: pair.label, webbertBackend: w.backend, tjsBackend: t.backend,
        webbert: timing(w), tjs: timing(t),
        agreement: w.refused || t.refused ? null : agreement(c.task, w.output, t.output),
        gflop: flops(c, c.tokens, c.task === 'embed' ? c.input.length : 1, c.task) / 1e9,
      };
      row.ratio = row.webbert.median / row.tjs.median;
      results.cases.push(row);
      const ms = (m) => (m.refused ? 'refused' : `${m.median.toFixed(1)} ms`).padStart(11);
      console.log(`${pair.label.padEnd(10)} ${c.name.padEnd(14)} webbert ${ms(row.webbert)}  transformers.js ${ms(row.tjs)}  ratio ${row.ratio.toFixed(2)}  ${JSON.stringify(row.agreement ?? row.tjs.refused ?? row.webbert.refused)}`);
    }
  }
  // Cold start: a fresh context (empty caches), page load to first embedding, bytes over the wire.
  const colds = [['webbert', 'webgpu'], ['webbert', 'webgpu', 'q8'], ['tjs', 'webgpu', 'fp32'], ['webbert', 'cpu'], ['webbert', 'cpu', 'fp16'], ['webbert', 'cpu', 'q8'], ['tjs', 'cpu', 'fp32'], ['tjs', 'cpu', 'fp16'], ['tjs', 'cpu', 'q8']];
  for (const [runtime, device, dtype] of process.env.BENCH_WARM_ONLY ? [] : colds) {
    const context = await browser.newContext();
    const cold = await context.newPage();
    const before = server.stats.bytes;
    const start = Date.now();
    await cold.goto(`${server.url}/bench/cold.html?runtime=${runtime}&device=${device}&dtype=${dtype ?? 'fp32'}`);
    await cold.waitForFunction(() => document.title === 'done', null, { timeout: 600_000 });
    const row = { runtime, device, dtype: dtype ?? 'fp32', ms: Date.now() - start, bytes: server.stats.bytes - before };
    results.cold.push(row);
    console.log(`cold start ${runtime} ${device} ${row.dtype}: ${row.ms} ms, ${(row.bytes / 1e6).toFixed(1)} MB`);
    await context.close();
  }
  // The demo page's cold start: bytes until its first result (the fill-mask predictions: what was sent before
  // the page asks for its second model) and until every section is ready, served as is and as a compressing
  // host would (the .wasm gzipped).
  for (const gzip of process.env.BENCH_WARM_ONLY ? [] : [false, true]) {
    const demo = await serve({ '/': path.join(ROOT, 'www') }, 0, { gzip });
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      const start = Date.now();
      await page.goto(`${demo.url}/`);
      await page.waitForSelector('#mlm-results .bar', { timeout: 600_000 });
      const ms = Date.now() - start;
      await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 600_000 });
      const second = demo.stats.arrivals.find((a) => a.url.startsWith('/models/all-MiniLM-L6-v2/'));
      const first = { ms, bytes: second?.bytes ?? NaN };
      const row = { gzip, first, ready: { ms: Date.now() - start, bytes: demo.stats.bytes } };
      results.demo.push(row);
      console.log(`demo cold start${gzip ? ' (gzip)' : ''}: first result ${first.ms} ms, ${(first.bytes / 1e6).toFixed(1)} MB; ready ${row.ready.ms} ms, ${(row.ready.bytes / 1e6).toFixed(1)} MB`);
      await context.close();
    } finally {
      demo.close();
    }
  }
} finally {
  await browser.close();
  server.close();
}

fs.writeFileSync(path.join(ROOT, 'bench-results.json'), JSON.stringify(results, null, 1));
console.log('\n| case | path | webbert ms (median [min–max]) | transformers.js ms | ratio | agreement |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const r of results.cases) {
  const f = (m) => m.refused ? `refused: ${m.refused}` : `${m.median.toFixed(0)} [${m.min.toFixed(0)}–${m.max.toFixed(0)}]${m.runs < RUNS ? ` (${m.runs} runs)` : ''}`;
  const agree = !r.agreement ? '–' : 'sameTop5' in r.agreement ? `top-5 ${r.agreement.sameTop5 ? 'same' : 'differs'}, Δscore ${r.agreement.maxAbsDiff.toExponential(1)}` : `max |Δ| ${r.agreement.maxAbsDiff.toExponential(1)}`;
  console.log(`| ${r.case} | ${r.pair} | ${f(r.webbert)} | ${f(r.tjs)} | ${Number.isNaN(r.ratio) ? '–' : r.ratio.toFixed(2)} | ${agree} |`);
}
