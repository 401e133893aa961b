// Drives npm `@tinybirdco/sdk` as a Node application would.
//
//     node tinybird_ts_calls.mjs <operation> '<json arguments>'
//
// Run by tests/real_clients.py from .clients/npm (beside the installed SDK), with the
// CartPulse URL and token in CARTPULSE_URL and CARTPULSE_TOKEN. Prints the SDK's answer
// as JSON, or {raised, status, message} when the SDK threw.
import { createClient, createJWT, TinybirdError, TinybirdApi, TinybirdApiError, TokenApiError } from "@tinybirdco/sdk";

const baseUrl = process.env.CARTPULSE_URL;
const token = process.env.CARTPULSE_TOKEN;
const client = createClient({ baseUrl, token });

const operations = {
  ingest: ({ datasource, event }) => client.ingest(datasource, event),
  ingestBatch: ({ datasource, events, wait = true }) => client.ingestBatch(datasource, events, { wait }),
  query: ({ pipe, params }) => client.query(pipe, params),
  sql: ({ sql }) => client.sql(sql),
  appendFile: ({ datasource, file, csvDialect }) => client.datasources.append(datasource, { file, csvDialect }),
  truncate: ({ datasource }) => client.datasources.truncate(datasource),
  createJWT: ({ name, scopes, seconds }) =>
    client.tokens.createJWT({ name, scopes, expiresAt: new Date(Date.now() + seconds * 1000) }),
  // The standalone API wrapper, and minting through the bare function.
  apiQuery: ({ pipe, params }) => new TinybirdApi({ baseUrl, token }).query(pipe, params),
  apiCreateJWT: ({ name, scopes, seconds }) =>
    createJWT({ baseUrl, token }, { name, scopes, expiresAt: Math.floor(Date.now() / 1000) + seconds }),
};

const [operation, args] = process.argv.slice(2);
let result;
try {
  result = await operations[operation](JSON.parse(args));
} catch (err) {
  if (!(err instanceof TinybirdError || err instanceof TinybirdApiError || err instanceof TokenApiError)) throw err;
  result = { raised: err.name, status: err.statusCode ?? err.status, message: String(err.message).slice(0, 500) };
}
console.log(JSON.stringify(result ?? {}));
