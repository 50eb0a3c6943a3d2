"""The standby process's pieces that need no process: frames, its folder, its key, requests."""

from __future__ import annotations

import ast
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelpack
from modelpack.cli.standby_cmd import ENVIRONMENT_READERS, SKIPPED_PACKAGES
from modelpack.standby import client, place, wire
from modelpack.standby.server import Request, _sweep, _take_lock
from tests.unit import fakes
from tests.unit.fakes import FORMAT_CHECK_PACKAGES

PACKAGE = Path(modelpack.__file__).resolve().parent


def test_a_frame_carries_its_message_and_descriptors() -> None:
    left, right = socket.socketpair()
    read_end, write_end = os.pipe()
    with left, right:
        wire.send(left, {"kind": "run", "argv": ["büld", "\udcff"]}, [write_end])
        message, fds = wire.receive(right, with_fds=True)
        assert message == {"kind": "run", "argv": ["büld", "\udcff"]}  # undecodable argv bytes survive
        assert len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        assert os.read(read_end, 100) == b"through the passed descriptor"
        for fd in (*fds, read_end, write_end):
            os.close(fd)
        left.close()
        assert wire.receive(right) == (None, [])  # a clean end between frames


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (struct.pack(">I", wire.MAX_FRAME + 1), "over the"),
        (struct.pack(">I", 10) + b"{}", "closed inside a frame"),
        (struct.pack(">I", 2) + b"[]", "not a JSON object"),
        (struct.pack(">I", 3) + b"{x}", "not JSON"),
        (b"\0\0", "closed inside a frame"),
    ],
)
def test_a_broken_frame_is_refused(raw: bytes, error: str) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(raw)
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.WireError, match=error):
            wire.receive(right)


MESSAGES = [
    {"kind": "run", "argv": ["büld", "\udcff", "日本"], "env": {"A": 'x\n"\\\t'}, "umask": 18},
    {"kind": "exit", "code": 0, "values": [1.5, -2, None, True, False, [], {}], "big": 10**30},
    {"kind": "answer", "text": "", "nested": {"a": [{"b": ["c"]}]}},
]


@pytest.mark.parametrize("message", MESSAGES)
def test_a_frame_is_the_json_of_its_message(message: dict[str, object]) -> None:
    """The frame's body is what json.dumps writes (compact, ASCII) and reads back as json.loads."""
    left, right = socket.socketpair()
    with left, right:
        wire.send(left, message)
        raw = right.recv(1 << 16)
        body = json.dumps(message, separators=(",", ":")).encode("ascii")
        assert raw == struct.pack(">I", len(body)) + body
        left.sendall(raw)
        assert wire.receive(right) == (json.loads(body), [])


def test_frames_are_the_same_without_jsons_c_half() -> None:
    """An interpreter without `_json` encodes and decodes through the `json` package, alike."""
    code = (
        "import sys\nsys.modules['_json'] = None\nimport json, socket\n"
        "from modelpack.standby import wire\nleft, right = socket.socketpair()\n"
        f"for message in {MESSAGES!r}:\n"
        "    wire.send(left, message)\n    raw = right.recv(1 << 16)\n"
        "    left.sendall(raw)\n    assert wire.receive(right) == (message, [])\n"
        "    print(raw.hex())\n"
        "print('_json' in sys.modules and sys.modules['_json'] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    *frames, loaded = done.stdout.split()
    assert loaded == "False"
    for message, frame in zip(MESSAGES, frames, strict=True):
        body = json.dumps(message, separators=(",", ":")).encode("ascii")
        assert bytes.fromhex(frame) == struct.pack(">I", len(body)) + body


def test_three_descriptors_arrive_and_a_broken_frame_closes_them() -> None:
    left, right = socket.socketpair()
    pipes = [os.pipe() for _ in range(3)]
    with left, right:
        wire.send(left, {"kind": "run"}, [w for _, w in pipes])
        message, fds = wire.receive(right, with_fds=True)
        assert message == {"kind": "run"} and len(fds) == 3
        for (read_end, _), fd in zip(pipes, fds, strict=True):
            os.write(fd, b"x")
            assert os.read(read_end, 1) == b"x"
            os.close(fd)
        body = b'{"kind":"run"} trailing'
        rights = struct.pack("3i", *(w for _, w in pipes))
        left.sendmsg([struct.pack(">I", len(body)) + body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(wire.WireError, match="not JSON"):
            wire.receive(right, with_fds=True)
        assert set(os.listdir("/proc/self/fd")) <= before  # the three passed with it are closed
    for read_end, write_end in pipes:
        os.close(read_end)
        os.close(write_end)


def test_a_child_takes_the_callers_environment() -> None:
    """Only the differences are set, and they reach the C environment that subprocesses inherit."""
    code = textwrap.dedent(
        """
        import os, subprocess
        from modelpack.standby.server import _take_environment
        os.environ.update(A="1", B="2", C="3")
        caller = {k: v for k, v in os.environ.items() if k not in ("A", "PYTHONPATH")}
        caller.update(C="4", D="5 6")
        _take_environment(caller)
        assert dict(os.environ) == caller
        print(subprocess.run(["sh", "-c", 'echo "$A|$B|$C|$D|$PYTHONPATH"'], capture_output=True, text=True).stdout)
        """
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "|2|4|5 6|\n\n"


def test_a_child_reports_its_exit_status_itself_with_its_streams_closed(tmp_path: Path) -> None:
    """`exit_process` in a standby's child tells the caller before the process is torn down;
    the caller's standard streams are closed first (a reader of them sees their end with the
    status), and the caller closing its end then is no reason to SIGTERM the child."""
    code = textwrap.dedent(
        """
        import os, socket, sys, time
        from modelpack.standby import server, wire
        caller, ours = socket.socketpair()
        out_read, out_write = os.pipe()
        os.dup2(out_write, 1)
        os.close(out_write)
        channel = server.Channel(ours)
        wire.BEFORE_EXIT.append(channel.report_exit)
        for report in wire.BEFORE_EXIT:
            report(258)
        message, _ = wire.receive(caller)
        eof = os.read(out_read, 10)
        caller.close()  # as the executable does once it has the status
        time.sleep(0.3)  # the channel's reader sees the end: no SIGTERM now
        with open(sys.argv[1], "w") as seen:
            seen.write(repr((message, eof)))
        """
    )
    seen = tmp_path / "seen"
    done = subprocess.run([sys.executable, "-c", code, str(seen)], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert seen.read_text() == repr(({"kind": "exit", "code": 2}, b""))


# Loaded by `socket`, `signal`, `hashlib`, `json`, `struct` and `importlib`, which the executable
# used to import before it asked the standby process; each has a C module or builtin that does.
SLOW_IMPORTS = (
    "enum",
    "socket",
    "selectors",
    "signal",
    "hashlib",
    "_hashlib",
    "json",
    "json.decoder",
    "struct",
    "importlib",
    "warnings",
    "typing",
    "pathlib",
)


def test_the_executable_asks_the_standby_with_few_imports() -> None:
    """Everything `modelpack/__main__.py` imports is paid by each command handed over."""
    code = (
        "import sys\nbefore = set(sys.modules)\nimport modelpack.__main__\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    loaded = done.stdout.split()
    assert "modelpack.standby.client" in loaded and "modelpack.standby.wire" in loaded
    assert [name for name in SLOW_IMPORTS if name in loaded] == []


def test_an_oversized_message_is_not_sent() -> None:
    left, right = socket.socketpair()
    with left, right, pytest.raises(wire.WireError, match="limit"):
        wire.send(left, {"env": {"X": "y" * wire.MAX_FRAME}})


def test_the_folder_is_used_only_when_it_is_this_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert place.private_folder(create=False) is None  # not there: not made by asking
    created = place.private_folder(create=True)
    assert created == str(tmp_path / f"modelpack-standby-{os.getuid()}")
    made = Path(created)
    assert made.stat().st_mode & 0o777 == 0o700
    made.chmod(0o770)  # others may write in it: someone could put a socket of theirs there
    assert place.private_folder(create=False) is None
    made.chmod(0o700)
    assert place.private_folder(create=False) == created
    made.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    made.symlink_to(elsewhere)  # a link planted in a shared temporary folder
    assert place.private_folder(create=False) is None
    assert place.private_folder(create=True) is None


def test_the_key_follows_the_installed_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "modelpack"
    (package / "image").mkdir(parents=True)
    module = package / "image" / "stages.py"
    module.write_text("x = 1\n")
    (package / "__pycache__").mkdir()
    monkeypatch.setattr(place, "_PACKAGE", str(package))
    first = place.installation_key()
    (package / "__pycache__" / "stages.cpython-311.pyc").write_bytes(b"compiled")
    assert place.installation_key() == first  # compiled files are not the code
    os.utime(module, ns=(1, 1))
    assert place.installation_key() != first  # an edit of the source: the running one is not asked


def test_the_key_follows_code_in_a_linked_subpackage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation from a source checkout whose subpackage folder is a link: an edit there
    is an edit of the installed code, and a link back into the package does not stop the key."""
    package = tmp_path / "modelpack"
    package.mkdir()
    (package / "__init__.py").write_text("")
    checkout = tmp_path / "checkout" / "image"
    checkout.mkdir(parents=True)
    module = checkout / "stages.py"
    module.write_text("x = 1\n")
    (package / "image").symlink_to(checkout, target_is_directory=True)
    (checkout / "package").symlink_to(package, target_is_directory=True)
    monkeypatch.setattr(place, "_PACKAGE", str(package))
    first = place.installation_key()
    os.utime(module, ns=(1, 1))
    assert place.installation_key() != first


@pytest.mark.parametrize("planted", ["module behind a dangling link", "folder that cannot be listed"])
def test_a_path_that_cannot_be_read_gives_a_key_no_readable_installation_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """The executable computes the key before each command: an unreadable path must not end it
    with a traceback, nor look like the installation without it (a standby would answer)."""
    package = tmp_path / "modelpack"
    (package / "image").mkdir(parents=True)
    (package / "image" / "stages.py").write_text("x = 1\n")
    monkeypatch.setattr(place, "_PACKAGE", str(package))
    readable = place.installation_key()
    if planted == "folder that cannot be listed":
        fakes.unlistable(monkeypatch, package / "image")
        assert place.installation_key() not in (readable, "")
        return
    ghost = package / "image" / "ghost.py"
    ghost.symlink_to(tmp_path / "elsewhere.py")
    unreadable = place.installation_key()
    ghost.unlink()
    ghost.write_text("")
    assert unreadable not in (readable, place.installation_key())


def test_the_key_is_the_same_for_the_executable_and_python_dash_m(tmp_path: Path) -> None:
    """`modelpack` puts its script's folder first on sys.path, `python -m` the working folder."""
    code = "from modelpack.standby import place; print(place.installation_key())"
    script = tmp_path / "bin" / "modelpack-key"
    script.parent.mkdir()
    script.write_text(code + "\n")
    by_script = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, cwd="/"
    )
    by_module = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert by_script.stdout == by_module.stdout and len(by_script.stdout.strip()) == 24


def test_the_key_is_the_same_for_each_name_of_the_environments_python() -> None:
    """The executable's first line names `python` or `python3.11`, as its installer ran; a standby
    started by `python -m modelpack` must answer it all the same."""
    code = "from modelpack.standby import place; print(place.installation_key())"
    keys = set()
    for name in ("python", "python3", f"python3.{sys.version_info.minor}"):
        interpreter = Path(sys.executable).with_name(name)
        assert interpreter.exists(), interpreter  # every virtual environment has all three
        done = subprocess.run([str(interpreter), "-c", code], capture_output=True, text=True, check=True, cwd="/")
        keys.add(done.stdout.strip())
    assert len(keys) == 1


@pytest.fixture
def short_folder() -> Iterator[Path]:
    """A folder with a short name: a socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_no_standby_means_the_command_runs_here(short_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_folder))
    assert client.call(["validate", "x"]) is None
    root = place.private_folder(create=True)
    assert root is not None
    stale = place.socket_path(root, place.installation_key())
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(stale)
    listener.close()  # a socket file nobody listens on, as a killed standby leaves it
    assert client.call(["validate", "x"]) is None
    assert client.call(["standby", "status"]) is None  # never handed over: it would count itself


@pytest.mark.parametrize(
    "message",
    [
        {"argv": "validate", "env": {}, "cwd": "/", "umask": 18, "streams": [{}, {}, {}]},
        {"argv": [], "env": {"A": 1}, "cwd": "/", "umask": 18, "streams": [{}, {}, {}]},
        {"argv": [], "env": {}, "cwd": None, "umask": 18, "streams": [{}, {}, {}]},
        {"argv": [], "env": {}, "cwd": "/", "umask": 4096, "streams": [{}, {}, {}]},
        {"argv": [], "env": {}, "cwd": "/", "umask": 18, "streams": [{}]},
    ],
)
def test_a_malformed_request_is_refused(message: dict[str, object]) -> None:
    with pytest.raises(wire.WireError):
        Request.parse(message)


def _module_level_environment_reads(tree: ast.Module) -> list[int]:
    """Lines where a module reads the environment (or the home folder) as it is imported."""
    found = []
    for node in tree.body:
        statements = [node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            statements = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]  # type: ignore[list-item]
        elif isinstance(node, ast.ClassDef):
            statements = [n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for statement in statements:
            for sub in ast.walk(statement):
                if isinstance(sub, (ast.Call, ast.Attribute)) and ast.unparse(sub).startswith(
                    ("os.environ.", "os.getenv", "Path.home", "os.path.expanduser", "tempfile.gettempdir")
                ):
                    found.append(sub.lineno)
                    break
    return found


def test_modules_the_standby_loads_read_no_environment_when_imported() -> None:
    """Each command runs with its caller's environment: a module that kept a value of the
    environment it was imported in would give every command the standby's instead."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = "modelpack." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if dotted.startswith(SKIPPED_PACKAGES):
            continue
        wrong += [f"{dotted}:{line}" for line in _module_level_environment_reads(ast.parse(path.read_text()))]
    assert wrong == []


def test_the_scan_finds_an_import_time_read() -> None:
    tree = ast.parse(
        "import os\nHOME = os.environ.get('HOME')\ndef f(x=os.getenv('A')):\n    return os.environ['B']\n"
    )
    assert _module_level_environment_reads(tree) == [2, 3]


def test_the_standby_loads_no_library_that_reads_the_environment_at_import() -> None:
    code = (
        "import sys\nfrom modelpack.cli.standby_cmd import ENVIRONMENT_READERS, preload\n"
        "loaded = preload()\nprint(len(loaded), [n for n in ENVIRONMENT_READERS if n in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    count, present = done.stdout.split(" ", 1)
    assert int(count) > 100 and present.strip() == "[]"
    assert "huggingface_hub" in ENVIRONMENT_READERS


@pytest.mark.usefixtures("own_cache")  # its cache, by XDG_CACHE_HOME, is the child's too
def test_the_standby_computes_once_what_each_build_reads_of_the_installation() -> None:
    """Each forked child finds them done: the installation's digest (build records), the runtime
    library's files, modelpack's runtime requirements, the default ignore rules and the registry
    client's session class."""
    code = (
        "from modelpack import resources\n"
        "from modelpack.cli.standby_cmd import preload\n"
        "from modelpack.image import build_records\n"
        "from modelpack.oci import transfer\n"
        "from modelpack.pipeline import locking, runtime_library\n"
        "from modelpack.project import ignore\n"
        "preload()\n"
        "print(bool(build_records._INSTALLATION or resources._DIGESTS), bool(runtime_library._READ),\n"
        "      locking.runtime_requirements.cache_info().currsize, ignore._compiled.cache_info().currsize,\n"
        "      transfer._session_class.cache_info().currsize)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert done.stdout.split() == ["True", "True", "1", "1", "1"]


@pytest.mark.usefixtures("own_cache")  # its cache, by XDG_CACHE_HOME, is the child's too
def test_a_standby_child_compiles_no_regular_expression_before_the_engine(tmp_path: Path) -> None:
    """load, signature, resolve, the lock check and render of examples/hello, in a process that
    did what the standby does first: every pattern they match with was compiled before (the
    ignore defaults' 38 and a few more took milliseconds of each command)."""
    code = (
        "import re, shutil, sys\n"
        "from pathlib import Path\n"
        "from modelpack.cli.standby_cmd import preload\n"
        "from modelpack.pipeline.prepare import prepare\n"
        "from modelpack.pipeline.rendering import render\n"
        "from modelpack.pipeline.settings import BuildSettings\n"
        "from modelpack.resources import data_dir\n"
        "preload()\n"
        "model = Path(sys.argv[1]) / 'hello'\n"
        "shutil.copytree(str(data_dir('examples').joinpath('hello')), model)\n"
        "compiled, known = [], re._compile\n"
        "def noting(pattern, flags):\n"
        "    if (type(pattern), pattern, flags) not in re._cache:\n"
        "        compiled.append(pattern)\n"
        "    return known(pattern, flags)\n"
        "re._compile = noting\n"
        "settings = BuildSettings(builder='buildkit')\n"
        "done = prepare(model, settings=settings)\n"
        "render(done.model_dir, Path(sys.argv[1]) / 'context', resolved=done.resolved, lock=done.lock,\n"
        "       signature=done.signature.signature, settings=settings)\n"
        "print(compiled)\n"
    )
    for run in ("first", "second"):  # the first fills the disk caches (a config validated before, ...)
        work = tmp_path / run
        work.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", code, str(work)], capture_output=True, text=True, cwd="/"
        )
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_files_of_ended_standbys_are_swept_and_running_ones_kept(tmp_path: Path) -> None:
    for key in ("ended", "running", "mine"):
        for suffix in (".lock", ".log", ".sock"):
            (tmp_path / f"{key}{suffix}").write_text("")
    with open(tmp_path / "running.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's standby, still serving
        _sweep(tmp_path, "mine")
        assert _take_lock(tmp_path / "running.lock") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{key}{suffix}" for key in ("running", "mine") for suffix in (".lock", ".log", ".sock")
    )
    lock = _take_lock(tmp_path / "mine.lock")
    assert lock is not None
    lock.close()


@pytest.mark.usefixtures("own_cache")  # its cache, by XDG_CACHE_HOME, is the child's too
def test_the_standby_preloads_jsonschema_without_its_format_packages() -> None:
    """A standby process is the `modelpack` executable's: it loads jsonschema as a command does,
    without the packages of its format checkers (rfc3987_syntax builds a grammar for seconds at
    import, which `standby start` would wait for)."""
    installed = [name for name in FORMAT_CHECK_PACKAGES if _importable(name)]
    assert installed, "none of jsonschema's format packages is installed: set-up installs them"
    probe = textwrap.dedent(
        f"""
        import json, sys
        from modelpack.resources import own_process
        own_process()
        from modelpack.cli.standby_cmd import preload
        preload()
        print(json.dumps([name for name in ["jsonschema", *{installed!r}] if sys.modules.get(name) is not None]))
        """
    )
    env = {**os.environ, "MODELPACK_STANDBY": "off"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["jsonschema"]


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
