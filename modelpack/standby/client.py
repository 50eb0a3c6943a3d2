"""The executable's side: hand a command to the standby process and wait for its exit status.

Standard library only and nothing of modelpack's stages: when no standby process answers,
asking costs a connect that fails. Until the standby process has accepted the command nothing
has run, so any failure up to then means "run it here instead". After that, this process
stands in for the command: signals it gets go to the command (Ctrl-C to the command's whole
process group, as a terminal sends it), hidden prompts are asked here, on this terminal, and it
ends with the command's exit status, or by the signal that ended the command.
"""

from __future__ import annotations

import os
import sys

from modelpack.standby import place, wire
from modelpack.standby.wire import RELAYED, signals

TYPE_CHECKING = False  # typing's flag without importing typing (the executable's start)
if TYPE_CHECKING:
    from typing import Any

    from modelpack.standby.wire import Socket


def connect() -> Socket | None:
    """A connection to this installation's standby process, or None when none listens."""
    root = place.private_folder(create=False)
    if root is None:
        return None
    return wire.connect(place.socket_path(root, place.installation_key()))


def ask(message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
    """One question (status, stop) and its answer; None when no standby process answers."""
    sock = connect()
    if sock is None:
        return None
    try:
        sock.settimeout(timeout)
        wire.send(sock, message)
        answer, _ = wire.receive(sock)
    except (OSError, wire.WireError):
        return None
    finally:
        sock.close()
    return answer


def call(argv: list[str]) -> int | None:
    """Run `modelpack ARGV` in the standby process: its exit status, None when none took it.
    `modelpack standby ...` itself runs here: its status would otherwise count itself."""
    if next((a for a in argv if not a.startswith("-")), None) == "standby":
        return None
    sock = connect()
    if sock is None:
        return None
    try:
        return _hand_over(sock, {"kind": "run", "argv": argv, "env": dict(os.environ)})
    finally:
        sock.close()


def _hand_over(sock: Socket, request: dict[str, Any]) -> int | None:
    """Send the command with this process's state and standard streams; follow it once accepted."""
    streams = _standard_streams()
    try:
        request["cwd"] = os.getcwd()
        request["umask"] = _umask()
        request["streams"] = [_stream_settings(s) for s in (sys.stdin, sys.stdout, sys.stderr)]
        wire.send(sock, request, [fd for fd, _ in streams])
        answer, _ = wire.receive(sock)
    except (OSError, wire.WireError):
        return None  # nothing ran
    finally:
        for fd, opened in streams:
            if opened:
                os.close(fd)
    if answer is None or answer.get("kind") != "accepted":
        return None
    return _follow(sock)


def _follow(sock: Socket) -> int:
    def relay(signum: int, frame: object) -> None:
        try:
            wire.send(sock, {"kind": "signal", "signal": signum})
        except OSError:
            pass

    for signum in RELAYED:
        signals.signal(signum, relay)
    while True:
        try:
            message, _ = wire.receive(sock)
        except (OSError, wire.WireError):
            message = None
        if message is None:
            sys.stderr.write("modelpack: the standby process ended without the command's exit status\n")
            return 1
        kind = message.get("kind")
        if kind == "prompt":
            wire.send(sock, _prompt(message))
        elif kind == "exit":
            number = message.get("signal")
            if isinstance(number, int) and number > 0:
                _end_by(number)
                return 128 + number
            code = message.get("code")
            return code if isinstance(code, int) else 1


def _prompt(message: dict[str, Any]) -> dict[str, Any]:
    """A hidden prompt asked on this terminal: the command's process has none of its own."""
    import getpass

    try:
        return {"kind": "answer", "text": getpass.getpass(str(message.get("text", "")))}
    except (EOFError, KeyboardInterrupt):
        return {"kind": "answer", "eof": True}


def _end_by(number: int) -> None:
    """End as the command ended; a signal whose action cannot be set (SIGKILL) ends it too."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        signals.signal(number, signals.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), number)


def _standard_streams() -> list[tuple[int, bool]]:
    """Descriptors 0-2, with /dev/null standing in for a closed one (and then closed after)."""
    found = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            found.append((fd, False))
        except OSError:
            found.append((os.open(os.devnull, os.O_RDWR), True))
    return found


def _stream_settings(stream: Any) -> dict[str, str]:
    return {
        "encoding": getattr(stream, "encoding", None) or "utf-8",
        "errors": getattr(stream, "errors", None) or "strict",
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


__all__ = ["RELAYED", "ask", "call", "connect"]
