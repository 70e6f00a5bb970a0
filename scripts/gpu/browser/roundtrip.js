// The floor under every call in this browser: a one-workgroup dispatch, a copy and `mapAsync`, timed `n` times.
// `mode`: 'map', mapAsync alone (what webbert's read does); 'done', onSubmittedWorkDone awaited first; 'sync',
// the dispatch submitted and onSubmittedWorkDone awaited, then the copy submitted and mapped (cubecl's
// `client.sync()` before a read); 'both', onSubmittedWorkDone and mapAsync awaited together. page.html runs
// each on the page's thread and in a worker (where webbert runs): a wait far above the GPU's work is the
// browser's, and a mode that avoids it is one a read could adopt.
export async function roundTrips(n, mode) {
  const [adapter] = await requestAdapter();
  const device = await adapter.requestDevice();
  const module = device.createShaderModule({
    code: `@group(0) @binding(0) var<storage, read_write> o: array<u32>;
      @compute @workgroup_size(1) fn main() { o[0] = o[0] + 1u; }`,
  });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const storage = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const entries = [{ binding: 0, resource: { buffer: storage } }];
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const times = [];
  for (let i = 0; i < n; i++) {
    const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const start = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    if (mode === 'sync') {
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
      const copy = device.createCommandEncoder();
      copy.copyBufferToBuffer(storage, 0, read, 0, 16);
      device.queue.submit([copy.finish()]);
      await read.mapAsync(GPUMapMode.READ);
    } else {
      encoder.copyBufferToBuffer(storage, 0, read, 0, 16);
      device.queue.submit([encoder.finish()]);
      if (mode === 'done') await device.queue.onSubmittedWorkDone();
      const map = read.mapAsync(GPUMapMode.READ);
      await (mode === 'both' ? Promise.all([device.queue.onSubmittedWorkDone(), map]) : map);
    }
    times.push(performance.now() - start);
    read.unmap();
    read.destroy();
  }
  device.destroy();
  times.sort((a, b) => a - b);
  const at = (q) => Number(times[Math.floor(q * (n - 1))].toFixed(3));
  return { min: at(0), median: at(0.5), p90: at(0.9) };
}

/** The adapter and how many requests it took, asking again for up to 5 s: on the H100 the first request, as
 * Chrome opens the page, came back null in every call (2026-11-22 to 24), so the probe never ran. */
export async function requestAdapter() {
  for (let tries = 1; tries <= 10; tries++) {
    const adapter = await navigator.gpu?.requestAdapter();
    if (adapter) return [adapter, tries];
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return [null, 10];
}

/** The same in a dedicated worker. */
export function roundTripsInWorker(n, mode) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(import.meta.url, { type: 'module' });
    worker.onmessage = (e) => { worker.terminate(); resolve(e.data); };
    worker.onerror = (e) => { worker.terminate(); reject(new Error(e.message)); };
    worker.postMessage([n, mode]);
  });
}

if (typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  onmessage = async (e) => postMessage(await roundTrips(...e.data));
}
