"""Service invocation through the official Python SDK (`pip install dapr`), over both of its
invocation protocols: HTTP (`/v1.0/invoke`, the SDK's default) and gRPC (`InvokeService`).

Env: DAPR_HTTP_PORT / DAPR_GRPC_PORT (the caller's daprd), DAPRS_CALLER (its app id),
DAPRS_TARGETS ("<app-id>=<kind>,..." with kind py-grpc, js-http or js-grpc: the apps in
sidecar/tests/sdk/, each behind its own daprd). The apps echo what they received; every check
here is on what the receiving side saw. Run by sidecar/tests/sdk_invoke.rs; exits non-zero on
the first failed check.
"""

import json
import os
import urllib.error
import urllib.request
import warnings

import grpc
from dapr.clients import DaprClient
from dapr.conf import settings

warnings.simplefilter("ignore", DeprecationWarning)  # gRPC invocation is deprecated in the SDK

CALLER = os.environ["DAPRS_CALLER"]
TARGETS = [t.split("=") for t in os.environ["DAPRS_TARGETS"].split(",")]
BODY = b'{"n": 1}'
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def check_stamps(app_id, seen, where):
    """The caller-side stamps Dapr adds, and the routing keys it never forwards."""
    assert seen.get("dapr-caller-app-id") in ([CALLER], CALLER), (where, seen)
    assert seen.get("dapr-callee-app-id") in ([app_id], app_id), (where, seen)
    assert seen.get("dapr-caller-namespace") in (["default"], "default"), (where, seen)
    assert "dapr-app-id" not in seen and "destination-app-id" not in seen, (where, seen)


def check(protocol, app_id, kind, verb, resp):
    where = f"{protocol} -> {app_id} ({kind}) {verb}"
    got = json.loads(resp.data)
    assert got["app"] == kind, (where, got)
    assert got["verb"] == verb, (where, got)
    if kind == "py-grpc":
        assert got["method"] == "echo", (where, got)
        assert got["query"] == "q=1&r=two", (where, got)
        assert got["content_type"] == "application/json", (where, got)
        assert got["data"] == BODY.decode(), (where, got)
        md = got["metadata"]
        assert md.get("x-custom") == [f"py-{protocol}"], (where, md)
        check_stamps(app_id, md, where)
        # The W3C trace context reaches the gRPC app (its grpc-trace-bin twin is checked in
        # tests/trace_context.rs: grpcio consumes that key and never shows it to the app).
        assert md.get("traceparent") == [TRACEPARENT], (where, md)
        if protocol == "http":
            # HTTP standard headers reach a gRPC app with a dapr- prefix.
            assert md.get("dapr-content-type") == ["application/json"], (where, md)
            assert "content-type" not in md or md["content-type"] == ["application/grpc"], (where, md)
        headers = {k.lower(): v for k, v in dict(resp.headers).items()}
        reply = headers.get("x-app-reply")
        assert reply in ("py-grpc", ["py-grpc"]), (where, resp.headers)
    elif kind == "js-http":
        assert got["query"] == "/echo?q=1&r=two", (where, got)
        assert json.loads(got["body"]) == json.loads(BODY), (where, got)
        assert got["contentType"] == "application/json", (where, got)
        h = got["headers"]
        assert h.get("x-custom") == f"py-{protocol}", (where, h)
        assert h.get("traceparent") == TRACEPARENT, (where, h)
        check_stamps(app_id, h, where)
    elif kind == "js-grpc":
        assert got["query"] == "q=1&r=two", (where, got)
        assert json.loads(got["body"]) == json.loads(BODY), (where, got)
        assert got["contentType"] == "application/json", (where, got)
    else:
        raise AssertionError(f"unknown app kind {kind}")
    print(f"ok: {where}", flush=True)


for protocol in ("http", "grpc"):
    settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = protocol
    with DaprClient() as d:
        for app_id, kind in TARGETS:
            for verb in ("PUT", "POST"):
                resp = d.invoke_method(
                    app_id,
                    "echo",
                    data=BODY,
                    content_type="application/json",
                    metadata=(("x-custom", f"py-{protocol}"), ("traceparent", TRACEPARENT)),
                    http_verb=verb,
                    http_querystring=(("q", "1"), ("r", "two")),
                )
                check(protocol, app_id, kind, verb, resp)
            if kind == "py-grpc":
                # A gRPC status from the app reaches the caller: NOT_FOUND, or 404 over HTTP.
                try:
                    d.invoke_method(app_id, "fail", data=b"", http_verb="POST")
                except Exception as err:  # DaprGrpcError / DaprHttpError
                    if protocol == "grpc":
                        assert err.code() == grpc.StatusCode.NOT_FOUND, (protocol, err)
                        assert "no such order" in str(err), (protocol, err)
                    else:
                        assert "HTTP status code: 404" in str(err), (protocol, err)
                else:
                    raise AssertionError(f"{protocol}: the app's NOT_FOUND was not reported")
                print(f"ok: {protocol} -> {app_id} error status", flush=True)

# The HTTP body behind the SDK's 404: the app's gRPC Status as JSON.
for app_id, kind in TARGETS:
    if kind == "py-grpc":
        url = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0/invoke/{app_id}/method/fail"
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"))
        except urllib.error.HTTPError as err:
            assert err.code == 404, err
            status = json.loads(err.read())
            assert status["code"] == 5 and status["message"] == "no such order", status
        else:
            raise AssertionError("the app's NOT_FOUND was not reported over HTTP")

print("python sdk invoke: all checks passed")
