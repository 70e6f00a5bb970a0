// Soak: many consecutive calls on one instance, on WebGPU and on the CPU path, in headless Chromium.
// Reports latency at the start and the end and the memory of the worker's wasm heap, the renderer and the
// GPU process (SwiftShader keeps GPU buffers in it), so that a leak or a slowdown shows.
// Usage: node scripts/soak.mjs [CALLS=1000]   (after npm run build; a script, not a test: it takes minutes)
import { execSync } from 'node:child_process';
import { harness, launch, startServer } from '../tests/browser/helpers.mjs';

const calls = Number(process.argv[2] ?? 1000);
const server = await startServer();
const browser = await launch({ webgpu: true });
const page = await harness(browser, server);

/** RSS in MiB of Chromium's processes of one `--type`, summed. */
function rss(type) {
  const lines = execSync('ps -eo rss=,args=', { encoding: 'utf8' }).split('\n');
  return lines.filter((l) => l.includes(`--type=${type}`)).reduce((kb, l) => kb + Number(l.trim().split(/\s+/)[0]), 0) / 1024;
}

/** The wasm heap of every webbert worker, MiB. */
async function wasmHeap() {
  let total = 0;
  for (const worker of page.workers()) {
    total += await worker.evaluate(async () => (await (await import('/webbert/pkg/webbert.js')).default()).memory.buffer.byteLength);
  }
  return total / 2 ** 20;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const memory = async () => ({ wasmMiB: +(await wasmHeap()).toFixed(1), rendererMiB: +rss('renderer').toFixed(0), gpuMiB: +rss('gpu-process').toFixed(0) });

for (const device of ['webgpu', 'cpu']) {
  await page.evaluate(async (device) => {
    window.models = {
      embedder: await webbert.Embedder.load('/models/all-MiniLM-L6-v2/', { device }),
      fillMask: await webbert.FillMask.load('/models/minilm-l6-mlm/', { device }),
    };
  }, device);
  // Warm up (kernels compile on first use), then measure.
  await page.evaluate(async () => { await models.embedder.embed('warm up'); await models.fillMask.predict('warm [MASK]'); });
  const start = await memory();
  const ms = await page.evaluate(async (calls) => {
    const ms = [];
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      if (i % 2) await models.fillMask.predict(`call number ${i} is the [MASK] one of ${calls}.`);
      else await models.embedder.embed([`call number ${i} of ${calls}`, 'a second text, somewhat longer than the first one']);
      ms.push(performance.now() - t);
    }
    return ms;
  }, calls);
  const end = await memory();
  const tenth = Math.max(1, Math.floor(calls / 10));
  console.log(JSON.stringify({
    device,
    calls,
    firstTenthMedianMs: +median(ms.slice(0, tenth)).toFixed(2),
    lastTenthMedianMs: +median(ms.slice(-tenth)).toFixed(2),
    start,
    end,
  }));
  await page.evaluate(() => { models.embedder.dispose(); models.fillMask.dispose(); });
}
await browser.close();
server.close();
