// The two runtimes behind one interface, for the bench page: load a pipeline, then run it on an input.
import { Embedder, FillMask } from '/webbert/js/index.js';
import { env, pipeline } from '/tjs/transformers.js';

// transformers.js entirely local: no hub, ONNX Runtime's wasm files from node_modules.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.backends.onnx.wasm.wasmPaths = '/ort/';

const MODELS = { embed: 'all-MiniLM-L6-v2', 'fill-mask': 'minilm-l6-mlm' };

/** `{runtime: 'webbert'|'tjs', device: 'webgpu'|'cpu', dtype: 'fp32'|'fp16'|'q8'}` → `(input) => output`. */
export async function load({ runtime, task, device, dtype = 'fp32' }) {
  if (runtime === 'webbert') {
    const source = `/models/${MODELS[task]}/`;
    if (task === 'embed') {
      const e = await Embedder.load(source, { device, dtype });
      return { backend: e.backend, run: async (texts) => (await e.embed(texts)).map((r) => Array.from(r)) };
    }
    const fm = await FillMask.load(source, { device, dtype });
    return { backend: fm.backend, run: async (text) => (await fm.predict(text, { topK: 5 }))[0].map((p) => ({ token: p.token, score: p.score })) };
  }
  const options = { device: device === 'cpu' ? 'wasm' : 'webgpu', dtype };
  if (task === 'embed') {
    const extractor = await pipeline('feature-extraction', MODELS.embed, options);
    return { backend: options.device, run: async (texts) => (await extractor(texts, { pooling: 'mean', normalize: true })).tolist() };
  }
  const fm = await pipeline('fill-mask', MODELS['fill-mask'], options);
  return { backend: options.device, run: async (text) => (await fm(text, { top_k: 5 })).map((p) => ({ token: p.token_str, score: p.score })) };
}
