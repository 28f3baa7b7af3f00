"""State and secrets through the official Python SDK (`pip install dapr`) against daprs' daprd.

Run by sidecar/tests/sdk.rs with DAPR_HTTP_PORT and DAPR_GRPC_PORT pointing at daprd.
Every check raises on failure; the process exits non-zero.
"""

import json
import os
import time
import urllib.request

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._state import StateItem  # noqa: F401  (import path used by apps)
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType

STORE = "statestore"
SECRETS = "localsecrets"


def expect_grpc_error(code, call):
    try:
        call()
    except Exception as err:  # the SDK wraps grpc.RpcError in DaprGrpcError
        got = err.code() if hasattr(err, "code") else None
        assert got == code, f"expected {code}, got {got}: {err}"
        return err
    raise AssertionError(f"expected a {code} error")


with DaprClient() as d:
    d.save_state(STORE, "order-1", json.dumps({"id": 1}))
    got = d.get_state(STORE, "order-1")
    assert json.loads(got.data) == {"id": 1}, got.data
    assert got.etag, "an ETag is returned"

    d.save_state(STORE, "order-1", "v2", etag=got.etag)
    expect_grpc_error(grpc.StatusCode.ABORTED, lambda: d.save_state(STORE, "order-1", "v3", etag=got.etag))

    d.save_state(STORE, "order-2", "two")
    bulk = d.get_bulk_state(STORE, keys=["order-1", "order-2", "nope"], parallelism=2).items
    assert [i.key for i in bulk] == ["order-1", "order-2", "nope"], bulk
    assert bulk[1].data == b"two" and bulk[2].data == b"", bulk

    d.delete_state(STORE, "order-2")
    assert d.get_state(STORE, "order-2").data == b""

    d.execute_state_transaction(
        STORE,
        operations=[
            TransactionalStateOperation(key="tx-1", data="a", operation_type=TransactionOperationType.upsert),
            TransactionalStateOperation(key="order-1", data="", operation_type=TransactionOperationType.delete),
        ],
    )
    assert d.get_state(STORE, "tx-1").data == b"a"
    assert d.get_state(STORE, "order-1").data == b""

    d.save_state(STORE, "short-lived", "x", state_metadata={"ttlInSeconds": "1"})
    assert d.get_state(STORE, "short-lived").data == b"x"
    time.sleep(2.2)
    assert d.get_state(STORE, "short-lived").data == b"", "TTL expired"

    err = expect_grpc_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: d.get_state(STORE, "bad||key"))
    assert err.error_code() == "DAPR_STATE_ILLEGAL_KEY", err.error_code()

    secret = d.get_secret(SECRETS, "db:password").secret
    assert secret == {"db:password": "s3cret"}, secret
    expect_grpc_error(grpc.StatusCode.PERMISSION_DENIED, lambda: d.get_secret(SECRETS, "db:user"))
    assert "db:password" in d.get_bulk_secret(SECRETS).secrets

# Plain HTTP too.
base = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0"
req = urllib.request.Request(f"{base}/state/{STORE}", data=b'[{"key":"h","value":{"via":"http"}}]', method="POST")
assert urllib.request.urlopen(req).status == 204
with urllib.request.urlopen(f"{base}/state/{STORE}/h") as r:
    assert json.loads(r.read()) == {"via": "http"}
print("python sdk: all checks passed")
