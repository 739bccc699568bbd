'use strict';
// The floor bench.js compares the loader with: a bare http.createServer answering every
// request with the hello function's answer, on PORT, printing the same "listening on" line.
const http = require('http');

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const body = 'Hello, world!\n';
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`bare node server listening on ${address}:${port}`);
});
