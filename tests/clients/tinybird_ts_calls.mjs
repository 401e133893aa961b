// Drives npm `@tinybirdco/sdk` as a Node application would.
//
//     node tinybird_ts_calls.mjs <operation> '<json arguments>'
//
// Run by tests/real_clients.py from .clients/npm (beside the installed SDK), with the
// CartPulse URL and token in CARTPULSE_URL and CARTPULSE_TOKEN. Prints the SDK's answer
// as JSON, or {raised, status, message} when the SDK threw.
import {
  createClient, createJWT, defineDatasource, defineEndpoint, node, p, t, Tinybird, TinybirdApi, TinybirdApiError,
  TinybirdError, TokenApiError,
} from "@tinybirdco/sdk";

const baseUrl = process.env.CARTPULSE_URL;
const token = process.env.CARTPULSE_TOKEN;
const client = createClient({ baseUrl, token });

// The typed client the SDK's README starts from: CartPulse's data source and one endpoint,
// declared in TypeScript (what `tinybird deploy` would push; here only the names and
// types are used, to ingest and query).
const ecommerceEvents = defineDatasource("ecommerce_events", {
  schema: {
    event_time: t.dateTime(), event_type: t.string(), user_id: t.string(), product_id: t.string(),
    category: t.string(), price: t.float64(), quantity: t.int32(), session_id: t.string(), country: t.string(),
  },
});
const topProducts = defineEndpoint("top_products", {
  params: {
    start_date: p.dateTime().optional(), end_date: p.dateTime().optional(), limit: p.int32().optional(10),
    category: p.string().optional(), country: p.string().optional(),
  },
  nodes: [node({ name: "ranked", sql: "SELECT product_id, sum(quantity) AS total_quantity, sum(price * quantity) AS total_revenue FROM ecommerce_events GROUP BY product_id" })],
  output: { product_id: t.string(), total_quantity: t.int64(), total_revenue: t.float64() },
});
const typed = () => new Tinybird({ datasources: { ecommerceEvents }, pipes: { topProducts }, baseUrl, token });

const operations = {
  typedIngestBatch: ({ events }) => typed().ecommerceEvents.ingestBatch(events),
  typedQuery: ({ params }) => typed().topProducts.query(params),
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
