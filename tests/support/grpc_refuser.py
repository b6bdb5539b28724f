"""A gRPC server that refuses every call with one status code: Pub/Sub's answer to a caller whose
credentials it does not accept (the emulator checks none)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc


class _Refuse(grpc.GenericRpcHandler):
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(self.code, f"refused by the test ({self.code.name})")

        return grpc.unary_unary_rpc_method_handler(refuse)


@contextlib.contextmanager
def refusing_server(code: grpc.StatusCode) -> Iterator[str]:
    """Serve on a free local port; yield its ``host:port``."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([_Refuse(code)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)
