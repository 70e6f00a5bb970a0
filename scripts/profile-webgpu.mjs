// Where a WebGPU forward spends its time, kernel by kernel:
//   [KERNELS=serial|tiled] [VARIANTS=numwg,noflag,nobarrier] node scripts/profile-webgpu.mjs [tokens|BATCHxTOKENS] [embed|fill-mask] [MODEL_DIR]
// Serves the page with a copy of webbert's worker that records each compute dispatch of one call, then
// replays every dispatch alone and times it (scripts/profile/gpuprobe.js). The model is all-MiniLM-L6-v2 or
// minilm-l6-mlm from www/models unless MODEL_DIR (Hugging Face layout) is given. KERNELS runs the GPU kernels
// in that shape whatever the adapter (e.g. the real GPUs' `tiled` on SwiftShader, to count its dispatches);
// VARIANTS replays each kernel again with its WGSL rewritten (gpuprobe.js). The tables come from
// scripts/gpu/browser/kernels.py, as on the GPU machine.
// Needs `npm run build` first.
import { execFileSync } from 'node:child_process';
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
  const variants = process.env.VARIANTS ? `&variants=${process.env.VARIANTS}` : '';
  await page.goto(`${server.url}/profile.html?tokens=${tokens}&task=${task}${model ? '&model=/model/' : ''}${kernels}${variants}`);
  await page.waitForFunction(() => document.title === 'done', null, { timeout: 900_000 });
  const result = await page.evaluate(() => window.result);
  console.log(`host writes: ${result.writes.count} (${result.writes.bytes} bytes)`);
  // The tables as on the GPU machine (which has no node): scripts/gpu/browser/kernels.py.
  const json = path.join(js, 'profile.json');
  fs.writeFileSync(json, JSON.stringify([result]));
  execFileSync('python3', [path.join(ROOT, 'scripts/gpu/browser/kernels.py'), json], { stdio: 'inherit' });
} finally {
  await browser.close();
  server.close?.();
  fs.rmSync(js, { recursive: true, force: true });
}
