// A static server on 127.0.0.1 for the demo page and the browser tests (sirv does the serving).
// Usage: node scripts/serve.mjs DIR [PORT]; import { serve } for tests.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import sirv from 'sirv';

export function serve(root, port = 0) {
  const handler = sirv(root, { dev: true, dotfiles: false });
  const server = http.createServer((req, res) => handler(req, res, () => {
    res.statusCode = 404;
    res.end('not found');
  }));
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [root = 'www', port = '8080'] = process.argv.slice(2);
  const { url } = await serve(root, Number(port));
  console.log(`webbert demo: ${url}`);
}
