"""A PEP 503 package index on 127.0.0.1 for the tests that lock or install: tests send their
traffic to loopback only, and an index credential is never sent to a public host.

The wheels are fetched once with `pip download` (the only step that reaches PyPI) into a cache
directory kept between sessions, for every Python the tests lock for; the server then answers
`/simple/<project>/` with `#sha256=` links and serves the files, optionally behind basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback import LoopbackServer, QuietHandler

# Python versions the tests lock for (the local base image's, and test_lock's "another Python").
PYTHONS = ("3.11", "3.12")
# What the tests' models require on top of modelpack's runtime requirements.
EXTRA_REQUIREMENTS = ("six==1.16.0", "idna")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# a project not on PyPI, so only a loopback index can answer for it (`make_wheel` makes it)
PROBE = "modelpack-e2e-index-probe"


def cache_root() -> Path:
    explicit = os.environ.get("MODELPACK_TEST_WHEELS")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelpack-tests" / "wheels"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(requirements: list[str], folder: Path | None = None) -> Path:
    """The wheels for `requirements` on every Python of PYTHONS, in a folder named by their digest;
    fetched once (a `.complete` marker says the folder is whole). Raises CalledProcessError."""
    key = hashlib.sha256(json.dumps([sorted(requirements), PYTHONS, PLATFORMS]).encode()).hexdigest()[:16]
    target = (folder or cache_root()) / key
    if (target / ".complete").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for python in PYTHONS:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", python, *platforms,
             "--dest", str(target), *requirements],
            check=True, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    (target / ".complete").write_text("\n".join(sorted(requirements)) + "\n")
    return target


def project_of(filename: str) -> str:
    """The canonical project name of a wheel file name (`name-version-...whl`)."""
    return canonical(filename.split("-", 1)[0])


def make_wheel(
    folder: Path,
    project: str,
    source: str = "VALUE = 1\n",
    version: str = "0.1.0",
    requires: tuple[str, ...] = (),
) -> Path:
    """A minimal valid pure-Python wheel of `project` whose one module holds `source`, in `folder`;
    `requires` become its Requires-Dist lines."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    depends = "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n{depends}".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: modelpack-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


class WheelIndex:
    """`/simple/` and `/simple/<project>/` pages for the wheels of a folder, `/files/<name>` for
    the files; every request path is recorded, and the Authorization header each one carried.
    Pages are never cached. `like_pypi`: the links carry PEP 658 metadata (`/files/<name>.metadata`),
    files are marked immutable, as PyPI does, so a resolver reads no wheel and a cache keeps what it
    downloaded: every wheel download is a first install's. Pages may be kept but are stale at once
    (PyPI allows 10 minutes; a proxy that drops the header, none), so uv asks again for each unless
    it is told to work from its cache (use project names of the test's own)."""

    def __init__(self, folder: Path, credentials: str | None = None, *, like_pypi: bool = False) -> None:
        self.folder = folder
        self.credentials = credentials  # "user:password" the index requires, if any
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        self._like_pypi = like_pypi
        self.rescan()
        self._server = LoopbackServer(self._handler())

    def rescan(self) -> None:
        """Serve the folder's wheels as they are now (a test publishing a new version)."""
        files = {path.name: path for path in self.folder.iterdir() if path.suffix == ".whl"}
        hashes = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
        metadata = {name: _wheel_metadata(path) for name, path in files.items()} if self._like_pypi else {}
        with self._lock:
            self._files, self._hashes, self._metadata = files, hashes, metadata

    @property
    def port(self) -> int:
        return self._server.port

    def url_with(self, credentials: str | None = None) -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}/simple"

    @property
    def url(self) -> str:
        return self.url_with(self.credentials)

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def downloads(self) -> list[str]:
        """The wheels fetched, by file name, in order."""
        return [path.rsplit("/", 1)[1] for path in self.paths() if path.endswith(".whl")]

    def authorizations(self) -> set[str | None]:
        with self._lock:
            return {auth for _, auth in self.requests}

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> WheelIndex:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def _page(self, path: str) -> bytes | None:
        parts = [part for part in path.split("/") if part]
        if parts == ["simple"]:
            projects = sorted({project_of(name) for name in self._files})
            links = "".join(f'<a href="/simple/{p}/">{p}</a>' for p in projects)
        elif len(parts) == 2 and parts[0] == "simple":
            names = sorted(n for n in self._files if project_of(n) == canonical(parts[1]))
            if not names:
                return None
            links = "".join(self._link(name) for name in names)
        else:
            return None
        return f"<!DOCTYPE html><html><body>{links}</body></html>".encode()

    def _link(self, name: str) -> str:
        extra = ""
        if name in self._metadata:
            digest = hashlib.sha256(self._metadata[name]).hexdigest()
            extra = f' data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}"'
        return f'<a href="/files/{html.escape(name)}#sha256={self._hashes[name]}"{extra}>{html.escape(name)}</a>'

    def _file(self, path: str) -> bytes | None:
        name = path[len("/files/") :] if path.startswith("/files/") else ""
        if name in self._files:
            return self._files[name].read_bytes()
        if name.endswith(".metadata") and name.removesuffix(".metadata") in self._metadata:
            return self._metadata[name.removesuffix(".metadata")]
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(QuietHandler):
            def _answer(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                authorization = self.headers.get("Authorization")
                with index._lock:
                    index.requests.append((path, authorization))
                if index.credentials is not None:
                    expected = "Basic " + base64.b64encode(index.credentials.encode()).decode()
                    if authorization != expected:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="wheels"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                file = index._file(path)
                if file is not None:
                    body, kind = file, "application/octet-stream"
                else:
                    page = index._page(path)
                    if page is None:
                        self.send_error(404)
                        return
                    body, kind = page, "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if kind == "text/html" and index._metadata:  # kept, but stale at once (a proxy's)
                    self.send_header("Cache-Control", "max-age=0")
                elif kind == "text/html":  # another session's folder, another page
                    self.send_header("Cache-Control", "no-store")
                elif index._metadata:  # like PyPI: files never change
                    self.send_header("Cache-Control", "max-age=31536000, immutable")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        return Handler


def _wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
