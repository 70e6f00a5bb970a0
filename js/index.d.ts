export type Device = 'webgpu' | 'cpu' | 'auto';

export interface Progress {
  file: string;
  loaded: number;
  total: number | null;
}

export interface LoadOptions {
  /** 'auto' (default) uses WebGPU when the browser offers an adapter, otherwise the CPU. */
  device?: Device;
  /** Runs the WebGPU kernels in one shape whatever the adapter: 'tiled' (what GPUs get) or 'serial'
   * (what CPU-backed adapters such as SwiftShader get). For comparing them; leave it unset otherwise. */
  kernels?: 'serial' | 'tiled';
  onProgress?: (progress: Progress) => void;
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

export interface Attention {
  tokens: string[];
  /** [start, end) in characters of the input; [0, 0] for special tokens. */
  offsets: [number, number][];
  numLayers: number;
  numHeads: number;
  /** [layer][head][query][key], row-major. */
  weights: Float32Array;
  truncated: boolean;
}

declare class Pipeline {
  readonly backend: 'webgpu' | 'cpu';
  attention(text: string): Promise<Attention>;
  /** Stops the worker and frees the model; calls still waiting, and any made later, reject. */
  dispose(): void;
}

export declare class FillMask extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<FillMask>;
  predict(text: string, options?: { topK?: number }): Promise<Prediction[][]>;
}

export declare class Embedder extends Pipeline {
  static load(source: Source, options?: LoadOptions): Promise<Embedder>;
  embed(texts: string | string[], options?: { pooling?: 'mean' | 'cls'; normalize?: boolean }): Promise<Float32Array[]>;
}
