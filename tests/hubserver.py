"""A small Hugging Face Hub-compatible HTTP server for tests (loopback only).

It answers the requests the real ``huggingface_hub`` client makes for model repos:
model info at a revision (``/api/models/{repo}[/revision/{rev}]``, ``?blobs=true``),
the tree listing (``/api/models/{repo}/tree/{rev}[/{path}]``), ``paths-info``, and
``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with the hub's headers (``ETag``,
``X-Repo-Commit``, ``X-Linked-Etag``/``X-Linked-Size``). Large-file-storage files
(weights) are redirected, as on the real hub, to a separate "CDN" listener on
another port that serves Range requests and never needs the token. Errors carry
the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``) so the client raises its typed errors.

Every request is counted per (method, path) so tests can assert what was and was
not downloaded. ``drop_once`` makes the next download of a file stop mid-body to
exercise resume.

Use it from tests with ``HubServer(...)`` as a context manager, or run it by hand:
``python tests/hubserver.py --port 8999 --repos-dir DIR`` where ``DIR/org/name/``
holds the files of repo ``org/name`` (an optional ``DIR/org/name.hub.json`` gives
``{"gated": true, "tags": ["v1"], "tokens": ["hf_x"]}``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from loopback import LoopbackServer, QuietHandler

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024
_POINTER_SIZE = 134


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file, which the hub uses as ETag of regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    path: str
    data: bytes
    lfs: bool

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def oid(self) -> str:
        return git_blob_sha1(self.data)


@dataclass
class HubRepo:
    """A model repo: commits (sha -> files) and refs (branch or tag -> sha)."""

    repo_id: str
    gated: bool = False
    private: bool = False
    tokens: frozenset[str] | None = None  # tokens granted access (None: any valid server token)
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def add_commit(self, files: Mapping[str, bytes], branch: str = "main", tags: Iterable[str] = ()) -> str:
        """Record a commit holding exactly ``files`` on ``branch``; returns its 40-hex sha."""
        digest = hashlib.sha1(self.repo_id.encode())
        digest.update(str(len(self.commits)).encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        sha = digest.hexdigest()
        self.commits[sha] = {
            path: HubFile(path, data, path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE)
            for path, data in files.items()
        }
        self.refs[branch] = sha
        for tag in tags:
            self.refs[tag] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.commit = commit


class HubServer:
    """The hub plus its CDN, each a server on 127.0.0.1 (tests/loopback.py)."""

    def __init__(
        self,
        repos: Iterable[HubRepo] = (),
        *,
        tokens: Iterable[str] = ("hf_test_token",),
        port: int = 0,
        cdn_port: int = 0,
    ) -> None:
        self.repos: dict[str, HubRepo] = {r.repo_id: r for r in repos}
        self.tokens = set(tokens)
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.auth_seen: list[tuple[str, str, str | None]] = []  # (server, path, Authorization)
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of ranged GETs
        self._drops: dict[str, int] = {}
        self._lock = threading.Lock()
        self._hub = LoopbackServer(_make_handler(self, "hub"), port)
        self._cdn = LoopbackServer(_make_handler(self, "cdn"), cdn_port)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        return self._cdn.url

    def start(self) -> HubServer:
        self._hub.start()
        self._cdn.start()
        return self

    def stop(self) -> None:
        self._hub.stop()
        self._cdn.stop()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repos and faults ----------------------------------------------------------------------
    def add_repo(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def drop_once(self, sha256: str, after_bytes: int) -> None:
        """The next GET of the blob with this sha256 sends ``after_bytes`` bytes and then hangs up."""
        with self._lock:
            self._drops[sha256] = after_bytes

    def _take_drop(self, sha256: str) -> int | None:
        with self._lock:
            return self._drops.pop(sha256, None)

    # -- counting ----------------------------------------------------------------------------
    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.auth_seen.clear()
            self.ranges.clear()

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(
                n
                for (m, path), n in self.requests.items()
                if (method is None or m == method) and contains in path
            )

    def file_downloads(self) -> int:
        """GET requests that transfer file contents (resolve on the hub, blobs on the CDN)."""
        return self.count("GET", "/resolve/") + self.count("GET", "/blobs/")

    def _record(self, server: str, method: str, path: str, auth: str | None, range_: str | None) -> None:
        with self._lock:
            self.requests[(method, path)] += 1
            self.auth_seen.append((server, path, auth))
            if range_ and method == "GET":
                self.ranges.append((path, range_))

    def _find_blob(self, sha256: str) -> HubFile | None:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for f in files.values():
                    if f.lfs and f.sha256 == sha256:
                        return f
        return None


def repo_from_dir(root: Path, repo_id: str) -> HubRepo:
    """A single-commit repo on ``main`` from the files under ``root``."""
    meta_path = root.parent / f"{root.name}.hub.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    tokens = meta.get("tokens")
    repo = HubRepo(
        repo_id,
        gated=bool(meta.get("gated")),
        private=bool(meta.get("private")),
        tokens=frozenset(tokens) if tokens else None,
    )
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    repo.add_commit(files, tags=meta.get("tags", ()))
    return repo


def repos_from_dir(repos_dir: Path) -> list[HubRepo]:
    repos = []
    for org in sorted(p for p in repos_dir.iterdir() if p.is_dir()):
        for name in sorted(p for p in org.iterdir() if p.is_dir()):
            repos.append(repo_from_dir(name, f"{org.name}/{name.name}"))
    return repos


def _make_handler(hub: HubServer, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"
        server_version = "modelpack-test-hub/1"

        # -- plumbing ----------------------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            hub._record(
                role,
                method,
                unquote(split.path),
                self.headers.get("Authorization"),
                self.headers.get("Range"),
            )
            query = parse_qs(split.query)
            try:
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length).decode()
                    query.update(parse_qs(body))
                if role == "cdn":
                    self._cdn(method, split.path)
                else:
                    self._hub_route(method, split.path, query)
            except _HubError as error:
                self._error(error, method)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _error(self, error: _HubError, method: str) -> None:
            body = json.dumps({"error": error.message}).encode()
            self.send_response(error.status)
            if error.code:
                self.send_header("X-Error-Code", error.code)
            self.send_header("X-Error-Message", error.message)
            if error.commit:
                self.send_header("X-Repo-Commit", error.commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _json(self, value: Any, method: str) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        # -- auth --------------------------------------------------------------------------
        def _token(self) -> str | None:
            auth = self.headers.get("Authorization")
            if not auth:
                return None
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token not in hub.tokens:
                raise _HubError(401, None, "Invalid credentials in Authorization header")
            return token

        def _repo(self, repo_id: str) -> HubRepo:
            token = self._token()
            repo = hub.repos.get(repo_id)
            can_see = repo is not None and (
                not repo.private or (token is not None and (repo.tokens is None or token in repo.tokens))
            )
            if repo is None or not can_see:
                # like the hub: anonymous callers get 401, authenticated ones 404
                raise _HubError(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return repo

        def _check_gate(self, repo: HubRepo) -> None:
            if not repo.gated:
                return
            token = self._token()
            if token is None:
                raise _HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                )
            if repo.tokens is not None and token not in repo.tokens:
                raise _HubError(
                    403,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted and you are not in the authorized list.",
                )

        def _commit(self, repo: HubRepo, revision: str) -> str:
            sha = repo.resolve(revision)
            if sha is None:
                raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return sha

        # -- hub routes --------------------------------------------------------------------
        def _split_repo(self, parts: list[str], markers: tuple[str, ...]) -> tuple[str, list[str]]:
            """Split ``org/name/<marker>/...`` into the repo id and the rest (raw segments)."""
            for size in (2, 1):
                if len(parts) == size or (len(parts) > size and parts[size] in markers):
                    return "/".join(unquote(p) for p in parts[:size]), parts[size:]
            raise _HubError(404, None, "Not found")

        def _hub_route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            parts = [p for p in path.split("/") if p != ""]
            if parts[:2] == ["api", "models"]:
                repo_id, rest = self._split_repo(parts[2:], ("revision", "tree", "paths-info"))
                repo = self._repo(repo_id)
                if not rest:
                    self._model_info(repo, "main", query, method)
                elif rest[0] == "revision" and len(rest) >= 2:
                    self._model_info(repo, unquote("/".join(rest[1:])), query, method)
                elif rest[0] == "tree" and len(rest) >= 2:
                    self._tree(repo, unquote(rest[1]), unquote("/".join(rest[2:])), query, method)
                elif rest[0] == "paths-info" and len(rest) >= 2 and method == "POST":
                    self._paths_info(repo, unquote(rest[1]), query)
                else:
                    raise _HubError(404, None, "Not found")
                return
            repo_id, rest = self._split_repo(parts, ("resolve",))
            if len(rest) < 3 or rest[0] != "resolve":
                raise _HubError(404, None, "Not found")
            repo = self._repo(repo_id)
            self._resolve(repo, unquote(rest[1]), unquote("/".join(rest[2:])), method)

        def _entry(self, f: HubFile) -> dict[str, Any]:
            entry: dict[str, Any] = {"type": "file", "oid": f.oid, "size": len(f.data), "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": _POINTER_SIZE}
            return entry

        def _model_info(self, repo: HubRepo, revision: str, query: dict[str, list[str]], method: str) -> None:
            sha = self._commit(repo, revision)
            files = repo.commits[sha]
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for p in sorted(files):
                sibling: dict[str, Any] = {"rfilename": p}
                if blobs:
                    f = files[p]
                    sibling.update(size=len(f.data), blobId=f.oid)
                    if f.lfs:
                        sibling["lfs"] = {
                            "size": len(f.data),
                            "sha256": f.sha256,
                            "pointerSize": _POINTER_SIZE,
                        }
                siblings.append(sibling)
            self._json(
                {
                    "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "tags": [],
                    "siblings": siblings,
                },
                method,
            )

        def _tree(
            self, repo: HubRepo, revision: str, folder: str, query: dict[str, list[str]], method: str
        ) -> None:
            sha = self._commit(repo, revision)
            files = repo.commits[sha]
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            prefix = folder.strip("/") + "/" if folder.strip("/") else ""
            if prefix and not any(p.startswith(prefix) for p in files):
                raise _HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}", sha)
            entries: dict[str, dict[str, Any]] = {}
            for p in sorted(files):
                if not p.startswith(prefix):
                    continue
                rel = p[len(prefix) :]
                segments = rel.split("/")
                for depth in range(1, len(segments)):
                    if not recursive and depth > 1:
                        break
                    d = prefix + "/".join(segments[:depth])
                    entries.setdefault(
                        d, {"type": "directory", "oid": git_blob_sha1(d.encode()), "size": 0, "path": d}
                    )
                if recursive or len(segments) == 1:
                    entries[p] = self._entry(files[p])
            self._json([entries[k] for k in sorted(entries)], method)

        def _paths_info(self, repo: HubRepo, revision: str, query: dict[str, list[str]]) -> None:
            sha = self._commit(repo, revision)
            files = repo.commits[sha]
            out = [self._entry(files[p]) for p in query.get("paths", []) if p in files]
            self._json(out, "POST")

        def _resolve(self, repo: HubRepo, revision: str, filename: str, method: str) -> None:
            sha = self._commit(repo, revision)
            f = repo.commits[sha].get(filename)
            if f is None:
                raise _HubError(404, "EntryNotFound", f"{filename} does not exist on {revision}", sha)
            self._check_gate(repo)
            if f.lfs:
                # like the hub: LFS files are redirected to a CDN on another origin
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn_url}/blobs/{f.sha256}?name={quote(f.path)}")
                self.send_header("ETag", f'"{f.oid}"')
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.data)))
                self.send_header("X-Repo-Commit", sha)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_bytes(f.data, method, {"ETag": f'"{f.oid}"', "X-Repo-Commit": sha}, None)

        # -- CDN -------------------------------------------------------------------------------
        def _cdn(self, method: str, path: str) -> None:
            parts = [p for p in path.split("/") if p]
            blob = hub._find_blob(parts[1]) if len(parts) == 2 and parts[0] == "blobs" else None
            if blob is None:
                raise _HubError(404, None, "Not found")
            drop = hub._take_drop(blob.sha256) if method == "GET" else None
            self._send_bytes(blob.data, method, {"ETag": f'"{blob.sha256}"'}, drop)

        def _send_bytes(self, data: bytes, method: str, headers: dict[str, str], drop: int | None) -> None:
            start, end, status = 0, len(data) - 1, 200
            range_header = self.headers.get("Range")
            if range_header and range_header.startswith("bytes=") and "," not in range_header:
                first, _, last = range_header[len("bytes=") :].partition("-")
                if first:
                    start = int(first)
                    end = min(int(last), len(data) - 1) if last else len(data) - 1
                else:
                    start = max(len(data) - int(last), 0)
                if start >= len(data) and len(data) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start : end + 1]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if method == "HEAD":
                return
            if drop is not None:
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                return
            view = memoryview(body)
            for offset in range(0, len(body), 1 << 20):
                self.wfile.write(view[offset : offset + (1 << 20)])

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--repos-dir", type=Path, required=True)
    parser.add_argument("--token", action="append", default=[], help="a valid token (repeatable)")
    args = parser.parse_args(argv)
    server = HubServer(
        repos_from_dir(args.repos_dir),
        tokens=args.token or ["hf_test_token"],
        port=args.port,
        cdn_port=args.cdn_port,
    )
    server.start()
    print(f"hub at {server.url} (CDN {server.cdn_url}); repos: {', '.join(sorted(server.repos))}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
