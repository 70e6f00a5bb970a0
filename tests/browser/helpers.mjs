// Shared by the browser tests: a local server, headless Chromium, and the golden fixtures.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import sirv from 'sirv';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.join(ROOT, 'tests/fixtures');

/** www/ at /, the fixtures at /fixtures/, this folder at /test/, extra mounts as given. Counts requests. */
export async function startServer(mounts = {}) {
  const routes = Object.entries({
    '/fixtures/': FIXTURES,
    '/test/': path.join(ROOT, 'tests/browser'),
    ...mounts,
    '/': path.join(ROOT, 'www'),
  }).map(([prefix, dir]) => [prefix, sirv(dir, { dev: true })]);
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url);
    const [prefix, handler] = routes.find(([p]) => req.url.startsWith(p));
    req.url = '/' + req.url.slice(prefix.length);
    handler(req, res, () => { res.statusCode = 404; res.end('not found'); });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, requests, close: () => server.close() };
}

const FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Headless Chromium; `webgpu: false` leaves WebGPU off so the package must fall back to the CPU. */
export async function launch({ webgpu = true } = {}) {
  const args = [...FLAGS, ...(webgpu ? ['--enable-unsafe-webgpu'] : ['--disable-webgpu', '--disable-features=WebGPU'])];
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args, headless: true });
}

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
