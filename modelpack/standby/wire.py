"""Messages between the executable and the standby process: length-prefixed JSON frames.

One frame may carry file descriptors (the caller's standard streams). Two processes write to
a client's connection, the child (its prompts) and then the server (the exit status, once the
child has ended), so their frames never interleave.

The executable imports this module before it knows whether a standby process answers, so it
uses the C modules under `socket`, `signal` and `json` (those import enum, selectors, array
and compile regular expressions as they load: a quarter of the hand-over's start). Where an
interpreter lacks one, the full module stands in; it has the same names.
"""

from __future__ import annotations

import os
import sys

try:
    import _socket as sockets
except ImportError:  # an interpreter without the C module
    import socket as sockets  # type: ignore[no-redef]
try:
    import _signal as signals
except ImportError:
    import signal as signals

TYPE_CHECKING = False  # typing's flag without importing typing (the executable's start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    Socket = sockets.socket

MAX_FRAME = 1 << 22  # an environment and an argument list fit many times over
MAX_FDS = 4  # a command's three standard streams, and its connection on the way to a spare child
RELAYED = (signals.SIGINT, signals.SIGTERM, signals.SIGHUP, signals.SIGQUIT)  # the caller passes these on
_HEAD = 4  # a frame's length, big-endian
_FD = 4  # a passed descriptor: a C int


# Called with the exit status by `exit_process` (a standby's child: the report to its caller).
BEFORE_EXIT: list[Callable[[int], None]] = []


def exit_process(code: int) -> NoReturn:
    """End the process at once (no interpreter teardown), after `BEFORE_EXIT`."""
    for report in BEFORE_EXIT:
        report(code)
    os._exit(code)


class WireError(Exception):
    """The other side sent something that is not a frame, or closed mid-frame."""


def connect(path: str) -> Socket | None:
    """A connection to the Unix socket at `path`, or None when nothing listens there."""
    sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def send(sock: Socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = _encode(message)
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    data = len(body).to_bytes(_HEAD, "big") + body
    if fds:
        rights = b"".join(fd.to_bytes(_FD, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([data], [(sockets.SOL_SOCKET, sockets.SCM_RIGHTS, rights)])
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def receive(sock: Socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """The next frame and the descriptors that came with it; (None, []) at a clean end."""
    fds: list[int] = []
    head = b""
    while len(head) < _HEAD:
        if with_fds and not head:
            chunk, ancillary, _, _ = sock.recvmsg(_HEAD, sockets.CMSG_SPACE(MAX_FDS * _FD))
            fds.extend(_passed(ancillary))
        else:
            chunk = sock.recv(_HEAD - len(head))
        if not chunk:
            if head or fds:
                _close(fds)
                raise WireError("connection closed inside a frame")
            return None, []
        head += chunk
    length = int.from_bytes(head, "big")
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
        message = _decode(body.decode("utf-8", "surrogateescape"))
    except ValueError as error:
        _close(fds)
        raise WireError(f"frame is not JSON: {error}") from error
    if not isinstance(message, dict):
        _close(fds)
        raise WireError("frame is not a JSON object")
    return message, fds


def _passed(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of SCM_RIGHTS messages (a partial trailing int is no descriptor)."""
    found = []
    for level, kind, data in ancillary:
        if level == sockets.SOL_SOCKET and kind == sockets.SCM_RIGHTS:
            whole = len(data) - len(data) % _FD
            found += [int.from_bytes(data[i : i + _FD], sys.byteorder) for i in range(0, whole, _FD)]
    return found


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class _Values:
    """What json's C scanner reads from a decoder: plain JSON values, as `json.loads` gives them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def _unencodable(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _c_json() -> tuple[Callable[[object, int], Any], Callable[[str, int], tuple[Any, int]]] | None:
    """json's C encoder (compact, ASCII, as `json.dumps(..., separators=(",", ":"))`) and
    scanner; None on an interpreter without them (or with other signatures)."""
    try:
        import _json

        encoder = _json.make_encoder(
            None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        return encoder, _json.make_scanner(_Values())  # type: ignore[arg-type]
    except (ImportError, AttributeError, TypeError):
        return None


_C_JSON = _c_json()


def _encode(message: dict[str, Any]) -> bytes:
    if _C_JSON is None:  # json's pure-Python half
        import json

        return json.dumps(message, separators=(",", ":")).encode("ascii")
    return "".join(_C_JSON[0](message, 0)).encode("ascii")


def _decode(text: str) -> object:
    """One JSON value filling `text`; ValueError otherwise."""
    if _C_JSON is None:  # json's pure-Python half
        import json

        return json.loads(text)
    try:
        value, end = _C_JSON[1](text, 0)
    except StopIteration as stop:
        raise ValueError(f"no value at character {stop.value}") from None
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


__all__ = ["MAX_FRAME", "RELAYED", "WireError", "connect", "receive", "send"]
