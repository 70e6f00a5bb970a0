export type Device = 'webgpu' | 'cpu' | 'auto';

export interface Progress {
  file: string;
  loaded: number;
  total: number | null;
}

export interface LoadOptions {
  /** 'auto' (default): WebGPU on a GPU (with the CPU for inputs short enough that it was measured
   * faster there), the CPU without one, when the adapter is a CPU emulation (SwiftShader), or when the GPU
   * fails while it is timed. */
  device?: Device;
  /** Which weights to download: 'fp32' (model.safetensors), 'fp16' (model.fp16.safetensors, half the bytes),
   * 'q8' (model.q8.safetensors, int8 in blocks of 32 with f32 scales, 28% of the bytes), each written by
   * `webbert quantize --dtype fp16|q8`; or 'auto' (default): a variant already cached, else the smallest the
   * model directory has. On WebGPU f16 and int8 weights stay so (the products accumulate in f32); on the CPU
   * int8 weights stay int8 and f16 ones are widened to f32 at load. */
  dtype?: 'fp32' | 'fp16' | 'q8' | 'auto';
  /** Runs the WebGPU kernels in one shape whatever the adapter: 'tiled' (what GPUs get), 'tiled-subgroups'
   * (the same with subgroup reductions, where the adapter has them) or 'serial' (what CPU-backed adapters
   * such as SwiftShader get). For comparing them; leave it unset otherwise. */
  kernels?: 'serial' | 'tiled' | 'tiled-subgroups';
  /** How results come back from the GPU: 'map' (default; mapAsync alone), 'settle' (after the queue has
   * run dry: onSubmittedWorkDone first) or 'join' (both at once). For comparing them; leave it unset otherwise. */
  readback?: 'map' | 'settle' | 'join';
  /** Bytes of each file as they arrive. */
  onProgress?: (progress: Progress) => void;
  /** Aborting it stops the download and rejects the load with the signal's reason. */
  signal?: AbortSignal;
  /** Milliseconds a download (the model's files, the package's `.wasm`) may receive nothing before the load
   * fails naming the file (default 30000). */
  stallTimeout?: number;
}

export interface CallOptions {
  /** Aborting it rejects the call at once with the signal's reason; the model skips the call, or stops it
   * between forward passes, and serves the next call. */
  signal?: AbortSignal;
}

export interface PredictOptions extends CallOptions {
  /** Predictions per mask (default 5); past the vocabulary, the whole vocabulary. At most 50,000
   * predictions per call (masks × topK). */
  topK?: number;
}

export interface EmbedOptions extends CallOptions {
  /** By default as the model's sentence-transformers files (modules.json, 1_Pooling) say; else 'mean'. */
  pooling?: 'mean' | 'cls';
  /** By default true, unless the model's modules.json has no Normalize module. */
  normalize?: boolean;
  /** After each forward pass (up to 32 texts). */
  onProgress?: (progress: { done: number; total: number }) => void;
}

/** A base URL in Hugging Face layout, or the model's files by name. */
export type Source =
  | string
  | URL
  | FileList
  | File[]
  | Record<string, File | Blob | ArrayBuffer | Uint8Array | string>;

export interface Prediction {
  token: string;
  tokenId: number;
  score: number;
  sequence: string;
}

export interface ClassifyOptions extends CallOptions {
  /** Labels per input, best first (default 1); past the labels, all of them. */
  topK?: number;
}

/** A text, or two read together (`[CLS] text [SEP] textPair [SEP]`): question and passage, two sentences. */
export type TextInput = string | { text: string; textPair?: string };

export interface Label {
  label: string;
  /** Softmax over the labels, or each label's sigmoid for multi-label models and one-logit rerankers. */
  score: number;
}

export interface Ranked {
  /** The passage's index in the input. */
  index: number;
  score: number;
  text: string;
}

export interface EntityOptions extends CallOptions {
  /** 'none' (default): one entity per token; 'simple': runs of tokens of one type (B-PER I-PER) as one. */
  aggregation?: 'none' | 'simple';
}

export interface Entity {
  /** The token's label (aggregation 'none'). */
  entity?: string;
  /** The run's type, without B-/I- (aggregation 'simple'). */
  entityGroup?: string;
  score: number;
  /** The token's position in the encoding, special tokens counted (aggregation 'none'). */
  index?: number;
  word: string;
  /** [start, end) in characters (code points: index `Array.from(text)`, not `text.slice`) of the text. */
  start: number;
  end: number;
}

export interface AnswerOptions extends CallOptions {
  topK?: number;
  /** Most tokens in an answer (default 15). */
  maxAnswerLen?: number;
  /** Most tokens of question + context per chunk (default 384, or the model's positions if fewer). */
  maxSeqLen?: number;
  /** Context tokens a chunk repeats from the one before (default half of maxSeqLen, at most 128). */
  docStride?: number;
}

export interface Answer {
  score: number;
  /** [start, end) in characters (code points: index `Array.from(context)`) of the context, widened to whole words. */
  start: number;
  end: number;
  answer: string;
}

export interface Attention {
  tokens: string[];
  /** [start, end) in characters (code points: index `Array.from(input)`) of the input; [0, 0] for special tokens. */
  offsets: [number, number][];
  numLayers: number;
  numHeads: number;
  /** [layer][head][query][key], row-major. */
  weights: Float32Array;
  truncated: boolean;
}

export interface Tokens {
  /** The model's pieces, its special tokens ([CLS] and [SEP], <s> and </s>) included. */
  tokens: string[];
  ids: Uint32Array;
  /** [start, end) in characters (code points: index `Array.from(input)`) of the input; [0, 0] for special tokens. */
  offsets: [number, number][];
  /** The text was longer than the model's positions and was cut. */
  truncated: boolean;
}

export interface Timing {
  /** Building the batch and submitting every kernel (on a GPU, from a size's third call, replaying them as
   * recorded): the CPU's share. */
  submitMs: number;
  /** Waiting for the device, and reading the result back. */
  waitMs: number;
}

declare class Pipeline {
  /** Where the model runs: on 'webgpu' until the GPU is lost (a GPU process crash), then on the 'cpu',
   * where the call that saw the loss is run again. */
  readonly backend: 'webgpu' | 'cpu';
  /** With device 'auto' on a GPU the CPU beats on short inputs: calls of fewer tokens run on the CPU
   * (`undefined` once the GPU is lost and every call runs there). */
  readonly crossover?: number;
  /** One forward pass of `tokens` tokens, timed: where a call of that size spends its time. */
  timing(tokens: number): Promise<Timing>;
  /** The text as the model reads it: e.g. to count tokens before embedding a long document. */
  tokenize(text: string): Promise<Tokens>;
  attention(text: string): Promise<Attention>;
  /** Stops the worker and frees the model; calls still waiting, and any made later, reject. */
  dispose(): void;
}

export declare class FillMask extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<FillMask>;
  predict(text: string, options?: PredictOptions): Promise<Prediction[][]>;
}

export declare class Embedder extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<Embedder>;
  /** Texts are grouped by length, so that short ones are not padded to the longest; vectors come back in
   * input order. */
  embed(texts: string | string[], options?: EmbedOptions): Promise<Float32Array[]>;
}

export declare class Classifier extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<Classifier>;
  classify(input: TextInput, options?: ClassifyOptions): Promise<Label[]>;
  classify(inputs: TextInput[], options?: ClassifyOptions): Promise<Label[][]>;
  /** A cross-encoder's relevance of each passage to the query, best first. */
  rerank(query: string, passages: string[], options?: ClassifyOptions): Promise<Ranked[]>;
}

export declare class TokenClassifier extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<TokenClassifier>;
  entities(text: string, options?: EntityOptions): Promise<Entity[]>;
}

export declare class QuestionAnswerer extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<QuestionAnswerer>;
  answer(question: string, context: string, options?: AnswerOptions): Promise<Answer[]>;
}

export declare function pipeline(task: 'fill-mask', source: Source, options?: LoadOptions): Promise<FillMask>;
export declare function pipeline(task: 'feature-extraction', source: Source, options?: LoadOptions): Promise<Embedder>;
export declare function pipeline(task: 'text-classification', source: Source, options?: LoadOptions): Promise<Classifier>;
export declare function pipeline(task: 'token-classification', source: Source, options?: LoadOptions): Promise<TokenClassifier>;
export declare function pipeline(task: 'question-answering', source: Source, options?: LoadOptions): Promise<QuestionAnswerer>;
