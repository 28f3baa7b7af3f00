"""A gRPC app (`--app-protocol grpc`) written with the official Python SDK's AppCallback servicer
(`dapr.proto.runtime.v1.appcallback_pb2_grpc`) on grpcio. `OnInvoke` answers with what it
received, as JSON (method, verb, query string, content type, data, the gRPC metadata), and sends
the response header `x-app-reply: py-grpc`, so the caller can check both directions.

Usage: py_grpc_app.py <port>. Run by sidecar/tests/sdk_invoke.rs; stops on SIGTERM.
"""

import json
import signal
import sys
from concurrent import futures

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2_grpc
from google.protobuf import any_pb2

VERBS = {v: k for k, v in common_pb2.HTTPExtension.Verb.items()}


class App(appcallback_pb2_grpc.AppCallbackServicer):
    def OnInvoke(self, request, context):
        metadata = {}
        for key, value in context.invocation_metadata():
            metadata.setdefault(key, []).append(value if isinstance(value, str) else value.hex())
        if request.method == "fail":
            context.set_trailing_metadata((("x-fail-reason", "asked-to"),))
            context.abort(grpc.StatusCode.NOT_FOUND, "no such order")
        echo = {
            "app": "py-grpc",
            "method": request.method,
            "verb": VERBS.get(request.http_extension.verb, "?"),
            "query": request.http_extension.querystring,
            "content_type": request.content_type,
            "data": request.data.value.decode("utf-8", "replace"),
            "metadata": metadata,
        }
        context.send_initial_metadata((("x-app-reply", "py-grpc"),))
        return common_pb2.InvokeResponse(
            data=any_pb2.Any(value=json.dumps(echo).encode()),
            content_type="application/json",
        )


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(App(), server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    print("py-grpc app listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
