"""A real gRPC server (grpcio) for Pylon's tests, on raw bytes (no protobuf):
/echo.Echo/Say answers b"echo:" + the request, with trailing metadata x-served-by: grpcio;
/echo.Echo/Fail fails with NOT_FOUND "no such thing" and no message (a trailers-only answer).
Usage: grpc_server.py PORT
"""
import sys
from concurrent import futures

import grpc


def say(request, context):
    context.set_trailing_metadata((("x-served-by", "grpcio"),))
    return b"echo:" + request


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


handler = grpc.method_handlers_generic_handler(
    "echo.Echo",
    {"Say": grpc.unary_unary_rpc_method_handler(say), "Fail": grpc.unary_unary_rpc_method_handler(fail)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
if server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}") == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}")
server.start()
print("ready", flush=True)
server.wait_for_termination()
