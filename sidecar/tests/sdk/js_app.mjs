// An app written with the official JavaScript SDK's DaprServer (`@dapr/dapr`), as an HTTP app
// (express) or a gRPC app (AppCallback), chosen by DAPRS_APP_PROTOCOL (http | grpc). Its PUT
// and POST handlers for `echo` answer with what they received, so the caller can check it on
// the receiving side: the verb (each verb has its own handler), body, query, content type and,
// for the HTTP app, every request header (the SDK's gRPC server hands no metadata to handlers).
// Env: APP_PORT (the app's port), DAPR_HTTP_PORT / DAPR_GRPC_PORT (its daprd).
import { createRequire } from "node:module";

const require = createRequire(process.env.DAPRS_JS_MODULES + "/");
const { DaprServer, CommunicationProtocolEnum, HttpMethod } = require("@dapr/dapr");

const grpc = process.env.DAPRS_APP_PROTOCOL === "grpc";
const kind = grpc ? "js-grpc" : "js-http";
const server = new DaprServer({
  serverHost: "127.0.0.1",
  serverPort: process.env.APP_PORT,
  communicationProtocol: grpc ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
  clientOptions: {
    daprHost: "127.0.0.1",
    daprPort: grpc ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
  },
});

for (const verb of [HttpMethod.PUT, HttpMethod.POST]) {
  await server.invoker.listen(
    "echo",
    async (data) => ({
      app: kind,
      verb: verb.toUpperCase(),
      body: data.body,
      query: data.query,
      contentType: data.metadata?.contentType,
      headers: data.headers ?? null,
    }),
    { method: verb },
  );
}
await server.start();
console.log(`${kind} app listening`);
process.on("SIGTERM", async () => {
  await server.stop();
  process.exit(0);
});
