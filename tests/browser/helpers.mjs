// Shared by the browser tests: a local server, headless Chromium, and the golden fixtures.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../../scripts/chromium.mjs';
import { serve } from '../../scripts/serve.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.join(ROOT, 'tests/fixtures');

/** www/ at /, the fixtures at /fixtures/, this folder at /test/, extra mounts as given. */
export async function startServer(mounts = {}) {
  const server = await serve({
    '/': path.join(ROOT, 'www'),
    '/fixtures/': FIXTURES,
    '/test/': path.join(ROOT, 'tests/browser'),
    ...mounts,
  });
  return { ...server, get requests() { return server.stats.requests; } };
}

export { launch };

/** A page on the harness, with `window.webbert` imported. */
export async function harness(browser, server) {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log('[browser]', m.text()); });
  await page.goto(`${server.url}/test/harness.html`);
  await page.waitForFunction(() => document.title === 'ready');
  return page;
}

/** Float32 tensors of a golden safetensors file: name → {shape, data}. */
export function golden(name) {
  const bytes = fs.readFileSync(path.join(FIXTURES, name));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [key, info] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const [start, end] = info.data_offsets;
    const slice = bytes.subarray(8 + n + start, 8 + n + end);
    out[key] = { shape: info.shape, data: new Float32Array(slice.buffer.slice(slice.byteOffset, slice.byteOffset + slice.length)) };
  }
  return out;
}

export const json = (name) => JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
