"""Messages between the executable and the standby process: length-prefixed JSON frames.

One frame may carry file descriptors (the caller's standard streams). Two processes write to
a client's connection, the child (its prompts) and then the server (the exit status, once the
child has ended), so their frames never interleave.
"""

from __future__ import annotations

import json
import os
import socket
import struct

TYPE_CHECKING = False  # typing's flag without importing typing (the executable's start)
if TYPE_CHECKING:
    from typing import Any

MAX_FRAME = 1 << 22  # an environment and an argument list fit many times over
MAX_FDS = 3
_LENGTH = struct.Struct(">I")


class WireError(Exception):
    """The other side sent something that is not a frame, or closed mid-frame."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8", "surrogateescape")
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    data = _LENGTH.pack(len(body)) + body
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def receive(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """The next frame and the descriptors that came with it; (None, []) at a clean end."""
    fds: list[int] = []
    head = b""
    while len(head) < _LENGTH.size:
        if with_fds and not head:
            chunk, got, _, _ = socket.recv_fds(sock, _LENGTH.size, MAX_FDS)
            fds.extend(got)
        else:
            chunk = sock.recv(_LENGTH.size - len(head))
        if not chunk:
            if head or fds:
                _close(fds)
                raise WireError("connection closed inside a frame")
            return None, []
        head += chunk
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        _close(fds)
        raise WireError(f"frame of {length} bytes is over the {MAX_FRAME}-byte limit")
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 16))
        if not chunk:
            _close(fds)
            raise WireError("connection closed inside a frame")
        body += chunk
    try:
        message = json.loads(body.decode("utf-8", "surrogateescape"))
    except ValueError as error:
        _close(fds)
        raise WireError(f"frame is not JSON: {error}") from error
    if not isinstance(message, dict):
        _close(fds)
        raise WireError("frame is not a JSON object")
    return message, fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


__all__ = ["MAX_FRAME", "WireError", "receive", "send"]
