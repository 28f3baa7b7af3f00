// State and secrets through the official JavaScript SDK (`npm install @dapr/dapr`) against
// daprs' daprd, over HTTP. Run by sidecar/tests/sdk.rs; any failed check exits non-zero.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(process.env.DAPRS_JS_MODULES + "/");
const { DaprClient, CommunicationProtocolEnum } = require("@dapr/dapr");

const client = new DaprClient({
  daprHost: "127.0.0.1",
  daprPort: process.env.DAPR_HTTP_PORT,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
});
const STORE = "statestore";

// The SDK reports some failures by rejecting and others by resolving to `{ error }`.
async function fails(promise) {
  try {
    const result = await promise;
    return Boolean(result && result.error);
  } catch {
    return true;
  }
}

await client.state.save(STORE, [{ key: "js-1", value: { id: 1 } }, { key: "js-2", value: "two" }]);
assert.deepEqual(await client.state.get(STORE, "js-1"), { id: 1 });
const bulk = await client.state.getBulk(STORE, ["js-1", "js-2"]);
assert.equal(bulk.length, 2);
assert.deepEqual(bulk.find((i) => i.key === "js-2").data, "two");

assert.ok(await fails(client.state.save(STORE, [{ key: "js-1", value: 2, etag: "stale" }])), "ETag conflict");

await client.state.transaction(STORE, [
  { operation: "upsert", request: { key: "js-3", value: "three" } },
  { operation: "delete", request: { key: "js-2" } },
]);
assert.equal(await client.state.get(STORE, "js-3"), "three");
assert.equal(await client.state.get(STORE, "js-2"), "");

await client.state.delete(STORE, "js-3");
assert.equal(await client.state.get(STORE, "js-3"), "");

await client.state.save(STORE, [{ key: "js-ttl", value: "x", metadata: { ttlInSeconds: "1" } }]);
await new Promise((r) => setTimeout(r, 2200));
assert.equal(await client.state.get(STORE, "js-ttl"), "");

assert.deepEqual(await client.secret.get("localsecrets", "db:password"), { "db:password": "s3cret" });
assert.ok(await fails(client.secret.get("localsecrets", "db:user")), "secret scope deny");
console.log("js sdk: all checks passed");
