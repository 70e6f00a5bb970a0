// Imported first by the profiling copy of webbert's worker (scripts/profile-webgpu.mjs): records every
// compute dispatch of one call, then replays each alone and times it: one submit of it 21 times in a row less
// one submit of it once, over 20 (what a submit and its wait cost, ~3 ms on a real GPU in Chrome, cancels).
// Where the adapter has `timestamp-query` the GPU's own clock times the same replays, and the whole call is
// replayed too (all in one pass, and one pass per dispatch), so the GPU's work can be told from the wait
// for it. `variants` replays each kernel again with its WGSL rewritten (REWRITES), to find what makes it slow.
// Also counts the call's writes from the host (`queue.writeBuffer`: inputs, kernels' shape metadata, constants).
const source = new WeakMap(); // shader module or pipeline → WGSL
const descriptors = new WeakMap(); // pipeline → its descriptor (layout, entry point), for the variants
const passes = new WeakMap(); // compute pass → its current pipeline and bind group
let device = null;
let recording = false;
const dispatches = [];
const writes = { count: 0, bytes: 0 };

function wrap(cls, name, fn) {
  const original = cls.prototype[name];
  cls.prototype[name] = function (...args) { return fn.call(this, original.bind(this), args); };
}

// Asks for timestamp queries where the adapter has them (webbert itself never needs them).
wrap(GPUAdapter, 'requestDevice', async function (original, [descriptor = {}]) {
  const features = new Set(descriptor.requiredFeatures ?? []);
  if (this.features.has('timestamp-query')) features.add('timestamp-query');
  device = await original({ ...descriptor, requiredFeatures: [...features] });
  return device;
});
wrap(GPUDevice, 'createShaderModule', (original, args) => {
  const module = original(...args);
  source.set(module, args[0].code);
  return module;
});
const keep = (pipeline, descriptor) => {
  source.set(pipeline, source.get(descriptor.compute.module));
  descriptors.set(pipeline, descriptor);
  return pipeline;
};
wrap(GPUDevice, 'createComputePipeline', (original, args) => keep(original(...args), args[0]));
wrap(GPUDevice, 'createComputePipelineAsync', async (original, args) => keep(await original(...args), args[0]));
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

/** Runs `list` (dispatches, in order) in one pass, or one pass each where `split`: the wall time from
 * encoding to the queue's done, and each pass's GPU time from its timestamps (null without them). */
async function submit(list, split = false) {
  const groups = split ? list.map((d) => [d]) : [list];
  const timed = device.features.has('timestamp-query');
  const count = 2 * groups.length;
  const querySet = timed ? device.createQuerySet({ type: 'timestamp', count }) : null;
  const start = performance.now();
  const encoder = device.createCommandEncoder();
  groups.forEach((group, i) => {
    const timestampWrites = { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
    const pass = encoder.beginComputePass(timed ? { timestampWrites } : {});
    for (const { pipeline, bindGroup, workgroups } of group) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(...bindGroup);
      pass.dispatchWorkgroups(...workgroups);
    }
    pass.end();
  });
  let resolved, read;
  if (timed) {
    resolved = device.createBuffer({ size: 8 * count, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    read = device.createBuffer({ size: 8 * count, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(querySet, 0, count, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, read, 0, 8 * count);
  }
  device.queue.submit([encoder.finish()]);
  await device.queue.onSubmittedWorkDone();
  const wallMs = performance.now() - start;
  if (!timed) return { wallMs, gpuMs: null };
  await read.mapAsync(GPUMapMode.READ);
  const ns = new BigUint64Array(read.getMappedRange());
  const gpuMs = groups.map((_, i) => Number(ns[2 * i + 1] - ns[2 * i]) / 1e6);
  read.unmap();
  [querySet, resolved, read].forEach((x) => x.destroy());
  return { wallMs, gpuMs };
}

/** The best (least) of three runs of `list`, in wall time and in GPU time. */
async function best(list) {
  const runs = [await submit(list), await submit(list), await submit(list)];
  const least = (values) => Math.min(...values);
  return { wallMs: least(runs.map((r) => r.wallMs)), gpuMs: runs[0].gpuMs && least(runs.map((r) => r.gpuMs[0])) };
}

/** One dispatch's cost: 21 in a row less 1, over 20 (in wall time `ms`, and in GPU time `gpuMs`). */
async function time(dispatch) {
  await submit([dispatch]); // warm
  const [one, many] = [await best([dispatch]), await best(Array(21).fill(dispatch))];
  const per = (key) => (one[key] === null ? null : Math.max(0, many[key] - one[key]) / 20);
  return { ms: per('wallMs'), gpuMs: per('gpuMs') };
}

// WGSL rewrites for `variants`, each a guess at why a kernel is slow in one browser and not natively. Only
// for timing: `nobarrier` gives wrong results, and the replay's outputs are not read.
const REWRITES = {
  // `@builtin(num_workgroups)` as a constant (the dispatch's own counts).
  numwg: (code, workgroups) => {
    const param = /@builtin\(num_workgroups\)\s*(\w+)\s*:\s*vec3<u32>/;
    const name = code.match(param)?.[1];
    if (!name) return null;
    const [x, y = 1, z = 1] = workgroups;
    return code
      .replace(new RegExp(`,\\s*${param.source}|${param.source}\\s*,?`), '')
      .replace(/(@compute[^{]*\{)/, `$1\nlet ${name} = vec3<u32>(${x}u, ${y}u, ${z}u);`);
  },
  // cubecl's early exit (`terminate!`) as a flag every later statement is nested under: run them always.
  noflag: (code) => {
    const rewritten = code.replace(/let (\w+) = \*inv_return_flag_\w+;\s*if \1 \{/g, 'if true {');
    return rewritten === code ? null : rewritten;
  },
  // No workgroup barriers: what they cost.
  nobarrier: (code) => (code.includes('workgroupBarrier();') ? code.replaceAll('workgroupBarrier();', '') : null),
};

async function variants(names) {
  const rows = [];
  const seen = new Set();
  for (const d of dispatches) {
    if (seen.has(d.pipeline)) continue;
    seen.add(d.pipeline);
    const wgsl = source.get(d.pipeline) ?? '';
    const descriptor = descriptors.get(d.pipeline);
    const kernel = wgsl.match(/fn (\w+)\(/)?.[1] ?? '?';
    if (!descriptor || descriptor.layout === 'auto') continue;
    rows.push({ kernel, variant: 'as is', workgroups: d.workgroups.join('×'), ...(await time(d)) });
    for (const name of names) {
      const code = REWRITES[name]?.(wgsl, d.workgroups);
      if (!code) continue;
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code });
      const pipeline = device.createComputePipeline({ ...descriptor, compute: { ...descriptor.compute, module } });
      const error = await device.popErrorScope();
      const row = { kernel, variant: name, workgroups: d.workgroups.join('×') };
      rows.push(error ? { ...row, error: error.message.split('\n')[0] } : { ...row, ...(await time({ ...d, pipeline })) });
    }
  }
  return rows;
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
      const wgsl = source.get(d.pipeline) ?? '';
      rows.push({ kernel: wgsl.match(/fn (\w+)\(/)?.[1] ?? '?', workgroups: d.workgroups.join('×'), ...(await time(d)) });
    }
    // The whole call again: in one pass (its GPU time against the wait a call sees), and one pass per
    // dispatch (each kernel's GPU time where it runs in the call, caches as they are there).
    await submit(dispatches);
    const call = await best(dispatches);
    const inCall = (await submit(dispatches, true)).gpuMs;
    inCall?.forEach((gpuMs, i) => Object.assign(rows[i], { inCallGpuMs: gpuMs }));
    const tried = data.variants ? await variants(data.variants) : [];
    self.postMessage({ profile: rows, writes, call, variants: tried });
  }
});
