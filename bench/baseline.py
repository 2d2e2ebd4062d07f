"""The gRPC floor every benchmark compares against: a bare echo server in its own process."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
import numpy as np

ECHO_METHOD = "/bench.Echo/Echo"


def _echo_main(port: Any, stop: Any, max_workers: int) -> None:
    """A bare gRPC server that answers every call with the bytes it received."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    server.add_generic_rpc_handlers((handler,))
    port.value = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop.wait()
    server.stop(0)


class EchoServer:
    """The echo server in a spawned process, so that it shares no GIL with the client."""

    def __init__(self, max_workers: int = 16):
        context = multiprocessing.get_context("spawn")
        self._port, self._stop = context.Value("i", 0), context.Event()
        self._process = context.Process(target=_echo_main, args=(self._port, self._stop, max_workers))
        self._process.start()
        while self._port.value == 0:
            time.sleep(0.05)
        self.target = f"127.0.0.1:{self._port.value}"

    def stop(self) -> None:
        self._stop.set()
        self._process.join()


def latencies(call: Callable[[Any], Any], requests: Sequence[Any]) -> np.ndarray:
    """Seconds per sequential call, after a warm-up on the first requests."""
    for request in requests[:200]:
        call(request)
    out = np.empty(len(requests))
    for index, request in enumerate(requests):
        started = time.perf_counter()
        call(request)
        out[index] = time.perf_counter() - started
    return out
