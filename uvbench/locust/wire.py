"""Messages between a locust process and its call engine: length-prefixed pickles on a socket.

One format for both ends: the locust side reads and writes with gevent's cooperative socket, the
engine with a plain blocking one in its reader and sender threads, so neither needs the other's
event loop. Both ends are the same user's processes on one machine (a socketpair), which is why
pickle is acceptable here.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!Q")


class Closed(EOFError):
    """The other end closed the socket (or died)."""


def send(sock: socket.socket, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise Closed("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_exactly(sock, _HEADER.size))
    return pickle.loads(_exactly(sock, size))
