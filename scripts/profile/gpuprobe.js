// Imported first by the profiling copy of webbert's worker (scripts/profile-webgpu.mjs): records every
// compute dispatch of one call, then replays each alone and times it: one submit of it 21 times in a row less
// one submit of it once, over 20 (what a submit and its wait cost, ~3 ms on a real GPU in Chrome, cancels).
// Also counts the call's writes from the host (`queue.writeBuffer`: inputs, kernels' shape metadata, constants).
const source = new WeakMap(); // shader module or pipeline → WGSL
const passes = new WeakMap(); // compute pass → its current pipeline and bind group
let device = null;
let recording = false;
const dispatches = [];
const writes = { count: 0, bytes: 0 };

function wrap(cls, name, fn) {
  const original = cls.prototype[name];
  cls.prototype[name] = function (...args) { return fn.call(this, original.bind(this), args); };
}

wrap(GPUAdapter, 'requestDevice', async (original, args) => (device = await original(...args)));
wrap(GPUDevice, 'createShaderModule', (original, args) => {
  const module = original(...args);
  source.set(module, args[0].code);
  return module;
});
wrap(GPUDevice, 'createComputePipeline', (original, args) => {
  const pipeline = original(...args);
  source.set(pipeline, source.get(args[0].compute.module));
  return pipeline;
});
wrap(GPUDevice, 'createComputePipelineAsync', async (original, args) => {
  const pipeline = await original(...args);
  source.set(pipeline, source.get(args[0].compute.module));
  return pipeline;
});
wrap(GPUComputePassEncoder, 'setPipeline', function (original, args) {
  passes.set(this, { ...passes.get(this), pipeline: args[0] });
  return original(...args);
});
wrap(GPUComputePassEncoder, 'setBindGroup', function (original, args) {
  passes.set(this, { ...passes.get(this), bindGroup: args });
  return original(...args);
});
wrap(GPUComputePassEncoder, 'dispatchWorkgroups', function (original, args) {
  if (recording) dispatches.push({ ...passes.get(this), workgroups: args });
  return original(...args);
});

wrap(GPUQueue, 'writeBuffer', (original, args) => {
  if (recording) {
    writes.count += 1;
    writes.bytes += args[4] ?? (args[2].byteLength ?? args[2].length) - (args[3] ?? 0);
  }
  return original(...args);
});

async function submit({ pipeline, bindGroup, workgroups }, times) {
  const start = performance.now();
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(...bindGroup);
  for (let i = 0; i < times; i++) pass.dispatchWorkgroups(...workgroups);
  pass.end();
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
  return performance.now() - start;
}

async function time(dispatch) {
  await submit(dispatch, 1); // warm
  const best = async (times) => Math.min(...[await submit(dispatch, times), await submit(dispatch, times), await submit(dispatch, times)]);
  return Math.max(0, (await best(21)) - (await best(1))) / 20;
}

self.addEventListener('message', async ({ data }) => {
  if (data?.profile === 'record') {
    dispatches.length = 0;
    Object.assign(writes, { count: 0, bytes: 0 });
    recording = true;
  } else if (data?.profile === 'replay') {
    recording = false;
    const rows = [];
    for (const d of dispatches) {
      const ms = await time(d);
      const wgsl = source.get(d.pipeline) ?? '';
      rows.push({ kernel: wgsl.match(/fn (\w+)\(/)?.[1] ?? '?', workgroups: d.workgroups.join('×'), ms });
    }
    self.postMessage({ profile: rows, writes });
  }
});
