// The model runs here, off the page's thread. Calls are queued: one finishes before the next starts.
import init, { Model } from '../pkg/webbert.js';

// The page sends the compiled module (or null: fetch it here) before anything runs.
let provide;
const ready = new Promise((resolve) => { provide = resolve; })
  .then((wasm) => init(wasm ? { module_or_path: wasm } : undefined));
let model = null;
let queue = Promise.resolve();
/** Calls the page gave up on: skipped if not started, stopped between forward passes if running. */
const aborted = new Set();
/** The last call finished. Calls run in the order of their ids, so an abort of one at or below it came
 * after its end, and is dropped rather than kept. */
let finished = 0;

self.onmessage = ({ data }) => {
  if ('wasm' in data) return provide(data.wasm);
  if ('abort' in data) {
    if (data.abort > finished) aborted.add(data.abort);
    return;
  }
  queue = queue.then(() => run(data));
};

/** Where the model runs now: all on the CPU (its CPU copy, if it has one) once the GPU is lost. */
const placement = () => model && { backend: model.backend, crossover: model.crossover };

async function run({ id, op, args }) {
  // Reports progress to the page; `false` tells the model to stop (the page aborted the call).
  const progress = (progress) => {
    if (aborted.has(id)) return false;
    self.postMessage({ id, progress });
    return true;
  };
  try {
    await ready;
    if (aborted.has(id)) return;
    let result;
    if (op === 'load') {
      const [task, source, options] = args;
      model = await Model.load(task, source, options, progress);
    } else {
      result = await model[op](...args, progress);
    }
    self.postMessage({ id, result, placement: placement() });
  } catch (error) {
    self.postMessage({ id, error: error instanceof Error ? error.message : String(error), placement: placement() });
  } finally {
    aborted.delete(id);
    finished = id;
  }
}
