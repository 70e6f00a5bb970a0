// The demo page as a person meets it, and the package as a consumer project installs it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FIXTURES, ROOT, golden, json, launch, maxAbsDiff, startServer } from './helpers.mjs';

let browser;
before(async () => { browser = await launch({ webgpu: true }); });
after(async () => { await browser?.close(); });

test('the demo page renders attention, similarities, fill-mask predictions, rankings, entities and answers', async () => {
  const server = await startServer();
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 1600 } });
    await page.goto(`${server.url}/`);
    await page.waitForSelector('body[data-ready]', { timeout: 240_000 });
    assert.equal(await page.getAttribute('body', 'data-ready'), 'true');
    // SwiftShader, a CPU emulation of a GPU, is not worth it: 'auto' takes the CPU path.
    assert.equal(await page.textContent('#backend'), 'CPU');

    // Attention: the seed sentence, token × token weights, rows summing to 1.
    const tokens = await page.$$eval('#att-heatmap .col', (cells) => cells.map((c) => c.textContent));
    assert.deepEqual(tokens.slice(0, 3), ['[CLS]', 'the', 'animal']);
    const weights = await page.$$eval('#att-heatmap .weight', (cells) => cells.map((c) => Number(c.dataset.weight)));
    assert.equal(weights.length, tokens.length ** 2);
    const firstRow = weights.slice(0, tokens.length).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(firstRow - 1) < 1e-3, `row sums to ${firstRow}`);
    await page.hover('#att-heatmap .weight >> nth=5');
    assert.match(await page.textContent('#att-readout'), /→ .*: 0\.\d{4}/);
    await page.selectOption('#att-layer', '3');
    assert.equal(await page.$$eval('#att-heatmap .weight', (c) => c.length), tokens.length ** 2);

    // Similarity heatmap: 5 sentences, 1.00 on the diagonal, paraphrases closer than unrelated pairs.
    const sims = await page.$$eval('#emb-heatmap .sim', (cells) => cells.map((c) => Number(c.textContent)));
    assert.equal(sims.length, 25);
    for (let i = 0; i < 5; i++) assert.equal(sims[i * 5 + i], 1);
    assert.ok(sims[0 * 5 + 1] > sims[0 * 5 + 4], 'guitar/instrument closer than guitar/stocks');
    assert.ok(sims[2 * 5 + 3] > sims[2 * 5 + 4], 'cat/kitten closer than cat/stocks');

    // Fill-mask: the default model (trained by webbert) is loaded and has predicted, as transformers does.
    assert.match(await page.textContent('#mlm-note'), /minilm-l6-mlm loaded/);
    const shipped = json('minilm-l6-mlm_golden.json');
    assert.equal(await page.inputValue('#mlm-text'), shipped.texts[0]);
    const defaults = await page.$$eval('#mlm-results .bar .label', (cells) => cells.map((c) => c.textContent));
    assert.equal(defaults.length, 5);
    assert.equal(defaults[0], shipped.fill_mask[0][0].token);
    assert.deepEqual([...defaults].sort(), shipped.fill_mask[0].map((p) => p.token).sort());
    // Picking another model's files replaces it.
    const tiny = path.join(FIXTURES, 'tiny-mlm');
    await page.setInputFiles('#mlm-files', ['config.json', 'vocab.txt', 'model.safetensors'].map((f) => path.join(tiny, f)));
    await page.waitForSelector('#mlm-note:has-text("Masked-LM loaded")', { timeout: 120_000 });
    await page.waitForSelector('#mlm-results .bar', { timeout: 120_000 });
    const fixture = json('tiny-mlm_golden.json');
    const labels = await page.$$eval('#mlm-results .bar .label', (cells) => cells.map((c) => c.textContent));
    assert.deepEqual(labels, fixture.fill_mask[0][0].map((p) => p.token));
    assert.match(await page.textContent('#mlm-timing'), /fill-mask: \d+ ms/);

    // Reranking with the sentence encoder: the passages about plants above the others.
    const ranked = await page.$$eval('#rr-results .label', (cells) => cells.map((c) => c.textContent));
    assert.equal(ranked.length, 5);
    assert.ok(ranked.slice(0, 3).every((p) => /Photosynthesis|chlorophyll|Roots/.test(p)), ranked.join(' | '));
    // A cross-encoder's files replace it: transformers' reranking scores, best first.
    const rerank = json('tiny-reranker_golden.json').rerank;
    await page.fill('#rr-query', rerank.query);
    await page.fill('#rr-passages', rerank.passages.join('\n'));
    await page.setInputFiles('#rr-files', ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => path.join(FIXTURES, 'tiny-reranker', f)));
    await page.waitForSelector('#rr-note:has-text("Cross-encoder loaded")', { timeout: 120_000 });
    await page.waitForFunction((best) => document.querySelector('#rr-results .label')?.textContent === best,
      rerank.passages[rerank.scores.indexOf(Math.max(...rerank.scores))], { timeout: 60_000 });
    const scores = await page.$$eval('#rr-results .score', (cells) => cells.map((c) => Number(c.textContent)));
    assert.deepEqual(scores, [...rerank.scores].sort((a, b) => b - a).map((s) => Number(s.toFixed(3))));

    // Entities marked in the text, and the answer marked in its context.
    const ner = json('tiny-bert-ner_golden.json').cases[1];
    await page.fill('#ner-text', ner.text);
    await page.setInputFiles('#ner-files', ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => path.join(FIXTURES, 'tiny-bert-ner', f)));
    await page.waitForSelector('#ner-results mark', { timeout: 120_000 });
    const marks = await page.$$eval('#ner-results mark', (ms) => ms.map((m) => [m.firstChild.textContent, m.className]));
    assert.deepEqual(marks, ner.simple.map((e) => [Array.from(ner.text).slice(e.start, e.end).join(''), e.entity_group]));
    const shown = await page.$eval('#ner-results', (el) => {
      const copy = el.cloneNode(true);
      copy.querySelectorAll('small').forEach((s) => s.remove());
      return copy.textContent;
    });
    assert.equal(shown, ner.text, 'the whole text, entities marked in place');
    // Two loads of one section at once: the first gives way to the second, and its worker stops.
    const workers = page.workers().length;
    await page.$eval('#ner-files', (input) => {
      input.dispatchEvent(new Event('change'));
      input.dispatchEvent(new Event('change'));
    });
    await page.waitForSelector('#ner-results mark', { timeout: 120_000 });
    assert.equal(await page.textContent('#ner-results mark'), marks[0][0] + marks[0][1]);
    for (let waited = 0; page.workers().length !== workers && waited < 10_000; waited += 100) await page.waitForTimeout(100);
    assert.equal(page.workers().length, workers, 'one worker for the section, the superseded load stopped');
    const qa = json('tiny-distilbert-qa_golden.json').cases[0];
    await page.fill('#qa-question', qa.question);
    await page.fill('#qa-context', qa.context);
    await page.setInputFiles('#qa-files', ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => path.join(FIXTURES, 'tiny-distilbert-qa', f)));
    await page.waitForSelector('#qa-results mark', { timeout: 120_000 });
    assert.equal(await page.textContent('#qa-results mark'), qa.top1.answer);

    const shot = path.join(os.tmpdir(), 'webbert-demo.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 10_000);
    console.log(`screenshot: ${shot}`);
  } finally {
    server.close();
  }
});

test('a consumer project installs the npm tarball and runs it', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'webbert-consumer-'));
  const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n').pop();
  fs.writeFileSync(path.join(work, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', path.join(work, tarball)], { cwd: work, stdio: 'inherit' });
  fs.writeFileSync(path.join(work, 'index.html'), `<!doctype html><meta charset="utf-8">
<script type="importmap">{"imports": {"webbert": "./node_modules/webbert/js/index.js"}}</script>
<script type="module">
  import { Embedder } from 'webbert';
  const e = await Embedder.load('/models/all-MiniLM-L6-v2/');
  const [row] = await e.embed(['A man is playing a guitar.']);
  window.result = { backend: e.backend, row: Array.from(row) };
  document.title = 'done';
</script>`);
  const server = await startServer({ '/consumer/': work });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}/consumer/index.html`);
    await page.waitForFunction(() => document.title === 'done', null, { timeout: 120_000 });
    const { backend, row } = await page.evaluate(() => window.result);
    assert.equal(backend, 'cpu');
    // The defaults download the int8 variant setup wrote: within its guard of PyTorch's f32.
    const want = golden('minilm_golden.safetensors')['embedding.mean'].data.slice(2 * 384, 3 * 384);
    const cosine = row.reduce((sum, v, i) => sum + v * want[i], 0);
    assert.ok(cosine >= 0.999, `cosine ${cosine}`);
    // The tarball holds the relaxed-SIMD build, which this Chromium loads.
    assert.deepEqual(server.requests.filter((url) => url.endsWith('.wasm')), ['/consumer/node_modules/webbert/pkg/webbert_relaxed_bg.wasm']);
  } finally {
    server.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
