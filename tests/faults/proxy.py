"""A TCP proxy on 127.0.0.1 for network-partition tests: forwards bytes both ways until `blackhole()`.

While blackholed it reads and discards everything in both directions and propagates no close: neither side
gets a FIN or RST, exactly like a cable pulled somewhere between them; only keepalives can notice.
New connections are accepted and swallowed the same way. `heal()` forwards again; connections that lived
through the partition have lost bytes mid-stream, so they are torn down then (as a stateful firewall that
forgot the flow would do), and clients reconnect over fresh ones.
"""

from __future__ import annotations

import selectors
import socket
import threading


class PartitionProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket | None] = {}
        self._tainted: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._black = False
        self._stop = False
        self.connections = 0
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._loop, name="partition-proxy", daemon=True)
        self._thread.start()

    def blackhole(self) -> None:
        with self._lock:
            self._black = True

    def heal(self) -> None:
        with self._lock:
            self._black = False
            tainted, self._tainted = self._tainted, set()
        for s in tainted:
            self._close(s)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for s in list(self._peer):
            self._close(s)
        self._listener.close()

    # -- the loop ------------------------------------------------------------------------------------
    def _close(self, s: socket.socket) -> None:
        with self._lock:
            peer = self._peer.pop(s, None)
            if peer is not None:
                self._peer.pop(peer, None)
        for sock in (s, peer):
            if sock is None:
                continue
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        with self._lock:
            black = self._black
        upstream = None
        if not black:
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                client.close()
                return
        with self._lock:
            self._peer[client] = upstream
            if upstream is not None:
                self._peer[upstream] = client
            else:
                self._tainted.add(client)
        self._sel.register(client, selectors.EVENT_READ, None)
        if upstream is not None:
            self._sel.register(upstream, selectors.EVENT_READ, None)

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.1):
                s = key.fileobj
                if s is self._listener:
                    self._accept()
                    continue
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    black = self._black
                    peer = self._peer.get(s)
                    if black:
                        self._tainted.add(s)
                if black:
                    self.dropped_bytes += len(data)
                    if not data:  # a close during the partition reaches nobody
                        try:
                            self._sel.unregister(s)
                        except (KeyError, ValueError):
                            pass
                    continue
                if not data or peer is None:
                    self._close(s)
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    self._close(s)
