// Debian's Chromium, headless, driven by playwright-core (no browser download). WebGPU comes from
// SwiftShader, a CPU emulation of a GPU.
import { chromium } from 'playwright-core';

const FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** `webgpu: false` leaves WebGPU off, so a page must do without it. */
export function launch({ webgpu = true } = {}) {
  const args = [...FLAGS, ...(webgpu ? ['--enable-unsafe-webgpu'] : ['--disable-webgpu', '--disable-features=WebGPU'])];
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args, headless: true });
}
