"""A TCP proxy the test owns between the server and PostgreSQL, to cut and stall the link.

`cut()` closes every connection and refuses new ones (accepted, then closed at once);
`stall()` keeps every connection open but forwards nothing in either direction, and new
connections are accepted and left hanging — the fault no TCP keepalive detects;
`restore()` forwards normally again (connections cut or stalled meanwhile stay dead).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["pass", "cut", "stall"]


class PgProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._mode: Mode = "pass"
        self._changed = threading.Condition()
        self._generation = 0  # bumped by cut and stall: sockets of an older generation are dead
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="pg-proxy-accept", daemon=True).start()

    @property
    def mode(self) -> Mode:
        return self._mode

    def _set(self, mode: Mode) -> None:
        with self._changed:
            self._mode = mode
            if mode != "pass":
                self._generation += 1
            self._changed.notify_all()
        if mode == "cut":
            self._close_all()

    def cut(self) -> None:
        self._set("cut")

    def stall(self) -> None:
        self._set("stall")

    def restore(self) -> None:
        self._set("pass")

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _wait_for_pass(self, generation: int) -> bool:
        """Blocks while stalled; False when this connection's generation is dead."""
        with self._changed:
            while self._mode == "stall" and self._generation == generation:
                self._changed.wait()
            return self._mode == "pass" and self._generation == generation

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        with self._changed:
            generation = self._generation
            mode = self._mode
        if mode == "cut":
            client.close()
            return
        if mode == "stall":
            # Accept, forward nothing; the connection never reaches PostgreSQL.
            with self._changed:
                while self._generation == generation and self._mode == "stall" and not self._closed:
                    self._changed.wait(0.5)
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        self._track(upstream)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target, generation), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, generation: int) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or not self._wait_for_pass(generation):
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
