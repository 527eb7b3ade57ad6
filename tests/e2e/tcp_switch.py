"""A TCP forwarder the apiserver reaches its store through, as it would a
load balancer or a DNS name: the store behind it can be switched while the
apiserver runs (a migration's cut-over without an apiserver restart)."""
from __future__ import annotations

import socket
import threading

from servers import free_port


class TCPSwitch:
    def __init__(self, upstream_port: int) -> None:
        self.upstream: int | None = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self.upstream
            if upstream is None:
                client.close()  # paused: the store is unreachable
                continue
            try:
                server = socket.create_connection(("127.0.0.1", upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                with self._lock:
                    self._conns.discard(s)

    def pause(self) -> None:
        """Cut every connection and refuse new ones."""
        self.upstream = None
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def switch(self, upstream_port: int) -> None:
        self.upstream = upstream_port

    def close(self) -> None:
        self._closed = True
        self.pause()
        self._listener.close()
