"""A plain gRPC app on grpcio (from the Python SDK's virtualenv) for the gRPC proxying test,
with no .proto: a generic handler serves `daprs.test.Echo` on raw bytes.

- `Say` (unary): answers JSON {"body", "metadata"} with what it received; sends the response
  header `x-app-header: h` and the trailer `x-app-trailer: t`.
- `Fail` (unary): NOT_FOUND "order 7 not found" with the trailer `x-why: gone`.
- `Count` (server streaming): the request is a number n; answers "0" .. "n-1".
- `Chat` (bidirectional): answers every message with "echo:<message>" as it arrives.
- `Secret` (unary): answers "secret" (an ACL in the test denies it).

Usage: grpc_echo_app.py <port>. Run by sidecar/tests/grpc_proxy.rs; stops on SIGTERM.
"""

import json
import signal
import sys
from concurrent import futures

import grpc


def metadata_of(context):
    md = {}
    for key, value in context.invocation_metadata():
        md.setdefault(key, []).append(value if isinstance(value, str) else value.hex())
    return md


def say(request, context):
    context.send_initial_metadata((("x-app-header", "h"),))
    context.set_trailing_metadata((("x-app-trailer", "t"),))
    return json.dumps({"body": request.decode(), "metadata": metadata_of(context)}).encode()


def fail(request, context):
    context.set_trailing_metadata((("x-why", "gone"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "order 7 not found")


def count(request, context):
    for i in range(int(request.decode())):
        yield str(i).encode()


def chat(requests, context):
    for message in requests:
        yield b"echo:" + message


def secret(request, context):
    return b"secret"


def main():
    handler = grpc.method_handlers_generic_handler(
        "daprs.test.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Secret": grpc.unary_unary_rpc_method_handler(secret),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    print("grpc echo app listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
