// How llhttp, Node's HTTP/1.1 parser (the one node:http serves with, in its default strict
// mode), frames each request of a corpus: tests/test_http_differential.py compares it with
// CartPulse's front. Reads a JSON list of base64 byte strings on stdin; writes a JSON list of
// {messages: [{method, target, body, upgrade}], error} (error: llhttp's code, or null).
'use strict';
const { HTTPParser, methods } = require('_http_common');

function frame(bytes) {
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, {}, 0, 0);  // no lenient flags: llhttp's strict mode
  const messages = [];
  let current = null;
  let url = '';
  parser[HTTPParser.kOnHeaders] = (headers, part) => { url += part; };  // a head read in pieces
  parser[HTTPParser.kOnHeadersComplete] = (major, minor, headers, method, target, status, reason, upgrade) => {
    current = { method: methods[method], target: target || url, body: 0, upgrade: Boolean(upgrade) };
    url = '';
    return 0;
  };
  parser[HTTPParser.kOnBody] = (chunk) => { current.body += chunk.length; };
  parser[HTTPParser.kOnMessageComplete] = () => { messages.push(current); current = null; url = ''; };
  let result = parser.execute(bytes);
  if (!(result instanceof Error) && !(messages.length && messages[messages.length - 1].upgrade)) {
    result = parser.finish();  // the client closed: a message left half-way is an error
  }
  return { messages, error: result instanceof Error ? result.code : null };
}

const corpus = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(corpus.map((item) => frame(Buffer.from(item, 'base64')))));
