"""The standby process: one loop that accepts commands and forks a child for each.

The parent never runs a command; it only imports, so every child starts from the same state a
fresh `modelpack` process would reach after its imports. A child takes the caller's standard
streams, environment, working folder and umask, and puts itself in a process group of its own
so that a relayed Ctrl-C reaches the command's subprocesses too, as a terminal's would. The
parent learns of a child's end from its pidfd and sends the exit status to the caller. A
caller that goes away ends its command as SIGTERM would. One process per installation (a lock
file); it ends after `idle_timeout` seconds without a command, or when asked to stop.
"""

from __future__ import annotations

import fcntl
import gc
import os
import queue
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelpack.standby import place, wire

_PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid
_REQUEST_SECONDS = 5.0  # a caller has this long to send its command (and a spare to take it)
_TAKEN = b"\1"  # a spare child's answer to its command: from now on the command runs


class StandbyError(Exception):
    """The standby process cannot start: another runs, or its folder is not private."""


@dataclass(frozen=True)
class StandbyOptions:
    idle_timeout: float = 900.0  # seconds without a command before the process ends


@dataclass(frozen=True)
class Request:
    """What a caller hands over: the command line and the process state it runs in."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    umask: int
    streams: list[dict[str, str]]

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Request:
        argv, env, cwd, umask = (
            message.get("argv"),
            message.get("env"),
            message.get("cwd"),
            message.get("umask"),
        )
        streams = message.get("streams")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise wire.WireError("argv must be a list of strings")
        if not (
            isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise wire.WireError("env must map strings to strings")
        if not isinstance(cwd, str) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise wire.WireError("cwd must be a string and umask a permission mask")
        if not (
            isinstance(streams, list) and len(streams) == 3 and all(isinstance(s, dict) for s in streams)
        ):
            raise wire.WireError("streams must describe the three standard streams")
        settings = [
            {"encoding": str(s.get("encoding", "utf-8")), "errors": str(s.get("errors", "strict"))}
            for s in streams
        ]
        return cls(argv, env, cwd, umask, settings)


class Channel:
    """A child's line to its caller: relayed signals in, hidden prompts out and answers in."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        """The reader thread starts now; a spare child makes its channel before its command
        comes (a thread's start is most of a millisecond) and attaches the connection then."""
        self._attached: queue.Queue[socket.socket] = queue.Queue(1)
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ending = False
        threading.Thread(target=self._read, name="modelpack-standby", daemon=True).start()
        if sock is not None:
            self.attach(sock)

    def attach(self, sock: socket.socket) -> None:
        self._sock = sock
        self._attached.put(sock)

    def report_exit(self, code: int) -> None:
        """The command ends with `code`: its caller hears it now, with the standard streams closed,
        instead of once the kernel has torn this large process down (1-3 ms); the standby's own
        report after that finds the caller gone, or is not read."""
        self._ending = True
        for fd in (0, 1, 2):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            wire.send(self._sock, {"kind": "exit", "code": code & 0xFF})
        except OSError:
            pass

    def ask(self, text: str) -> str:
        """A hidden prompt, asked on the caller's terminal."""
        wire.send(self._sock, {"kind": "prompt", "text": text})
        answer = self._answers.get()
        if answer is None or answer.get("eof") or not isinstance(answer.get("text"), str):
            raise EOFError
        return str(answer["text"])

    def _read(self) -> None:
        sock = self._attached.get()
        while True:
            try:
                message, _ = wire.receive(sock)
            except (OSError, wire.WireError):
                message = None
            if message is None and self._ending:  # the caller has the exit status
                return
            if message is None:  # the caller is gone: end as SIGTERM would end the command
                self._answers.put(None)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if message.get("kind") == "answer":
                self._answers.put(message)
            elif message.get("kind") == "signal":
                _raise_here(message.get("signal"))


def _raise_here(number: object) -> None:
    if not isinstance(number, int) or number not in wire.RELAYED:
        return
    if number == signal.SIGTERM:
        os.kill(os.getpid(), number)  # a `kill` reaches the command alone
    else:
        os.killpg(os.getpgid(0), number)  # a terminal's key reaches the whole group


# What a child runs: the command, ending the process itself (it never returns normally).
Entry = Callable[[Request, Channel], None]


@dataclass
class _Child:
    pid: int
    conn: socket.socket


@dataclass
class _Spare:
    """A child forked ahead of the next command, its set-up done, waiting for that command."""

    pid: int
    pidfd: int
    control: socket.socket  # the parent's end: the command and its descriptors go through it


@dataclass
class _State:
    key: str
    options: StandbyOptions
    started: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    served: int = 0
    stopping: bool = False
    children: dict[int, _Child] = field(default_factory=dict)  # pidfd -> child
    own_files: list[Any] = field(default_factory=list)  # the parent's: a child closes them first
    socket_inode: int = 0  # of the socket file this process bound: removed only if still its own
    spare: _Spare | None = None


def serve(entry: Entry, options: StandbyOptions, ready: Callable[[Path], None] | None = None) -> None:
    """Accept commands until stopped or idle; `ready` is called once the socket listens."""
    _check_platform()
    found = place.private_folder(create=True)
    if found is None:
        raise StandbyError(f"{place.folder()} is not a folder of this user's alone")
    root, key = Path(found), place.installation_key()
    lock = _take_lock(root / f"{key}.lock")
    if lock is None:
        raise StandbyError("a standby process already runs for this installation")
    _sweep(root, key)
    path = Path(place.socket_path(found, key))
    path.unlink(missing_ok=True)  # left by one that was killed: the lock says none runs
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
    except OSError as error:  # e.g. a path over the 107 bytes a socket's name may have
        listener.close()
        lock.close()
        raise StandbyError(f"cannot listen on {path}: {error.strerror or error}") from error
    os.chmod(path, 0o600)
    listener.listen(64)
    listener.setblocking(False)
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
    state = _State(
        key, options, own_files=[lock, listener, wake_read, wake_write], socket_inode=path.stat().st_ino
    )
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listener")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    try:
        _spawn_spare(selector, state, entry)  # before callers come: its first collection is long
        if ready is not None:
            ready(path)
        _loop(selector, listener, path, wake_read, state, entry)
    finally:
        _retire_spare(selector, state)
        signal.set_wakeup_fd(old_wakeup)
        for number, handler in previous.items():
            signal.signal(number, handler)
        if listener.fileno() != -1:
            _unlisten(selector, listener, path, state.socket_inode)
        selector.close()
        wake_read.close()
        wake_write.close()
        lock.close()


def _take_lock(path: Path) -> IO[str] | None:
    """The lock of one installation's standby, held for the process's life; None when another
    holds it. A lock file removed by `_sweep` after it was opened here is not the lock: retry."""
    while True:
        lock = open(path, "a")  # kept open while the process runs
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                return lock
        except FileNotFoundError:
            pass
        lock.close()


def _sweep(root: Path, key: str) -> None:
    """Remove what standby processes of other installations (older code) left when they ended."""
    for other in root.glob("*.lock"):
        if other.stem == key:
            continue
        lock = _take_lock(other)
        if lock is None:
            continue  # that one still runs
        for suffix in (".sock", ".log"):
            other.with_suffix(suffix).unlink(missing_ok=True)
        other.unlink(missing_ok=True)  # while locked: whoever opened it before retries
        lock.close()


def _check_platform() -> None:
    """Linux 5.3 or later: the caller's uid comes from SO_PEERCRED, a child's end from its pidfd."""
    if not hasattr(socket, "SO_PEERCRED") or not hasattr(os, "pidfd_open"):
        raise StandbyError("a standby process needs Linux (SO_PEERCRED and pidfd_open)")
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as error:
        raise StandbyError(
            f"a standby process needs Linux 5.3 or later (pidfd_open: {error.strerror})"
        ) from error


def _loop(
    selector: selectors.BaseSelector,
    listener: socket.socket,
    path: Path,
    wake: socket.socket,
    state: _State,
    entry: Entry,
) -> None:
    """Serve until stopped or idle; `path` is where `listener` listens (removed when it stops)."""
    while True:
        if not state.children and (
            state.stopping or time.monotonic() - state.last_active > state.options.idle_timeout
        ):
            return
        if state.spare is None and not state.children and not state.stopping:
            _spawn_spare(selector, state, entry)
        timeout = (
            None
            if state.children
            else max(0.0, state.options.idle_timeout - (time.monotonic() - state.last_active))
        )
        for selected, _ in selector.select(timeout):
            if selected.data == "listener":
                _accept(selector, listener, state, entry)
                if state.stopping and listener.fileno() != -1:
                    _unlisten(selector, listener, path, state.socket_inode)
            elif selected.data == "wake":
                if _drain(wake) & {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} and listener.fileno() != -1:
                    state.stopping = True
                    _unlisten(selector, listener, path, state.socket_inode)
            elif selected.data == "spare":  # it ended before a command came: killed
                _retire_spare(selector, state)
            else:
                _reap(selector, selected.fd, state)


def _unlisten(selector: selectors.BaseSelector, listener: socket.socket, path: Path, inode: int) -> None:
    """Stop taking commands: callers from now on run theirs themselves."""
    selector.unregister(listener)
    try:
        if os.stat(path).st_ino == inode:
            path.unlink()
    except OSError:
        pass
    listener.close()


def _drain(wake: socket.socket) -> set[int]:
    numbers: set[int] = set()
    while True:
        try:
            data = wake.recv(64)
        except BlockingIOError:
            return numbers
        if not data:
            return numbers
        numbers.update(data)


def _accept(selector: selectors.BaseSelector, listener: socket.socket, state: _State, entry: Entry) -> None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    fds: list[int] = []
    try:
        conn.setblocking(True)
        conn.settimeout(_REQUEST_SECONDS)
        _, uid, _ = _PEER.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size))
        if uid != os.getuid():
            conn.close()
            return
        message, fds = wire.receive(conn, with_fds=True)
        kind = message.get("kind") if message else None
        if kind == "status":
            wire.send(conn, _status(state))
        elif kind == "stop":
            state.stopping = True
            wire.send(conn, {"kind": "stopping", "pid": os.getpid(), "commands_running": len(state.children)})
        elif kind == "run" and message is not None:
            _start(selector, conn, message, fds, state, entry)
            fds = []
            return  # the connection now belongs to the child and the exit report
        else:
            wire.send(conn, {"kind": "refused", "reason": f"unknown request {kind!r}"})
    except (OSError, wire.WireError):
        pass
    for fd in fds:
        os.close(fd)
    conn.close()


def _status(state: _State) -> dict[str, Any]:
    return {
        "kind": "status",
        "pid": os.getpid(),
        "key": state.key,
        "started": state.started,
        "commands_running": len(state.children),
        "spare": state.spare.pid if state.spare else None,  # the child the next command goes to
        "served": state.served,
        "idle_timeout": state.options.idle_timeout,
        "executable": sys.executable,
    }


def _start(
    selector: selectors.BaseSelector,
    conn: socket.socket,
    message: dict[str, Any],
    fds: list[int],
    state: _State,
    entry: Entry,
) -> None:
    try:
        if state.stopping:
            raise wire.WireError("the standby process is stopping")
        if len(fds) != 3:
            raise wire.WireError("a command needs its three standard streams")
        request = Request.parse(message)
        wire.send(conn, {"kind": "accepted", "pid": os.getpid()})
    except (OSError, wire.WireError) as error:
        try:
            wire.send(conn, {"kind": "refused", "reason": str(error)})
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    spare, state.spare = state.spare, None
    if spare is not None and _hand_to(spare, message, [conn.fileno(), *fds]):
        spare.control.close()
        pid, pidfd = spare.pid, spare.pidfd
        selector.modify(pidfd, selectors.EVENT_READ, "child")
    else:
        state.spare = spare
        _retire_spare(selector, state)  # if there was one, it did not take the command: killed
        pid = _fork(selector, state)
        if pid == 0:
            _child(request, conn, fds, entry, Channel())
        pidfd = os.pidfd_open(pid)
        selector.register(pidfd, selectors.EVENT_READ, "child")
    for fd in fds:
        os.close(fd)
    state.served += 1
    state.last_active = time.monotonic()
    state.children[pidfd] = _Child(pid, conn)


def _fork(selector: selectors.BaseSelector, state: _State) -> int:
    """Fork; in the child, drop what belongs to the parent (its signals, sockets, children).
    The parent's objects are frozen first: a collection in the child then leaves their pages
    shared instead of writing to every one of them."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        try:
            _leave_parent(selector, state)
        except BaseException as error:
            _give_up(error)
    return pid


def _spawn_spare(selector: selectors.BaseSelector, state: _State, entry: Entry) -> None:
    """Fork the next command's child now, while none runs, so that a command does not wait for
    the fork and the child's set-up."""
    ours, theirs = socket.socketpair()
    state.own_files.append(ours)  # the spare closes its copy with the parent's other files
    gc.collect()  # the frozen objects are skipped: only what the commands handled since is left
    try:
        pid = _fork(selector, state)
    except OSError:  # no spare then: a command is forked for when it comes
        pid = -1
    state.own_files.remove(ours)
    if pid == 0:
        _wait_as_spare(theirs, entry)
    theirs.close()
    if pid < 0:
        ours.close()
        return
    pidfd = os.pidfd_open(pid)
    selector.register(pidfd, selectors.EVENT_READ, "spare")
    state.spare = _Spare(pid, pidfd, ours)


def _hand_to(spare: _Spare, message: dict[str, Any], fds: list[int]) -> bool:
    """Give a command (its connection and standard streams) to the spare child; False when the
    child did not say it took it, e.g. it was killed as the command came: nothing has run."""
    try:
        spare.control.settimeout(_REQUEST_SECONDS)
        wire.send(spare.control, message, fds)
        return spare.control.recv(1) == _TAKEN
    except OSError:
        return False


def _retire_spare(selector: selectors.BaseSelector, state: _State) -> None:
    """End the waiting child (it has run nothing) and collect it."""
    spare, state.spare = state.spare, None
    if spare is None:
        return
    spare.control.close()
    try:
        os.kill(spare.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    selector.unregister(spare.pidfd)
    os.close(spare.pidfd)
    os.waitpid(spare.pid, 0)


def _wait_as_spare(control: socket.socket, entry: Entry) -> None:
    """In a spare child: wait for a command and run it; end when the parent closes its end."""
    try:
        channel = Channel()
        message, fds = wire.receive(control, with_fds=True)
        if message is None:
            os._exit(0)
        control.sendall(_TAKEN)
        control.close()
        request = Request.parse(message)
        conn = socket.socket(fileno=fds[0])
    except BaseException as error:
        _give_up(error)
    _child(request, conn, fds[1:], entry, channel)


def _reap(selector: selectors.BaseSelector, pidfd: int, state: _State) -> None:
    child = state.children.pop(pidfd)
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    report: dict[str, Any] = (
        {"kind": "exit", "code": code} if code >= 0 else {"kind": "exit", "signal": -code}
    )
    try:
        wire.send(child.conn, report)
    except OSError:
        pass  # the caller is gone
    child.conn.close()
    state.last_active = time.monotonic()


def _leave_parent(selector: selectors.BaseSelector, state: _State) -> None:
    """In a forked child: a process group of its own, default signals, none of the parent's files."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    selector.close()
    for pidfd, other in state.children.items():  # other callers see their command's end only
        os.close(pidfd)
        other.conn.close()
    if state.spare is not None:
        os.close(state.spare.pidfd)
        state.spare.control.close()
    for own in state.own_files:
        own.close()


def _child(request: Request, conn: socket.socket, fds: list[int], entry: Entry, channel: Channel) -> None:
    """In the forked child, once it has left the parent: become the caller's command, on its
    connection and standard streams (`fds`). Never returns."""
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        _take_environment(request.env)
        os.chdir(request.cwd)
        os.umask(request.umask)
        tempfile.tempdir = None  # found again from this caller's TMPDIR
        sys.argv = ["modelpack", *request.argv]
        _reopen_standard_streams(request.streams)
        conn.settimeout(None)
        channel.attach(conn)
        wire.BEFORE_EXIT.append(channel.report_exit)
        entry(request, channel)
    except BaseException as error:  # the child ends here, whatever happened
        _give_up(error)
    os._exit(0)


def _give_up(error: BaseException) -> None:
    try:
        os.write(2, f"modelpack: the standby process could not run the command: {error}\n".encode())
    except OSError:
        pass
    os._exit(1)


def _take_environment(env: dict[str, str]) -> None:
    """The caller's environment; only what differs from the standby's is set (each is a putenv)."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _reopen_standard_streams(settings: list[dict[str, str]]) -> None:
    """Python's text streams over the caller's descriptors, in the caller's encoding, buffered
    as Python buffers them at start (stdout by lines on a terminal, stderr always)."""
    streams = []
    for fd, mode, setting in zip((0, 1, 2), ("r", "w", "w"), settings, strict=True):
        lines = fd == 2 or (fd == 1 and os.isatty(fd))
        opened = open(
            fd,
            mode,
            buffering=1 if lines else -1,
            encoding=setting["encoding"],
            errors=setting["errors"],
            closefd=False,
        )
        streams.append(opened)
    sys.stdin, sys.stdout, sys.stderr = streams


__all__ = ["Channel", "Entry", "Request", "StandbyError", "StandbyOptions", "serve"]
