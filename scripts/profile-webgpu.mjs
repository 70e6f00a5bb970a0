// Where a WebGPU forward spends its time, kernel by kernel:
//   [KERNELS=serial|tiled] node scripts/profile-webgpu.mjs [tokens] [embed|fill-mask] [MODEL_DIR]
// Serves the page with a copy of webbert's worker that records each compute dispatch of one call, then
// replays every dispatch alone and times it (scripts/profile/gpuprobe.js). The model is all-MiniLM-L6-v2 or
// minilm-l6-mlm from www/models unless MODEL_DIR (Hugging Face layout) is given. KERNELS runs the GPU kernels
// in that shape whatever the adapter (e.g. the real GPUs' `tiled` on SwiftShader, to count its dispatches).
// Needs `npm run build` first.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';
import { serve } from './serve.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [tokens = '16', task = 'embed', model] = process.argv.slice(2);

// The package's js/ with the probe imported ahead of the worker's own code.
const js = fs.mkdtempSync(path.join(os.tmpdir(), 'webbert-profile-'));
fs.copyFileSync(path.join(ROOT, 'js/index.js'), path.join(js, 'index.js'));
fs.copyFileSync(path.join(ROOT, 'scripts/profile/gpuprobe.js'), path.join(js, 'gpuprobe.js'));
fs.writeFileSync(path.join(js, 'worker.js'), `import './gpuprobe.js';\n${fs.readFileSync(path.join(ROOT, 'js/worker.js'), 'utf8')}`);

const server = await serve({
  '/': path.join(ROOT, 'scripts/profile'),
  '/models/': path.join(ROOT, 'www/models'),
  '/webbert/js/': js,
  '/webbert/pkg/': path.join(ROOT, 'pkg'),
  ...(model ? { '/model/': path.resolve(model) } : {}),
});
const browser = await launch({ webgpu: true });
try {
  const page = await browser.newPage();
  page.on('pageerror', (error) => console.error(error.message));
  const kernels = process.env.KERNELS ? `&kernels=${process.env.KERNELS}` : '';
  await page.goto(`${server.url}/profile.html?tokens=${tokens}&task=${task}${model ? '&model=/model/' : ''}${kernels}`);
  await page.waitForFunction(() => document.title === 'done', null, { timeout: 900_000 });
  const { forwardMs, rows, writes } = await page.evaluate(() => window.result);
  const total = rows.reduce((sum, r) => sum + r.ms, 0);
  console.log(`${task} 1×${tokens}: forward ${forwardMs.toFixed(0)} ms, ${rows.length} dispatches, replayed alone ${total.toFixed(0)} ms`);
  console.log(`host writes: ${writes.count} (${writes.bytes} bytes)`);
  const byKernel = new Map();
  for (const r of rows) {
    const k = byKernel.get(r.kernel) ?? { n: 0, ms: 0, workgroups: new Set() };
    k.n += 1;
    k.ms += r.ms;
    k.workgroups.add(r.workgroups);
    byKernel.set(r.kernel, k);
  }
  for (const [kernel, k] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms)) {
    console.log(`${k.ms.toFixed(1).padStart(9)} ms ${String(k.n).padStart(4)}×  ${kernel}  [${[...k.workgroups].slice(0, 3).join(', ')}]`);
  }
} finally {
  await browser.close();
  server.close?.();
  fs.rmSync(js, { recursive: true, force: true });
}
