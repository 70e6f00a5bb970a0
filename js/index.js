// webbert's JavaScript API: fill-mask, sentence embeddings, text classification, reranking, named entities,
// question answering and attention maps of BERT-family encoders, run by Rust/wasm in a Web Worker on WebGPU (or the CPU without one).

/** A module whose one function returns `f32x4.relaxed_madd` of three splats of 1.0: it validates where the
 * browser has relaxed SIMD. */
const SPLAT_ONE = [0x43, 0, 0, 0x80, 0x3f, 0xfd, 0x13]; // f32.const 1.0, f32x4.splat
const RELAXED_SIMD = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, // "\0asm", version 1
  1, 5, 1, 0x60, 0, 1, 0x7b, // types: () → v128
  3, 2, 1, 0, // one function of that type
  10, 28, 1, 26, 0, ...SPLAT_ONE, ...SPLAT_ONE, ...SPLAT_ONE, 0xfd, 0x85, 0x02, 0x0b]); // its code: the madd, end

/** The package's WebAssembly, fetched and compiled once per page: every worker gets the compiled module (a
 * `WebAssembly.Module` is cloned into a worker, not fetched again), so a page with several models downloads it
 * once. Two builds of the same code: with relaxed SIMD (fused multiply-adds in the CPU path's products) where
 * the browser has it, SIMD128 alone elsewhere. `null` where it cannot be compiled here (a server sending another
 * MIME type): each worker then fetches its own, the SIMD128 build. A download that receives nothing for
 * `stallMs` (the first load's `stallTimeout`) fails that load, and the next load fetches it again. */
let compiled = null;
function wasmModule(stallMs) {
  compiled ??= (async () => {
    const url = wasmUrl();
    const watchdog = new AbortController();
    let timer;
    const wait = () => {
      clearTimeout(timer);
      timer = setTimeout(() => watchdog.abort(), stallMs);
    };
    let copy;
    try {
      wait();
      const response = await fetch(url, { signal: watchdog.signal });
      // A copy of the body, read only to see it arrive: the response goes to the compiler as fetched.
      copy = response.clone().body?.getReader();
      (async () => {
        while (copy && !(await copy.read()).done) wait();
        clearTimeout(timer);
      })().catch(() => {});
      return await WebAssembly.compileStreaming(response);
    } catch {
      copy?.cancel().catch(() => {});
      if (!watchdog.signal.aborted) return null;
      compiled = null;
      throw new Error(`${url}: no data for ${stallMs / 1000} s; the download stalled`);
    } finally {
      clearTimeout(timer);
    }
  })();
  return compiled;
}

/** How long a download may receive nothing, unless a load says (as the model's downloads: src/bindings/web.rs). */
const STALL_MS = 30_000;

/** Each URL a whole literal, so that bundlers see both files. */
function wasmUrl() {
  return WebAssembly.validate(RELAXED_SIMD)
    ? new URL('../pkg/webbert_relaxed_bg.wasm', import.meta.url)
    : new URL('../pkg/webbert_bg.wasm', import.meta.url);
}

/** An abort's reason, or a message, as the Error every call rejects with. */
function asError(reason) {
  return reason instanceof Error ? reason : new Error(String(reason));
}

/** One worker and the calls waiting on it. Once the worker is gone (a crash, or `dispose()`), every
 * pending and later call rejects with the reason. */
class Client {
  /** `stallMs`: how long the package's WebAssembly download may receive nothing. */
  constructor(stallMs) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.pending = new Map();
    this.nextId = 0;
    this.dead = null;
    this.worker.onmessage = ({ data }) => {
      if ('panic' in data) return this.end(`webbert crashed (${data.panic.split('\n')[0]}); load the model again`);
      // The model moves to the CPU if the GPU is lost.
      if (data.placement) this.placement = data.placement;
      const call = this.pending.get(data.id);
      if (!call) return;
      if ('progress' in data) return call.onProgress?.(data.progress);
      this.pending.delete(data.id);
      if ('error' in data) call.reject(new Error(data.error));
      else call.resolve(data.result);
    };
    this.worker.onerror = (event) => this.end(`webbert worker failed: ${event.message ?? 'unknown error'}`);
    this.worker.onmessageerror = () => this.end('webbert: a reply from the worker could not be read');
    wasmModule(stallMs)
      .then((wasm) => this.dead || this.worker.postMessage({ wasm }), (error) => this.end(error))
      .catch((error) => this.end(`webbert: the module could not be sent to the worker: ${error.message}`));
  }

  /** Stops the worker; `reason` (an Error, or its message) is what every pending and later call rejects with. */
  end(reason) {
    this.dead ??= asError(reason);
    this.worker.terminate();
    for (const call of this.pending.values()) call.reject(this.dead);
    this.pending.clear();
  }

  /** Runs `op` in the worker. An aborted `signal` rejects the call at once with its reason; the worker
   * skips it, or stops it between forward passes, and goes on with the next call. */
  call(op, args, { onProgress, signal } = {}) {
    if (this.dead) return Promise.reject(this.dead);
    if (signal?.aborted) return Promise.reject(asError(signal.reason));
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      const abort = () => {
        if (!this.pending.delete(id)) return;
        this.worker.postMessage({ abort: id });
        reject(asError(signal.reason));
      };
      const settled = (settle) => (value) => {
        signal?.removeEventListener('abort', abort);
        settle(value);
      };
      try {
        this.worker.postMessage({ id, op, args });
      } catch (error) {
        return reject(new Error(`the arguments of ${op}() cannot be sent to the worker: ${error.message}`));
      }
      this.pending.set(id, { resolve: settled(resolve), reject: settled(reject), onProgress });
      signal?.addEventListener('abort', abort, { once: true });
    });
  }
}

/** Splits `options` into what the model reads and what stays on this side: `onProgress` and `signal`,
 * checked here. Anything but an object goes to the model as it is, for the model to reject. */
function split(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) return [options, {}];
  const { onProgress, signal, ...rest } = options;
  if (onProgress != null && typeof onProgress !== 'function') {
    throw new Error(`options.onProgress must be a function, not ${typeof onProgress}`);
  }
  if (signal != null && !(signal instanceof AbortSignal)) {
    throw new Error(`options.signal must be an AbortSignal, not ${typeof signal}`);
  }
  return [rest, { onProgress: onProgress ?? undefined, signal: signal ?? undefined }];
}

/** A picked file's name in the model folder: from a folder picker (`webkitdirectory`) its path below the
 * picked folder, so that `1_Pooling/config.json` keeps its folder; else its name. */
function relativeName(file) {
  const path = file.webkitRelativePath;
  return path ? path.slice(path.indexOf('/') + 1) : file.name;
}

/** User-supplied files (File, FileList, or {name: File|Blob|ArrayBuffer|Uint8Array|string}) as bytes. */
async function readFiles(source) {
  const entries = source instanceof FileList || Array.isArray(source)
    ? Array.from(source, (file) => [relativeName(file), file])
    : Object.entries(source);
  const files = {};
  for (const [name, value] of entries) {
    if (value instanceof Blob) files[name] = new Uint8Array(await value.arrayBuffer());
    else if (value instanceof ArrayBuffer) files[name] = new Uint8Array(value);
    else if (ArrayBuffer.isView(value)) files[name] = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    else if (typeof value === 'string') files[name] = new TextEncoder().encode(value);
    else throw new Error(`${name}: expected a File, Blob, ArrayBuffer, Uint8Array or string`);
  }
  return files;
}

async function open(task, source, options) {
  if (source == null) throw new Error('source is required: a base URL or model files');
  const [rest, { onProgress, signal }] = split(options);
  if (signal?.aborted) throw asError(signal.reason);
  // An invalid stallTimeout is the model's to reject, once the module is here.
  const stall = rest?.stallTimeout;
  const client = new Client(Number.isInteger(stall) && stall > 0 ? Math.min(stall, 2 ** 31 - 1) : STALL_MS);
  // Aborting a load stops its worker, and with it every download.
  const abort = () => client.end(signal.reason);
  signal?.addEventListener('abort', abort, { once: true });
  try {
    const files = typeof source === 'string' || source instanceof URL
      ? new URL(source, globalThis.location?.href).href
      : await readFiles(source);
    await client.call('load', [task, files, rest], { onProgress });
    return client;
  } catch (error) {
    client.end(error);
    throw error;
  } finally {
    signal?.removeEventListener('abort', abort);
  }
}

class Pipeline {
  constructor(client) {
    this.client = client;
  }

  /** 'webgpu' or 'cpu': where the model runs (the CPU after the GPU was lost). */
  get backend() {
    return this.client.placement.backend;
  }

  /** With device 'auto': calls of fewer tokens than this run on the CPU, measured faster there (until the
   * GPU is lost). */
  get crossover() {
    return this.client.placement.crossover;
  }

  /** `{submitMs, waitMs}` of one forward pass of `tokens` tokens: where a call of that size spends its time. */
  timing(tokens) {
    return this.client.call('timing', [tokens]);
  }

  /** `{tokens, ids, offsets, truncated}`: the text as the model reads it (special tokens included). */
  tokenize(text) {
    return this.client.call('tokenize', [text]);
  }

  /** Attention probabilities of every layer and head, for a heatmap. */
  attention(text) {
    return this.client.call('attention', [text]);
  }

  /** Stops the worker and frees the model; calls still waiting, and any made later, reject. */
  dispose() {
    this.client.end('this model was disposed');
  }
}

export class FillMask extends Pipeline {
  static async load(source, options) {
    return new FillMask(await open('fill-mask', source, options));
  }

  /** For each [MASK], in order, the topK (default 5) most likely `{token, tokenId, score, sequence}`. */
  async predict(text, options) {
    const [rest, call] = split(options);
    return this.client.call('predict', [text, rest], call);
  }
}

export class Embedder extends Pipeline {
  static async load(source, options) {
    return new Embedder(await open('embeddings', source, options));
  }

  /** One Float32Array per text; options `{pooling: 'mean' | 'cls', normalize, onProgress({done, total}),
   * signal}`, pooling and normalize by default as the model's sentence-transformers files say (else mean,
   * normalised). */
  async embed(texts, options) {
    const [rest, call] = split(options);
    return this.client.call('embed', [texts, rest], call);
  }
}

export class Classifier extends Pipeline {
  static async load(source, options) {
    return new Classifier(await open('text-classification', source, options));
  }

  /** The topK (default 1) likeliest `{label, score}` of a text, a pair `{text, textPair}`, or each of an
   * array of them. */
  async classify(inputs, options) {
    const [rest, call] = split(options);
    return this.client.call('classify', [inputs, rest], call);
  }

  /** `passages` as `{index, score, text}`, the most relevant to `query` first (a cross-encoder's scores);
   * options `{topK}`. */
  async rerank(query, passages, options) {
    const [rest, call] = split(options);
    return this.client.call('rerank', [query, passages, rest], call);
  }
}

export class TokenClassifier extends Pipeline {
  static async load(source, options) {
    return new TokenClassifier(await open('token-classification', source, options));
  }

  /** Named entities: per token `{entity, score, index, word, start, end}`, or with `{aggregation: 'simple'}`
   * per run of one type `{entityGroup, score, word, start, end}`. */
  async entities(text, options) {
    const [rest, call] = split(options);
    return this.client.call('entities', [text, rest], call);
  }
}

export class QuestionAnswerer extends Pipeline {
  static async load(source, options) {
    return new QuestionAnswerer(await open('question-answering', source, options));
  }

  /** The topK (default 1) likeliest `{score, start, end, answer}` spans of `context`, best first; options
   * `{topK, maxAnswerLen, maxSeqLen, docStride}`. */
  async answer(question, context, options) {
    const [rest, call] = split(options);
    return this.client.call('answer', [question, context, rest], call);
  }
}

const TASKS = {
  'fill-mask': FillMask,
  'feature-extraction': Embedder,
  'text-classification': Classifier,
  'token-classification': TokenClassifier,
  'question-answering': QuestionAnswerer,
};

/** transformers.js' factory: `pipeline(task, source, options)` loads the model for one of `TASKS`. */
export async function pipeline(task, source, options) {
  const kind = TASKS[task];
  if (!kind) throw new Error(`task must be one of ${Object.keys(TASKS).join(', ')}, not ${JSON.stringify(task)}`);
  return kind.load(source, options);
}
