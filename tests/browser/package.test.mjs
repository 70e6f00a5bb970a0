// The npm package in headless Chromium: numbers against the PyTorch fixtures on WebGPU and on the CPU
// fallback, user-supplied files, caching, and errors that leave the instance usable.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FIXTURES, golden, harness, json, launch, maxAbsDiff, startServer } from './helpers.mjs';

const MINILM = '/models/all-MiniLM-L6-v2/';
const sentences = json('minilm_golden.json').sentences;
const minilm = golden('minilm_golden.safetensors');

async function checkEmbeddings(page, device, kernels, readback) {
  const { backend, rows } = await page.evaluate(async ([url, device, kernels, readback, texts]) => {
    const e = await webbert.Embedder.load(url, { device, kernels, readback, dtype: 'fp32' });
    const rows = (await e.embed(texts)).map((r) => Array.from(r));
    e.dispose();
    return { backend: e.backend, rows };
  }, [MINILM, device, kernels, readback, sentences]);
  const want = minilm['embedding.mean'];
  const got = new Float32Array(rows.flat());
  const diff = maxAbsDiff(got, want.data);
  console.log(`${backend} embeddings: max abs diff ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4, `embeddings differ by ${diff}`);
  return backend;
}

async function checkFillMask(page, device, name, kernels) {
  const fixture = json(`${name}_golden.json`);
  const { backend, results } = await page.evaluate(async ([url, device, kernels, texts]) => {
    const fm = await webbert.FillMask.load(url, { device, kernels });
    const results = [];
    for (const t of texts) results.push(await fm.predict(t, { topK: 5 }));
    fm.dispose();
    return { backend: fm.backend, results };
  }, [`/fixtures/${name}/`, device, kernels, fixture.texts]);
  assertFillMask(fixture, results, `${backend} fill-mask ${name}`);
  return backend;
}

/** `body(page, crashGpu)` on a page of a browser of its own, with WebGPU: crashing the GPU process takes WebGPU
 * away from every page in a browser, the suite's shared one included. */
async function inOwnBrowser(server, body) {
  const own = await launch({ webgpu: true });
  try {
    const crashGpu = async () => (await own.newBrowserCDPSession()).send('Browser.crashGpuProcess');
    return await body(await harness(own, server), crashGpu);
  } finally {
    await own.close();
  }
}

/** Makes the page's workers see SwiftShader as a real GPU (so `device: 'auto'` times it against the CPU), by
 * a prelude that runs before the worker's module. With `holdFirstReadback`, the worker's first readback waits
 * until the page posts on `readbackChannel`; `readbackHeld` resolves when it starts waiting. */
async function poseAsGpu(page, { holdFirstReadback = false } = {}) {
  await page.evaluate((hold) => {
    const module = (code) => URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
    const prelude = module(`
      Object.defineProperty(GPUAdapterInfo.prototype, 'isFallbackAdapter', { get: () => false });
      if (${hold}) {
        const channel = new BroadcastChannel('readback');
        const mapAsync = GPUBuffer.prototype.mapAsync;
        let held = false;
        GPUBuffer.prototype.mapAsync = function (...args) {
          if (held) return mapAsync.apply(this, args);
          held = true;
          const released = new Promise((resolve) => { channel.onmessage = resolve; });
          channel.postMessage('held');
          return released.then(() => mapAsync.apply(this, args));
        };
      }`);
    const Base = window.Worker;
    window.Worker = class extends Base {
      constructor(url, options) {
        super(module(`import '${prelude}'; import '${new URL(url, location.href)}';`), options);
      }
    };
    window.readbackChannel = new BroadcastChannel('readback');
    window.readbackHeld = new Promise((resolve) => { readbackChannel.onmessage = resolve; });
  }, holdFirstReadback);
}

/** Each text's predictions (`results`, topK 5) against the fixture's: tokens identical, scores within 1e-4. */
function assertFillMask(fixture, results, what) {
  let diff = 0;
  results.forEach((masks, i) => {
    assert.equal(masks.length, fixture.fill_mask[i].length);
    masks.forEach((predictions, m) => predictions.forEach((p, k) => {
      const want = fixture.fill_mask[i][m][k];
      assert.equal(p.tokenId, want.token_id);
      assert.equal(p.token, want.token);
      assert.equal(p.sequence, want.sequence);
      diff = Math.max(diff, Math.abs(p.score - want.score));
    }));
  });
  console.log(`${what}: max abs score diff ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4);
}

/** A classifier (through the `pipeline` factory) against transformers' text-classification pipeline: texts
 * and pairs in one call, each input's best label; the reranker's order and scores when the fixture has them. */
async function checkClassifier(page, device, name) {
  const fixture = json(`${name}_golden.json`);
  const cases = [...fixture.single, ...fixture.pairs];
  const inputs = cases.map((c) => (c.text_pair === undefined ? c.text : { text: c.text, textPair: c.text_pair }));
  const { backend, labels, ranked } = await page.evaluate(async ([url, device, inputs, rerank]) => {
    const classifier = await webbert.pipeline('text-classification', url, { device });
    const labels = await classifier.classify(inputs);
    const ranked = rerank && await classifier.rerank(rerank.query, rerank.passages, { topK: 3 });
    classifier.dispose();
    return { backend: classifier.backend, labels, ranked };
  }, [`/fixtures/${name}/`, device, inputs, fixture.rerank]);
  let diff = 0;
  labels.forEach((top, i) => {
    assert.equal(top.length, 1);
    assert.equal(top[0].label, cases[i].pipeline[0].label);
    diff = Math.max(diff, Math.abs(top[0].score - cases[i].pipeline[0].score));
  });
  if (fixture.rerank) {
    const { scores, passages } = fixture.rerank;
    const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]).slice(0, 3);
    assert.deepEqual(ranked.map((r) => r.index), order);
    ranked.forEach((r) => {
      assert.equal(r.text, passages[r.index]);
      diff = Math.max(diff, Math.abs(r.score - scores[r.index]));
    });
  }
  console.log(`${backend} ${name}: max abs score diff ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4);
  return backend;
}

/** Named entities (aggregation none and simple) and answers (top 3, and a long context in chunks) against
 * transformers' pipelines. */
async function checkHeads(page, device, ner, qa) {
  const nerFixture = json(`${ner}_golden.json`);
  const qaFixture = json(`${qa}_golden.json`);
  const { backend, entities, answers, long } = await page.evaluate(async ([ner, qa, device, texts, cases, long]) => {
    const tagger = await webbert.pipeline('token-classification', ner, { device });
    const entities = [];
    for (const text of texts) {
      entities.push([await tagger.entities(text), await tagger.entities(text, { aggregation: 'simple' })]);
    }
    tagger.dispose();
    const reader = await webbert.pipeline('question-answering', qa, { device });
    const answers = [];
    for (const c of cases) answers.push(await reader.answer(c.question, c.context, { topK: 3 }));
    const chunked = await reader.answer(long.question, long.context,
      { topK: 3, maxSeqLen: long.max_seq_len, docStride: long.doc_stride, maxAnswerLen: long.max_answer_len });
    reader.dispose();
    return { backend: reader.backend, entities, answers, long: chunked };
  }, [`/fixtures/${ner}/`, `/fixtures/${qa}/`, device, nerFixture.cases.map((c) => c.text), qaFixture.cases,
    qaFixture.long]);
  let diff = 0;
  entities.forEach(([none, simple], i) => {
    const want = nerFixture.cases[i];
    assert.deepEqual(none.map((e) => [e.entity, e.index, e.word, e.start, e.end]),
      want.none.map((e) => [e.entity, e.index, e.word, e.start, e.end]));
    assert.deepEqual(simple.map((e) => [e.entityGroup, e.word, e.start, e.end]),
      want.simple.map((e) => [e.entity_group, e.word, e.start, e.end]));
    [...none, ...simple].forEach((e, k) => {
      diff = Math.max(diff, Math.abs(e.score - [...want.none, ...want.simple][k].score));
    });
  });
  const compare = (got, want) => {
    assert.deepEqual(got.map((a) => [a.answer, a.start, a.end]), want.map((a) => [a.answer, a.start, a.end]));
    got.forEach((a, k) => { diff = Math.max(diff, Math.abs(a.score - want[k].score)); });
  };
  answers.forEach((got, i) => compare(got, qaFixture.cases[i].top3));
  compare(long, qaFixture.long.top3);
  console.log(`${backend} ${ner}, ${qa}: max abs score diff ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4);
  return backend;
}

/** Sentence embeddings of a masked LM's encoder (its sentence-transformers files: mean, normalised) in one padded
 * call, against the fixture's. */
async function checkSentenceEmbeddings(page, device, name) {
  const fixture = json(`${name}_golden.json`);
  const want = golden(`${name}_golden.safetensors`)['embedding.mean'];
  const { backend, rows } = await page.evaluate(async ([url, device, texts]) => {
    const e = await webbert.pipeline('feature-extraction', url, { device });
    const rows = (await e.embed(texts)).map((r) => Array.from(r));
    e.dispose();
    return { backend: e.backend, rows };
  }, [`/fixtures/${name}/`, device, fixture.sentences]);
  const width = want.shape[1];
  let diff = 0;
  rows.forEach((row, i) => {
    const expected = want.data.subarray(i * width, (i + 1) * width);
    const dot = row.reduce((sum, x, k) => sum + x * expected[k], 0);
    const norms = Math.hypot(...row) * Math.hypot(...expected);
    assert.ok(dot / norms >= 0.99999, `${name} sentence ${i}: cosine ${dot / norms}`);
    diff = Math.max(diff, maxAbsDiff(new Float32Array(row), expected));
  });
  console.log(`${backend} embeddings ${name}: max abs diff ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4);
  return backend;
}

// Every architecture × head on both browser paths (tests/fixtures, from scripts/reference.py).
const FILL_MASK = ['tiny-mlm', 'tiny-roberta', 'tiny-xlm-roberta', 'tiny-distilbert', 'tiny-albert',
  'tiny-electra-generator', 'tiny-mpnet', 'tiny-modernbert', 'tiny-deberta-v2'];
const CLASSIFIERS = ['tiny-bert-cls', 'tiny-reranker', 'tiny-roberta-cls', 'tiny-xlm-roberta-cls',
  'tiny-distilbert-cls', 'tiny-albert-cls', 'tiny-electra-cls', 'tiny-mpnet-cls', 'tiny-modernbert-cls',
  'tiny-deberta-v2-cls'];
const HEADS = ['bert', 'roberta', 'xlm-roberta', 'distilbert', 'albert', 'electra', 'mpnet', 'modernbert', 'deberta-v2'];
const SENTENCE_EMBEDDERS = ['tiny-mpnet', 'tiny-modernbert', 'tiny-deberta-v2'];

/** The whole matrix on `device`, each check answering from `backend`. */
async function checkMatrix(page, device, backend) {
  for (const name of FILL_MASK) assert.equal(await checkFillMask(page, device, name), backend);
  for (const name of CLASSIFIERS) assert.equal(await checkClassifier(page, device, name), backend);
  for (const family of HEADS) {
    assert.equal(await checkHeads(page, device, `tiny-${family}-ner`, `tiny-${family}-qa`), backend);
  }
  for (const name of SENTENCE_EMBEDDERS) assert.equal(await checkSentenceEmbeddings(page, device, name), backend);
}

describe('with WebGPU', () => {
  let server; let browser; let page;
  before(async () => {
    server = await startServer();
    browser = await launch({ webgpu: true });
    page = await harness(browser, server);
  });
  after(async () => { await browser?.close(); server?.close(); });

  test('embeddings match PyTorch on WebGPU', async () => {
    assert.equal(await checkEmbeddings(page, 'webgpu'), 'webgpu');
  });

  test("'auto' runs on the CPU when the adapter is a CPU emulation (SwiftShader)", async () => {
    const { backend, crossover, timing } = await page.evaluate(async (url) => {
      const fm = await webbert.FillMask.load(url);
      const timing = await fm.timing(16);
      fm.dispose();
      return { backend: fm.backend, crossover: fm.crossover ?? null, timing };
    }, '/fixtures/tiny-mlm/');
    assert.equal(backend, 'cpu');
    assert.equal(crossover, null);
    assert.ok(timing.submitMs >= 0 && timing.waitMs >= 0, JSON.stringify(timing));
  });

  // SwiftShader gets the serial kernels by itself; the fill-mask models also run the tiled ones that real
  // GPUs get (MPNet's bias, DeBERTa's c2p and p2c, ModernBERT's window), WGSL validated by Chrome (which
  // refuses what native wgpu lets through, such as one buffer bound twice).
  test('every architecture × head matches PyTorch on WebGPU: fill-mask, classification of texts and pairs, reranking, NER, QA, sentence embeddings', async () => {
    await checkMatrix(page, 'webgpu', 'webgpu');
    for (const name of FILL_MASK) assert.equal(await checkFillMask(page, 'webgpu', name, 'tiled'), 'webgpu');
    const messages = await page.evaluate(async () => {
      const classifier = await webbert.Classifier.load('/fixtures/tiny-bert-cls/', { device: 'webgpu' });
      const reject = (promise) => promise.then(() => 'no error', (e) => e.message);
      const out = {
        predict: await reject(classifier.client.call('predict', ['a [MASK]', {}])),
        number: await reject(classifier.classify(42)),
        pair: await reject(classifier.classify({ text: 'a', textPair: 7 })),
        passages: await reject(classifier.rerank('q', 'not an array')),
        task: await reject(webbert.pipeline('summarization', '/fixtures/tiny-bert-cls/')),
        fillMask: await reject(webbert.FillMask.load('/fixtures/tiny-bert-cls/', { device: 'webgpu' })),
      };
      out.after = (await classifier.classify('still usable'))[0].label;
      classifier.dispose();
      return out;
    });
    assert.match(messages.predict, /loaded for text classification \(Classifier\); load it with FillMask/);
    assert.equal(messages.number, 'input must be a string or {text, textPair}, not 42');
    assert.equal(messages.pair, 'input.textPair must be a string, not 7');
    assert.equal(messages.passages, 'passages must be an array of strings, not "not an array"');
    assert.match(messages.task, /task must be one of fill-mask, feature-extraction, text-classification/);
    assert.match(messages.fillMask, /lm_head|cls\.predictions/);
    assert.equal(typeof messages.after, 'string');
  });

  test('named entities and question answering reject bad input and stay usable', async () => {
    const messages = await page.evaluate(async () => {
      const reject = (promise) => promise.then(() => 'no error', (e) => e.message);
      const tagger = await webbert.TokenClassifier.load('/fixtures/tiny-bert-ner/', { device: 'webgpu' });
      const reader = await webbert.QuestionAnswerer.load('/fixtures/tiny-distilbert-qa/', { device: 'webgpu' });
      const out = {
        aggregation: await reject(tagger.entities('Paris', { aggregation: 'first' })),
        empty: await reject(reader.answer('Who?', ' ')),
        stride: await reject(reader.answer('Who?', 'Me.', { maxSeqLen: 32, docStride: 32 })),
        wrong: await reject(tagger.client.call('answer', ['a', 'b', {}])),
      };
      out.after = (await reader.answer('Who?', 'John went home.'))[0].answer;
      tagger.dispose();
      reader.dispose();
      return out;
    });
    assert.match(messages.aggregation, /aggregation must be "none" or "simple", not "first"$/);
    assert.match(messages.empty, /the question and the context must not be empty$/);
    assert.match(messages.stride, /docStride below it, not 32 and 32/);
    assert.match(messages.wrong, /loaded for token classification \(TokenClassifier\); load it with QuestionAnswerer/);
    assert.equal(typeof messages.after, 'string');
  });

  test('q8 and fp16 weights stay within cosine 0.999 / 0.9999 of PyTorch: int8 products on the CPU path, unpacked in both WebGPU kernel shapes', async () => {
    const dim = minilm['embedding.mean'].shape[1];
    for (const [dtype, min] of [['q8', 0.999], ['fp16', 0.9999]]) {
      for (const [device, kernels] of [['cpu'], ['webgpu', 'serial'], ['webgpu', 'tiled']]) {
        const rows = await page.evaluate(async ([url, device, kernels, dtype, texts]) => {
          const e = await webbert.Embedder.load(url, { device, kernels, dtype });
          const rows = (await e.embed(texts)).map((r) => Array.from(r));
          e.dispose();
          return rows;
        }, [MINILM, device, kernels, dtype, sentences]);
        rows.forEach((row, i) => {
          const want = minilm['embedding.mean'].data.subarray(i * dim, (i + 1) * dim);
          let [dot, a, b] = [0, 0, 0];
          row.forEach((x, j) => { dot += x * want[j]; a += x * x; b += want[j] * want[j]; });
          const cos = dot / Math.sqrt(a * b);
          console.log(`${dtype} ${device} ${kernels ?? ''} embedding ${i}: cosine ${cos.toFixed(8)} to PyTorch's f32`);
          assert.ok(cos >= min, `${dtype} ${device} ${kernels ?? ''} sentence ${i}: cosine ${cos}`);
        });
      }
    }
  });

  // The shipped fill-mask model's q8 variant: its word table stays int8 everywhere, looked up as stored and read
  // transposed by the tied decoder (the CPU path's int8 products, both WebGPU kernel shapes).
  test('q8 fill-mask reads the int8 word table as stored: PyTorch\'s top-1 on every device, their scores agreeing', async () => {
    const shipped = json('minilm-l6-mlm_golden.json');
    const runs = {};
    for (const [device, kernels] of [['cpu'], ['webgpu', 'serial'], ['webgpu', 'tiled']]) {
      runs[`${device} ${kernels ?? ''}`] = await page.evaluate(async ([device, kernels, texts]) => {
        const fm = await webbert.FillMask.load('/models/minilm-l6-mlm/', { device, kernels, dtype: 'q8' });
        const results = [];
        for (const t of texts) results.push((await fm.predict(t, { topK: 5 }))[0]);
        fm.dispose();
        return results;
      }, [device, kernels, shipped.texts]);
    }
    const [first, ...others] = Object.values(runs);
    let diff = 0;
    shipped.fill_mask.forEach((want, i) => {
      for (const [run, results] of Object.entries(runs)) {
        assert.equal(results[i][0].tokenId, want[0].token_id, `${run}: ${shipped.texts[i]}`);
      }
      for (const results of others) {
        assert.deepEqual(results[i].map((p) => p.tokenId), first[i].map((p) => p.tokenId));
        results[i].forEach((p, k) => { diff = Math.max(diff, Math.abs(p.score - first[i][k].score)); });
      }
    });
    console.log(`q8 fill-mask: top-5 scores on WebGPU within ${diff.toExponential(2)} of the CPU path's`);
    assert.ok(diff <= 1e-3);
  });

  // SwiftShader offers subgroups, so Chrome also compiles and runs the reductions GPUs get only when asked.
  // tiny-mlm-f16's weights are f16, its word table too: looked up as stored, read transposed by the decoder.
  test('the tiled kernels (what GPUs run), with and without subgroups, match PyTorch too', async () => {
    assert.equal(await checkEmbeddings(page, 'webgpu', 'tiled'), 'webgpu');
    assert.equal(await checkEmbeddings(page, 'webgpu', 'tiled-subgroups'), 'webgpu');
    assert.equal(await checkFillMask(page, 'webgpu', 'tiny-mlm', 'tiled'), 'webgpu');
    for (const kernels of ['serial', 'tiled']) {
      assert.equal(await checkFillMask(page, 'webgpu', 'tiny-mlm-f16', kernels), 'webgpu');
    }
  });

  // On a GPU (the tiled kernels) a shape seen twice is recorded and replayed after (src/pipelines/replay.rs);
  // calls in flight together replay one recording only once the copy of its last result is queued. A call
  // of several passes launches each before reading the one before: 96 passages of one length are three
  // passes of one shape, the third replayed while the second's result comes back.
  test('repeated shapes on WebGPU, in 50 concurrent calls and in one call of three passes, give the CPU path\'s results', async () => {
    const ranked = await page.evaluate(async () => {
      const passages = Array.from({ length: 96 }, (_, i) => `the fox number ${i % 10} jumped over ${['the dog', 'a cat', 'my hat'][i % 3]}`);
      const scores = {};
      for (const device of ['webgpu', 'cpu']) {
        const reranker = await webbert.Classifier.load('/fixtures/tiny-bert-cls/', device === 'webgpu' ? { device, kernels: 'tiled' } : { device });
        const ranked = await reranker.rerank('where did the fox jump', passages, { topK: passages.length });
        reranker.dispose();
        scores[device] = passages.map((_, i) => ranked.find((r) => r.index === i).score);
      }
      return scores;
    });
    assert.equal(ranked.webgpu.length, 96);
    assert.ok(maxAbsDiff(ranked.webgpu, ranked.cpu) <= 1e-4, `max abs diff ${maxAbsDiff(ranked.webgpu, ranked.cpu)}`);
    assert.ok(new Set(ranked.cpu.map((x) => x.toFixed(6))).size >= 3, 'the passages score alike');
    const { gpu, cpu } = await page.evaluate(async () => {
      const texts = Array.from({ length: 50 }, (_, i) => `the ${'very '.repeat(i % 5)}[MASK] of number ${i % 10}`);
      const run = async (device, together) => {
        const fm = await webbert.FillMask.load('/fixtures/tiny-mlm/', device === 'webgpu' ? { device, kernels: 'tiled' } : { device });
        const out = [];
        if (together) out.push(...await Promise.all(texts.map((t) => fm.predict(t, { topK: 3 }))));
        else for (const t of texts) out.push(await fm.predict(t, { topK: 3 }));
        fm.dispose();
        return out;
      };
      return { gpu: await run('webgpu', true), cpu: await run('cpu', false) };
    });
    assert.equal(gpu.length, 50);
    for (const [i, masks] of gpu.entries()) {
      assert.deepEqual(masks[0].map((p) => p.token), cpu[i][0].map((p) => p.token), `text ${i}`);
      assert.ok(maxAbsDiff(masks[0].map((p) => p.score), cpu[i][0].map((p) => p.score)) <= 1e-4, `text ${i}`);
    }
  });

  test('results read back after the queue runs dry, or both at once, are the same', async () => {
    for (const readback of ['settle', 'join']) assert.equal(await checkEmbeddings(page, 'webgpu', undefined, readback), 'webgpu');
  });

  test('after dispose every call rejects, and so does a bad kernels or readback option', async () => {
    const messages = await page.evaluate(async (url) => {
      const errorOf = async (p) => { try { await p; return 'no error'; } catch (e) { return e instanceof Error ? e.message : `not an Error: ${e}`; } };
      const fm = await webbert.FillMask.load(url, { device: 'cpu' });
      const pending = fm.predict('the [MASK] of');
      fm.dispose();
      return {
        pending: await errorOf(pending),
        later: await errorOf(fm.predict('the [MASK] of')),
        kernels: await errorOf(webbert.FillMask.load(url, { kernels: 'fast' })),
        readback: await errorOf(webbert.FillMask.load(url, { readback: 'soon' })),
      };
    }, '/fixtures/tiny-mlm/');
    assert.match(messages.pending, /disposed/);
    assert.match(messages.later, /disposed/);
    assert.match(messages.kernels, /kernels must be "serial", "tiled"/);
    assert.match(messages.readback, /readback must be "map", "settle" or "join", not "soon"/);
  });

  test('when the GPU process crashes, the model moves to the CPU and the call runs there', async () => {
    await inOwnBrowser(server, async (page, crashGpu) => {
      const before = await page.evaluate(async () => {
        window.fm = await webbert.FillMask.load('/fixtures/tiny-mlm/', { device: 'webgpu' });
        return { backend: fm.backend, masks: await fm.predict('the [MASK] of') };
      });
      await crashGpu();
      const after = await page.evaluate(async () => {
        const masks = await fm.predict('the [MASK] of');
        return { backend: fm.backend, masks, again: await fm.predict('the [MASK] of') };
      });
      assert.equal(before.backend, 'webgpu');
      assert.equal(after.backend, 'cpu');
      before.masks[0].forEach((p, k) => {
        assert.equal(after.masks[0][k].tokenId, p.tokenId);
        assert.ok(Math.abs(after.masks[0][k].score - p.score) <= 1e-5);
      });
      assert.deepEqual(after.again, after.masks);
    });
  });

  test("'auto' loads on the CPU if the GPU fails while it is timed, and remembers no crossover", async () => {
    await inOwnBrowser(server, async (page, crashGpu) => {
      await poseAsGpu(page, { holdFirstReadback: true });
      const fixture = json('tiny-mlm_golden.json');
      const loaded = page.evaluate(async (texts) => {
        const fm = await webbert.FillMask.load('/fixtures/tiny-mlm/');
        const results = [];
        for (const t of texts) results.push(await fm.predict(t, { topK: 5 }));
        const cache = await caches.open('webbert-measurements-v1');
        const remembered = (await cache.keys()).map((r) => decodeURIComponent(r.url));
        return { backend: fm.backend, crossover: fm.crossover ?? null, results, remembered };
      }, fixture.texts);
      await page.evaluate(() => readbackHeld);
      await crashGpu();
      await page.evaluate(() => readbackChannel.postMessage('crashed'));
      const { backend, crossover, results, remembered } = await loaded;
      assert.equal(backend, 'cpu');
      assert.equal(crossover, null);
      assertFillMask(fixture, results, "'auto' after the GPU failed");
      assert.deepEqual(remembered.filter((url) => url.includes('crossover/')), []);
    });
  });

  test("'auto' on a GPU times it once, remembers the crossover, sends shorter calls to a CPU copy, and drops it with the GPU", async () => {
    await inOwnBrowser(server, async (page, crashGpu) => {
      await poseAsGpu(page);
      const fixture = json('tiny-mlm_golden.json');
      const out = await page.evaluate(async (texts) => {
        const url = '/fixtures/tiny-mlm/';
        const cache = await caches.open('webbert-measurements-v1');
        const measured = await webbert.FillMask.load(url);
        const [key] = (await cache.keys()).filter((r) => decodeURIComponent(r.url).includes('crossover/'));
        const first = { backend: measured.backend, crossover: measured.crossover ?? null,
          remembered: key && Number(await (await cache.match(key)).text()) };
        measured.dispose();
        // A crossover between the texts' lengths, as a GPU that the CPU beats on short inputs gives.
        await cache.put(key, new Response('5'));
        const auto = window.auto = await webbert.FillMask.load(url);
        const cpu = await webbert.FillMask.load(url, { device: 'cpu' });
        const gpu = await webbert.FillMask.load(url, { device: 'webgpu' });
        const scores = async (fm) => {
          const all = [];
          for (const t of texts) all.push(await fm.predict(t, { topK: 1000 }));
          return all;
        };
        const lengths = [];
        for (const t of texts) lengths.push((await auto.tokenize(t)).ids.length);
        const second = { backend: auto.backend, crossover: auto.crossover ?? null, lengths,
          auto: await scores(auto), cpu: await scores(cpu), gpu: await scores(gpu),
          top5: [] };
        for (const t of texts) second.top5.push(await auto.predict(t, { topK: 5 }));
        return { first, second };
      }, fixture.texts);
      // The first load follows what it measured: the GPU from some length on (0: every length), or, where the
      // GPU never won (usize::MAX on wasm32), the CPU alone.
      const { first, second } = out;
      const never = first.remembered === 2 ** 32 - 1;
      console.log(`SwiftShader timed as a GPU: crossover ${never ? 'never' : first.remembered} (tokens)`);
      assert.ok(Number.isInteger(first.remembered), JSON.stringify(first));
      assert.equal(first.backend, never ? 'cpu' : 'webgpu');
      assert.equal(first.crossover, never || first.remembered === 0 ? null : first.remembered);
      // Read back, not measured again: the remembered crossover is the model's.
      assert.equal(second.backend, 'webgpu');
      assert.equal(second.crossover, 5);
      assertFillMask(fixture, second.top5, "'auto' with a CPU copy");
      second.lengths.forEach((tokens, i) => {
        const [cpu, gpu, auto] = [second.cpu[i], second.gpu[i], second.auto[i]];
        assert.notDeepEqual(cpu, gpu, `text ${i}: the devices' scores must differ for the test to tell them apart`);
        assert.deepEqual(auto, tokens < 5 ? cpu : gpu, `text ${i} (${tokens} tokens)`);
      });
      assert.ok(second.lengths.some((t) => t < 5) && second.lengths.some((t) => t >= 5), JSON.stringify(second.lengths));

      // A call for the GPU when it is lost: the model moves to its CPU copy, loading nothing again (the
      // model cache is emptied, so a second load would have to ask the server), and says so.
      await crashGpu();
      const asked = () => server.requests.filter((r) => r.startsWith('/fixtures/tiny-mlm/')).length;
      const before = asked();
      const lost = await page.evaluate(async (text) => {
        await caches.delete('webbert-models-v1');
        const masks = await auto.predict(text, { topK: 5 });
        return { backend: auto.backend, crossover: auto.crossover ?? null, masks };
      }, fixture.texts[0]);
      assert.equal(asked(), before, 'the model was fetched again rather than its CPU copy kept');
      assert.equal(lost.backend, 'cpu');
      assert.equal(lost.crossover, null);
      assertFillMask({ fill_mask: [fixture.fill_mask[0]] }, [lost.masks], "'auto' after the GPU was lost");
    });
  });

  test("topK past the GPU kernel's 64 on WebGPU: PyTorch's top 5, then the CPU path's probabilities, best first", async () => {
    const fixture = json('tiny-mlm_golden.json');
    const { backend, gpu, cpu } = await page.evaluate(async (texts) => {
      const url = '/fixtures/tiny-mlm/';
      const [gpu, cpu] = [await webbert.FillMask.load(url, { device: 'webgpu' }), await webbert.FillMask.load(url, { device: 'cpu' })];
      const out = { backend: gpu.backend, gpu: [], cpu: [] };
      for (const t of texts) {
        out.gpu.push(await gpu.predict(t, { topK: 100 }));
        out.cpu.push(await cpu.predict(t, { topK: 1000 }));
      }
      gpu.dispose();
      cpu.dispose();
      return out;
    }, fixture.texts);
    assert.equal(backend, 'webgpu');
    assertFillMask(fixture, gpu.map((masks) => masks.map((p) => p.slice(0, 5))), 'webgpu topK 100');
    gpu.forEach((masks, i) => masks.forEach((predictions, m) => {
      // The CPU path's whole vocabulary: every token's probability.
      const probability = new Map(cpu[i][m].map((p) => [p.tokenId, p.score]));
      assert.equal(predictions.length, 100);
      predictions.forEach((p, k) => {
        assert.ok(Math.abs(p.score - probability.get(p.tokenId)) <= 1e-6, `${p.tokenId}: ${p.score}`);
        if (k > 0) assert.ok(p.score <= predictions[k - 1].score);
      });
      const chosen = new Set(predictions.map((p) => p.tokenId));
      const last = predictions.at(-1).score;
      assert.ok(cpu[i][m].every((p) => chosen.has(p.tokenId) || p.score <= last + 1e-6));
    }));
  });

  test('attention probabilities match PyTorch', async () => {
    const out = await page.evaluate(async ([url, text]) => {
      const e = await webbert.Embedder.load(url, { dtype: 'fp32' });
      const a = await e.attention(text);
      return { ...a, weights: Array.from(a.weights) };
    }, [MINILM, sentences[0]]);
    const want = minilm['attention.0.layer2'];
    const [heads, seq] = want.shape;
    assert.equal(out.numLayers, 6);
    assert.equal(out.tokens.length, seq);
    const layer2 = out.weights.slice(2 * heads * seq * seq, 3 * heads * seq * seq);
    assert.ok(maxAbsDiff(new Float32Array(layer2), want.data) <= 1e-4);
  });

  test('tokenize gives the ids of PyTorch\'s tokenizer, and rejects a non-string', async () => {
    const fixture = json('tiny-mlm_golden.json');
    const want = golden('tiny-mlm_golden.safetensors');
    const out = await page.evaluate(async ([url, texts]) => {
      const fm = await webbert.FillMask.load(url, { device: 'cpu' });
      const tokenized = [];
      for (const t of texts) {
        const { tokens, ids, offsets, truncated } = await fm.tokenize(t);
        tokenized.push({ tokens, ids: Array.from(ids), offsets, truncated });
      }
      let error;
      try { await fm.tokenize(42); error = 'no error'; } catch (e) { error = e.message; }
      fm.dispose();
      return { tokenized, error };
    }, ['/fixtures/tiny-mlm/', fixture.texts]);
    out.tokenized.forEach(({ tokens, ids, offsets, truncated }, i) => {
      assert.deepEqual(ids, Array.from(want[`ids.${i}`].data, Number));
      assert.equal(tokens.length, ids.length);
      assert.deepEqual(offsets[0], [0, 0]);
      assert.equal(truncated, false);
    });
    // Each piece is the lower-cased span of the text its offsets name ('##' marks a continuation).
    const { tokens, offsets } = out.tokenized[0];
    tokens.slice(1, -1).forEach((token, i) => {
      const [start, end] = offsets[i + 1];
      assert.equal(token.replace(/^##/, '').toLowerCase(), fixture.texts[0].slice(start, end).toLowerCase());
    });
    assert.match(out.error, /text must be a string/);
  });

  test('arguments of the wrong type or range reject with what was expected; defaults stand in for null', async () => {
    const out = await page.evaluate(async (url) => {
      const errorOf = async (p) => { try { await p; return 'no error'; } catch (e) { return e instanceof Error ? e.message : `not an Error: ${e}`; } };
      const fm = await webbert.FillMask.load(url, { device: 'cpu' });
      const emb = await webbert.Embedder.load(url, { device: 'cpu' });
      const out = {
        predictNumber: await errorOf(fm.predict(42)),
        topKNegative: await errorOf(fm.predict('the [MASK] of', { topK: -1 })),
        topKFraction: await errorOf(fm.predict('the [MASK] of', { topK: 2.5 })),
        options: await errorOf(fm.predict('the [MASK] of', 'top 3')),
        nullOptions: (await fm.predict('the [MASK] of', null))[0].length,
        topKHuge: (await fm.predict('the [MASK] of', { topK: 2 ** 32 + 3 }))[0].length,
        embedNumber: await errorOf(emb.embed(42)),
        embedSet: await errorOf(emb.embed(new Set(['a']))),
        embedMixed: await errorOf(emb.embed(['a', 3])),
        normalize: await errorOf(emb.embed(['a'], { normalize: 'yes' })),
        pooling: await errorOf(emb.embed(['a'], { pooling: 'max' })),
        timing: await errorOf(emb.timing(-1)),
        attention: await errorOf(emb.attention(['a'])),
      };
      const [plain] = await emb.embed('a', { pooling: null });
      const [raw] = await emb.embed(['a'], { normalize: false });
      out.norms = [plain, raw].map((v) => Math.hypot(...v));
      out.goodAfter = (await fm.predict('the [MASK] dog', { topK: 2 }))[0].length;
      fm.dispose();
      emb.dispose();
      return out;
    }, '/fixtures/tiny-mlm/');
    assert.match(out.predictNumber, /text must be a string, not 42/);
    assert.match(out.topKNegative, /options\.topK must be a whole number of at least 1, not -1/);
    assert.match(out.topKFraction, /not 2\.5/);
    assert.match(out.options, /options must be an object, not "top 3"/);
    assert.equal(out.nullOptions, 5);
    assert.equal(out.topKHuge, 1000); // the whole vocabulary, not 3
    assert.match(out.embedNumber, /texts must be a string or an array of strings, not 42/);
    assert.match(out.embedSet, /texts must be a string or an array of strings, not object/);
    assert.match(out.embedMixed, /texts\[1\] must be a string, not 3/);
    assert.match(out.normalize, /options\.normalize must be true or false, not "yes"/);
    assert.match(out.pooling, /pooling must be "mean" or "cls", not "max"/);
    assert.match(out.timing, /tokens must be a whole number of at least 1, not -1/);
    assert.match(out.attention, /text must be a string, not an array/);
    assert.ok(Math.abs(out.norms[0] - 1) < 1e-5, `normalised by default: ${out.norms[0]}`);
    assert.ok(Math.abs(out.norms[1] - 1) > 1e-3, `normalize: false leaves the norm: ${out.norms[1]}`);
    assert.equal(out.goodAfter, 2);
  });

  test('user-supplied sharded bf16 files load and match', async () => {
    const fixture = json('tiny-mlm-bf16-sharded_golden.json');
    const masks = await page.evaluate(async ([text]) => {
      const base = '/fixtures/tiny-mlm-bf16-sharded/';
      const index = await (await fetch(base + 'model.safetensors.index.json')).json();
      const names = ['config.json', 'tokenizer.json', 'model.safetensors.index.json', ...new Set(Object.values(index.weight_map))];
      const files = {};
      for (const n of names) files[n] = await (await fetch(base + n)).arrayBuffer();
      const fm = await webbert.FillMask.load(files);
      return fm.predict(text);
    }, [fixture.texts[0]]);
    assert.equal(masks[0][0].tokenId, fixture.fill_mask[0][0][0].token_id);
    assert.ok(Math.abs(masks[0][0].score - fixture.fill_mask[0][0][0].score) <= 1e-4);
  });

  test('a second load of the same URL uses no network', async () => {
    const fresh = await harness(browser, server);
    await fresh.evaluate(async (url) => { await webbert.Embedder.load(url, { device: 'cpu' }); }, MINILM);
    const before = server.requests.filter((r) => r.startsWith(MINILM)).length;
    const progress = await fresh.evaluate(async (url) => {
      const events = [];
      await webbert.Embedder.load(url, { device: 'cpu', onProgress: (p) => events.push(p) });
      return events;
    }, MINILM);
    assert.equal(server.requests.filter((r) => r.startsWith(MINILM)).length, before);
    assert.ok(progress.some((p) => p.file === 'model.q8.safetensors' && p.loaded === p.total)); // 'auto': the int8 variant
  });

  test('a model file refused once is not kept: the fixed server is fetched again', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webbert-flaky-'));
    const tiny = new URL('../fixtures/tiny-mlm/', import.meta.url);
    for (const name of ['vocab.txt', 'model.safetensors']) fs.copyFileSync(new URL(name, tiny), path.join(dir, name));
    fs.writeFileSync(path.join(dir, 'config.json'), '<!doctype html><title>Sign in</title>');
    const flaky = await startServer({ '/flaky/': dir });
    try {
      const page = await harness(browser, flaky);
      const first = await page.evaluate(async () => {
        try { await webbert.FillMask.load('/flaky/'); return 'no error'; } catch (e) { return e.message; }
      });
      assert.match(first, /not valid JSON/);
      fs.copyFileSync(new URL('config.json', tiny), path.join(dir, 'config.json'));
      const second = await page.evaluate(async () => (await (await webbert.FillMask.load('/flaky/')).predict('the [MASK] of'))[0].length);
      assert.equal(second, 5);
    } finally {
      flaky.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad input rejects with an Error and the instance stays usable', async () => {
    const messages = await page.evaluate(async () => {
      const fm = await webbert.FillMask.load('/fixtures/tiny-mlm/');
      const errorOf = async (p) => { try { await p; return 'no error'; } catch (e) { return e instanceof Error ? e.message : `not an Error: ${e}`; } };
      const out = {
        noMask: await errorOf(fm.predict('no mask here')),
        empty: await errorOf(fm.predict('')),
        good: (await fm.predict('the [MASK] of'))[0].length,
      };
      const files = {};
      for (const n of ['config.json', 'vocab.txt', 'model.safetensors']) files[n] = await (await fetch('/fixtures/tiny-mlm/' + n)).arrayBuffer();
      out.corrupt = await errorOf(webbert.FillMask.load({ ...files, 'model.safetensors': files['model.safetensors'].slice(0, 1000) }));
      const config = JSON.parse(new TextDecoder().decode(files['config.json']));
      out.mismatched = await errorOf(webbert.FillMask.load({ ...files, 'config.json': JSON.stringify({ ...config, intermediate_size: 128 }) }));
      out.unreachable = await errorOf(webbert.Embedder.load('http://127.0.0.1:9/nothing/'));
      out.missing = await errorOf(webbert.Embedder.load('/no/such/model/'));
      out.encoderOnly = await errorOf(webbert.FillMask.load('/models/all-MiniLM-L6-v2/', { device: 'cpu' }));
      out.goodAfter = (await fm.predict('the [MASK] dog'))[0][0].token;
      return out;
    });
    assert.match(messages.noMask, /no \[MASK\] token/);
    assert.match(messages.empty, /text is empty/);
    assert.equal(messages.good, 5);
    assert.match(messages.corrupt, /not a valid safetensors file/);
    assert.match(messages.mismatched, /has shape \[\d+, \d+\], expected \[128, 32\]/);
    assert.match(messages.unreachable, /could not fetch http:\/\/127\.0\.0\.1:9\/nothing\/config\.json/);
    assert.match(messages.missing, /config\.json is missing/);
    assert.match(messages.encoderOnly, /needs a masked-LM checkpoint/);
    assert.equal(typeof messages.goodAfter, 'string');
  });
});

describe('without WebGPU (CPU fallback)', () => {
  let server; let browser; let page;
  before(async () => {
    server = await startServer();
    browser = await launch({ webgpu: false });
    page = await harness(browser, server);
  });
  after(async () => { await browser?.close(); server?.close(); });

  test('falls back to the CPU with the same numbers: every architecture × head', async () => {
    assert.equal(await checkEmbeddings(page, 'auto'), 'cpu');
    await checkMatrix(page, 'auto', 'cpu');
    // This Chromium has relaxed SIMD, so the CPU path ran the build that uses it.
    const modules = server.requests.filter((url) => url.endsWith('.wasm'));
    assert.deepEqual(modules, ['/webbert/pkg/webbert_relaxed_bg.wasm']);
  });

  test('a browser without relaxed SIMD gets the SIMD128 build, with the same numbers', async () => {
    const plain = await browser.newPage();
    // As a browser without relaxed SIMD sees the package's probe module.
    await plain.addInitScript(() => { WebAssembly.validate = () => false; });
    const before = server.requests.length;
    await plain.goto(`${server.url}/test/harness.html`);
    await plain.waitForFunction(() => document.title === 'ready');
    assert.equal(await checkEmbeddings(plain, 'cpu'), 'cpu');
    assert.equal(await checkFillMask(plain, 'cpu', 'tiny-mlm'), 'cpu');
    const modules = server.requests.slice(before).filter((url) => url.endsWith('.wasm'));
    assert.deepEqual(modules, ['/webbert/pkg/webbert_bg.wasm']);
    await plain.close();
  });

  test('asking for WebGPU explicitly says it is unavailable', async () => {
    const message = await page.evaluate(async () => {
      try { await webbert.Embedder.load('/models/all-MiniLM-L6-v2/', { device: 'webgpu' }); return 'no error'; } catch (e) { return e.message; }
    });
    assert.match(message, /WebGPU is not available/);
  });
});

describe('long calls and slow servers', () => {
  const tiny = path.join(FIXTURES, 'tiny-mlm');
  const weights = fs.readFileSync(path.join(tiny, 'model.safetensors'));
  let release = () => {};
  // Model folders whose model.safetensors misbehaves; the other files are tiny-mlm's.
  const misbehaving = {
    // Headers, a first piece, then nothing.
    stall: (res) => { res.setHeader('content-length', weights.length); res.write(weights.subarray(0, 1000)); },
    // Promises more bytes than it sends, then ends the response.
    short: (res) => { res.setHeader('content-length', weights.length); res.end(weights.subarray(0, 1000)); },
    // The last piece only once the page asks for it at /release (after its first progress event).
    gated: (res) => {
      res.setHeader('content-length', weights.length);
      res.write(weights.subarray(0, 4096));
      release = () => res.end(weights.subarray(4096));
    },
  };
  const handler = (req, res) => {
    const [, folder, name] = req.url.split('/');
    if (folder === 'release') { release(); return res.end('ok'); }
    if (folder === 'silent') return; // never answers
    if (name === 'model.safetensors' && misbehaving[folder]) return misbehaving[folder](res);
    const file = path.join(tiny, name ?? '');
    if (!name || !fs.existsSync(file)) { res.statusCode = 404; return res.end('not found'); }
    res.end(fs.readFileSync(file));
  };
  let server; let browser; let page;
  before(async () => {
    server = await startServer({ '/slow/': handler });
    browser = await launch({ webgpu: false });
    page = await harness(browser, server);
  });
  after(async () => { await browser?.close(); server?.close(); });

  const errorOf = `async (p) => { try { await p; return 'no error'; } catch (e) { return e?.name === 'AbortError' ? 'AbortError' : e instanceof Error ? e.message : 'not an Error: ' + e; } }`;

  test('a stalled or cut download rejects naming the file; aborting a load rejects at once', async () => {
    const out = await page.evaluate(async (errorOf) => {
      errorOf = eval(errorOf);
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 300);
      return {
        body: await errorOf(webbert.FillMask.load('/slow/stall/', { stallTimeout: 500 })),
        headers: await errorOf(webbert.FillMask.load('/slow/silent/', { stallTimeout: 500 })),
        short: await errorOf(webbert.FillMask.load('/slow/short/')),
        aborted: await errorOf(webbert.FillMask.load('/slow/silent/', { signal: controller.signal })),
        before: await errorOf(webbert.FillMask.load('/slow/stall/', { signal: AbortSignal.abort() })),
        badTimeout: await errorOf(webbert.FillMask.load('/slow/stall/', { stallTimeout: 0 })),
      };
    }, errorOf);
    assert.match(out.body, /\/slow\/stall\/model\.safetensors: no data for 0\.5 s; the download stalled/);
    assert.match(out.headers, /\/slow\/silent\/config\.json: no data for 0\.5 s/);
    assert.match(out.short, /reading http:\S+\/slow\/short\/model\.safetensors/);
    assert.equal(out.aborted, 'AbortError');
    assert.equal(out.before, 'AbortError');
    assert.match(out.badTimeout, /options\.stallTimeout must be a whole number of at least 1, not 0/);
  });

  /** How many masks a fresh load of tiny-mlm on `page` fills in one sentence. */
  const masksFilled = (page) => page.evaluate(async () => {
    const fm = await webbert.FillMask.load('/fixtures/tiny-mlm/');
    const masks = await fm.predict('the [MASK] dog');
    fm.dispose();
    return masks.length;
  });

  test("a stalled download of the package's WebAssembly fails the load, and the next load fetches it again", async () => {
    const fresh = await harness(browser, server);
    await fresh.route('**/*.wasm', () => {}); // never answered
    const stalled = await fresh.evaluate(async (errorOf) => eval(errorOf)(
      webbert.FillMask.load('/fixtures/tiny-mlm/', { stallTimeout: 500 })), errorOf);
    assert.match(stalled, /\/webbert\/pkg\/webbert(_relaxed)?_bg\.wasm: no data for 0\.5 s; the download stalled/);
    await fresh.unroute('**/*.wasm');
    assert.equal(await masksFilled(fresh), 1);
    await fresh.close();
  });

  test('a .wasm served as another MIME type is fetched again by the worker, which compiles it all the same', async () => {
    const fresh = await harness(browser, server);
    const served = [];
    await fresh.route('**/*.wasm', async (route) => {
      served.push(new URL(route.request().url()).pathname);
      const response = await route.fetch();
      await route.fulfill({ response, headers: { ...response.headers(), 'content-type': 'application/octet-stream' } });
    });
    assert.equal(await masksFilled(fresh), 1);
    // The page's streaming compile refuses it; the worker takes the SIMD128 build the wasm-bindgen way.
    assert.deepEqual(served, ['/webbert/pkg/webbert_relaxed_bg.wasm', '/webbert/pkg/webbert_bg.wasm']);
    await fresh.close();
  });

  test('download progress is reported as the bytes arrive', async () => {
    // The server holds the last piece back until the page has seen a progress event: a load that
    // reported progress only once the body was complete would stall here.
    const events = await page.evaluate(async () => {
      const events = [];
      const fm = await webbert.FillMask.load('/slow/gated/', {
        stallTimeout: 5000,
        onProgress: (p) => {
          if (p.file === 'model.safetensors' && !events.length) fetch('/slow/release/');
          if (p.file === 'model.safetensors') events.push(p);
        },
      });
      fm.dispose();
      return events;
    });
    assert.ok(events[0].loaded < events[0].total, JSON.stringify(events[0]));
    assert.equal(events.at(-1).loaded, weights.length);
  });

  test('a long embed reports progress, aborts between passes, and the next call runs at once', async () => {
    const out = await page.evaluate(async ([url, errorOf]) => {
      errorOf = eval(errorOf);
      // f32: with q8 a text's vector moves by its rounding (~4e-5) when the batch around it changes.
      const e = await webbert.Embedder.load(url, { device: 'cpu', dtype: 'fp32' });
      const texts = Array.from({ length: 128 }, (_, i) => `sentence ${i}: ${'all work and no play '.repeat(2 + (i % 5))}`);
      const events = [];
      let start = performance.now();
      const all = await e.embed(texts, { onProgress: (p) => events.push(p) });
      const fullMs = performance.now() - start;
      const controller = new AbortController();
      start = performance.now();
      const aborted = errorOf(e.embed(texts, { signal: controller.signal, onProgress: () => controller.abort() }));
      const next = await e.embed(texts[100]);
      const nextMs = performance.now() - start;
      return {
        events,
        fullMs,
        nextMs,
        aborted: await aborted,
        same: Math.max(...next[0].map((v, i) => Math.abs(v - all[100][i]))),
        preAborted: await errorOf(e.embed('x', { signal: AbortSignal.abort() })),
        badSignal: await errorOf(e.embed('x', { signal: 'stop' })),
        badProgress: await errorOf(e.embed('x', { onProgress: 1 })),
        after: (await e.embed(['fine']))[0].length,
        // 210k characters cost what their first 512 tokens cost, and give what those give.
        huge: await (async () => {
          const [huge, cut] = await e.embed(['all work and no play '.repeat(10000), 'all work and no play '.repeat(200)]);
          return Math.max(...huge.map((v, i) => Math.abs(v - cut[i])));
        })(),
      };
    }, [MINILM, errorOf]);
    assert.deepEqual(out.events, [32, 64, 96, 128].map((done) => ({ done, total: 128 })));
    assert.equal(out.aborted, 'AbortError');
    assert.ok(out.same <= 1e-5, `the text's vector differs by ${out.same} alone`);
    // The aborted call stopped after its first group of four: the next call did not wait for the rest.
    console.log(`full call ${out.fullMs.toFixed(0)} ms; aborted after a group + next call ${out.nextMs.toFixed(0)} ms`);
    assert.ok(out.nextMs < 0.75 * out.fullMs, `next call came after ${out.nextMs} ms (full call ${out.fullMs} ms)`);
    assert.equal(out.preAborted, 'AbortError');
    assert.match(out.badSignal, /options\.signal must be an AbortSignal, not string/);
    assert.match(out.badProgress, /options\.onProgress must be a function, not number/);
    assert.equal(out.after, 384);
    assert.ok(out.huge <= 1e-6, `a huge text differs from its first 512 tokens by ${out.huge}`);
  });

  test("dtype picks which weights are downloaded: 'auto' the smallest variant there is", async () => {
    // tiny-mlm-f16's files, its weights as the f16 variant, and tiny-mlm's (same shapes) as model.safetensors.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webbert-dtype-'));
    const f16 = path.join(FIXTURES, 'tiny-mlm-f16');
    for (const name of ['config.json', 'vocab.txt']) fs.copyFileSync(path.join(f16, name), path.join(dir, name));
    fs.copyFileSync(path.join(f16, 'model.safetensors'), path.join(dir, 'model.fp16.safetensors'));
    fs.copyFileSync(path.join(tiny, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    const variants = await startServer({ '/variants/': dir });
    try {
      const page = await harness(browser, variants);
      let seen = 0;
      const fetched = () => {
        const since = variants.requests.slice(seen);
        seen = variants.requests.length;
        return since.filter((r) => r.includes('safetensors'));
      };
      const fixture = json('tiny-mlm-f16_golden.json');
      const top = async (dtype) => page.evaluate(async ([dtype, text]) => {
        const fm = await webbert.FillMask.load('/variants/', { device: 'cpu', dtype });
        const masks = await fm.predict(text);
        fm.dispose();
        return masks[0][0].tokenId;
      }, [dtype, fixture.texts[0]]);
      assert.equal(await top('auto'), fixture.fill_mask[0][0][0].token_id);
      // No q8 variant here: its 404 is asked once, then the f16 one.
      assert.deepEqual(fetched(), ['/variants/model.q8.safetensors', '/variants/model.fp16.safetensors']);
      assert.equal(await top('fp16'), fixture.fill_mask[0][0][0].token_id);
      assert.deepEqual(fetched(), []); // from Cache Storage
      await top('fp32');
      assert.deepEqual(fetched(), ['/variants/model.safetensors']);
      const bad = await page.evaluate(async () => {
        try { await webbert.FillMask.load('/variants/', { dtype: 'int4' }); return 'no error'; } catch (e) { return e.message; }
      });
      assert.match(bad, /dtype must be "fp32", "fp16", "q8" or "auto", not "int4"/);
    } finally {
      variants.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('50 concurrent calls on one instance give what 50 sequential calls give', async () => {
    const { together, oneByOne } = await page.evaluate(async () => {
      const fm = await webbert.FillMask.load('/fixtures/tiny-mlm/', { device: 'cpu' });
      const texts = Array.from({ length: 50 }, (_, i) => `the ${'very '.repeat(i % 7)}[MASK] of number ${i}`);
      const together = await Promise.all(texts.map((t) => fm.predict(t, { topK: 3 })));
      const oneByOne = [];
      for (const t of texts) oneByOne.push(await fm.predict(t, { topK: 3 }));
      fm.dispose();
      return { together, oneByOne };
    });
    assert.equal(together.length, 50);
    assert.deepEqual(together, oneByOne);
  });
});
