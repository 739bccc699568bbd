"""The Python runtime's Flask app served by waitress instead of server.py's own server: the
alternative bench.py measures it against. Not used in production.

    pip install --no-deps --target /tmp/waitress-vendor waitress==3.0.2
    WAITRESS_PATH=/tmp/waitress-vendor python3 -I -S bench/waitress_server.py

Same launch contract as server.py (FISSION_LISTEN_FD, else PORT; the "listening on" line).
"""

import os
import socket
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, os.environ.get("WAITRESS_PATH") or "/nonexistent")

import server  # noqa: E402  (the runtime: loader and Flask app; its main() is not run)
import waitress.server  # noqa: E402


def main():
    if server.LISTEN_FD:
        sock = socket.socket(fileno=int(server.LISTEN_FD))
    else:
        sock = socket.create_server((server.HOST, server.PORT), backlog=1024)
    srv = waitress.server.create_server(
        server.app,
        sockets=[sock],
        threads=int(os.environ.get("WAITRESS_THREADS") or 4),
        channel_timeout=server.KEEPALIVE_TIMEOUT,
        max_request_body_size=server.BODY_LIMIT,
        # Flush every write, as server.py does, so streamed bodies are not held back.
        send_bytes=1,
        ident=None,
    )
    host, port = sock.getsockname()[:2]
    print("fission-rs python runtime (waitress) listening on {}:{}".format(host, port))
    srv.run()


if __name__ == "__main__":
    main()
