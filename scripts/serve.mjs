// A static server on 127.0.0.1 for the demo page, the browser tests and the bench (sirv does the serving).
// Usage: node scripts/serve.mjs DIR [PORT]; or import { serve } with several mounts.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import sirv from 'sirv';

/** `mounts`: URL prefix → folder, or a handler `(req, res)` (longest prefix first). Counts requests and
 * bytes sent. `gzip`: a file's `.gz` beside it is sent instead to a browser that accepts it, as static hosts
 * compress the .wasm (the build writes a `.wasm.gz` beside each). */
export function serve(mounts, port = 0, { gzip = false } = {}) {
  const routes = Object.entries(mounts)
    .sort(([a], [b]) => b.length - a.length)
    .map(([prefix, dir]) => [prefix, typeof dir === 'function' ? dir : sirv(dir, { dev: true, dotfiles: false, gzip })]);
  // `arrivals`: each request with the bytes sent before it; `requests`: their URLs.
  const stats = { arrivals: [], bytes: 0, get requests() { return this.arrivals.map((a) => a.url); } };
  const server = http.createServer((req, res) => {
    stats.arrivals.push({ url: req.url, bytes: stats.bytes });
    for (const method of ['write', 'end']) {
      const original = res[method].bind(res);
      res[method] = (chunk, ...rest) => {
        if (chunk && typeof chunk !== 'function') stats.bytes += Buffer.byteLength(chunk);
        return original(chunk, ...rest);
      };
    }
    const [prefix, handler] = routes.find(([p]) => req.url.startsWith(p)) ?? [];
    const notFound = () => { res.statusCode = 404; res.end('not found'); };
    if (!handler) return notFound();
    req.url = '/' + req.url.slice(prefix.length);
    handler(req, res, notFound);
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}`,
      stats,
      close: () => { server.close(); server.closeAllConnections(); },
    }));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [root = 'www', port = '8080'] = process.argv.slice(2);
  const { url } = await serve({ '/': root }, Number(port), { gzip: true });
  console.log(`webbert demo: ${url}/`);
}
