// Service invocation through the official JavaScript SDK (`@dapr/dapr`), with its HTTP client
// (`/v1.0/invoke`, custom headers and a query string) and its gRPC client (`InvokeService`).
// Env as sidecar/tests/sdk/py_invoke.py (DAPRS_CALLER, DAPRS_TARGETS, DAPR_HTTP_PORT,
// DAPR_GRPC_PORT). The apps echo what they received; the checks are on what they saw.
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(process.env.DAPRS_JS_MODULES + "/");
const { DaprClient, CommunicationProtocolEnum, HttpMethod } = require("@dapr/dapr");

const CALLER = process.env.DAPRS_CALLER;
const TARGETS = process.env.DAPRS_TARGETS.split(",").map((t) => t.split("="));
const BODY = { n: 1, s: "ü" };

function stamps(appId, seen, where) {
  const one = (v) => (Array.isArray(v) ? v[0] : v);
  assert.equal(one(seen["dapr-caller-app-id"]), CALLER, where);
  assert.equal(one(seen["dapr-callee-app-id"]), appId, where);
  assert.equal(one(seen["dapr-caller-namespace"]), "default", where);
  assert.equal(seen["dapr-app-id"], undefined, where);
  assert.equal(seen["destination-app-id"], undefined, where);
}

for (const [name, protocol, port] of [
  ["http", CommunicationProtocolEnum.HTTP, process.env.DAPR_HTTP_PORT],
  ["grpc", CommunicationProtocolEnum.GRPC, process.env.DAPR_GRPC_PORT],
]) {
  const client = new DaprClient({ daprHost: "127.0.0.1", daprPort: port, communicationProtocol: protocol });
  for (const [appId, kind] of TARGETS) {
    for (const verb of [HttpMethod.PUT, HttpMethod.POST]) {
      const where = `js ${name} -> ${appId} (${kind}) ${verb}`;
      // The gRPC client has no headers or query string; the HTTP one carries both.
      const got =
        name === "http"
          ? await client.invoker.invoke(appId, "echo?q=1&r=two", verb, BODY, { headers: { "x-custom": "js-http" } })
          : await client.invoker.invoke(appId, "echo", verb, BODY);
      assert.equal(got.app, kind, where);
      assert.equal(got.verb, verb.toUpperCase(), where);
      if (kind === "py-grpc") {
        assert.equal(got.method, "echo", where);
        assert.equal(got.content_type, "application/json", where);
        assert.deepEqual(JSON.parse(got.data), BODY, where);
        assert.equal(got.query, name === "http" ? "q=1&r=two" : "", where);
        stamps(appId, got.metadata, where);
        if (name === "http") {
          assert.deepEqual(got.metadata["x-custom"], ["js-http"], where);
          assert.deepEqual(got.metadata["dapr-content-type"], ["application/json"], where);
        }
      } else if (kind === "js-http") {
        assert.equal(got.query, name === "http" ? "/echo?q=1&r=two" : "/echo", where);
        assert.deepEqual(JSON.parse(got.body), BODY, where);
        assert.equal(got.contentType, "application/json", where);
        stamps(appId, got.headers, where);
        if (name === "http") assert.equal(got.headers["x-custom"], "js-http", where);
      } else if (kind === "js-grpc") {
        assert.equal(got.query, name === "http" ? "q=1&r=two" : "", where);
        assert.deepEqual(JSON.parse(got.body), BODY, where);
        assert.equal(got.contentType, "application/json", where);
      } else {
        assert.fail(`unknown app kind ${kind}`);
      }
      console.log(`ok: ${where}`);
    }
  }
  await client.stop();
}
console.log("js sdk invoke: all checks passed");
