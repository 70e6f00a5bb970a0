// The model runs here, off the page's thread. Calls are queued: one finishes before the next starts.
import init, { Model } from '../pkg/webbert.js';

const ready = init();
let model = null;
let queue = Promise.resolve();

self.onmessage = ({ data }) => {
  queue = queue.then(() => run(data));
};

async function run({ id, op, args }) {
  try {
    await ready;
    let result;
    if (op === 'load') {
      const [task, source, device, kernels] = args;
      model = await Model.load(task, source, device, (progress) => self.postMessage({ id, progress }), kernels);
      result = { backend: model.backend, crossover: model.crossover };
    } else {
      result = await model[op](...args);
    }
    self.postMessage({ id, result });
  } catch (error) {
    self.postMessage({ id, error: error instanceof Error ? error.message : String(error) });
  }
}
