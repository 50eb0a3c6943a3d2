"""The registry session's own path to its transport (`transfer._session_class`): what reaches a
real HTTP server on loopback is what `requests` would send (bodies of every kind, redirects,
credentials kept to the registry's origin), a `~/.netrc` entry does not replace the registry's
token, and a request does not go through `Session.request`'s merging."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO

import pytest
import requests
from loopback import LoopbackServer, QuietHandler

from modelpack.oci.registry import RegistryClient
from modelpack.oci.transfer import deadline_session

TOKEN = "registry-token"


class Server:
    """Records every request (method, path, headers, body); the registry asks for a bearer token
    when `tokens` is set, and `/v2/moved/...` redirects to `redirect_to`."""

    def __init__(self, tokens: bool = False) -> None:
        self.tokens = tokens
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.redirect_to = ""
        self.server = LoopbackServer(self._handler()).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                        if not size:
                            return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self) -> None:
                body = self._body()
                owner.seen.append((self.command, self.path, dict(self.headers), body))
                if self.path.startswith("/token"):
                    return self.reply(json.dumps({"token": TOKEN}).encode())
                if owner.tokens and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    challenge = f'Bearer realm="{owner.server.url}/token",service="loopback"'
                    return self.reply(b"{}", status=401, headers={"WWW-Authenticate": challenge})
                if self.path.startswith("/v2/moved/"):
                    target = owner.redirect_to + self.path.replace("/v2/moved/", "/stored/")
                    return self.reply(b"", status=307, headers={"Location": target})
                self.reply(b'{"echo": %d}' % len(body))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

        return Handler

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def registry() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


def test_bodies_of_every_kind_arrive_as_sent(registry: Server, tmp_path: Path) -> None:
    session = deadline_session()
    url = registry.server.url + "/v2/a/blobs/uploads/x"
    blob = tmp_path / "blob"
    blob.write_bytes(b"file-bytes" * 1000)
    with blob.open("rb") as handle:
        bodies: list[bytes | str | IO[bytes] | Iterator[bytes]] = [b"raw-bytes", "text", handle, io.BytesIO(b"memory"), iter([b"chunk-1", b"chunk-2"])]
        for body in bodies:
            answer = session.request("PUT", url, data=body, headers={"Content-Type": "application/octet-stream"})
            assert answer.status_code == 200
    received = [entry[3] for entry in registry.seen]
    assert received == [b"raw-bytes", b"text", b"file-bytes" * 1000, b"memory", b"chunk-1chunk-2"]
    headers = [entry[2] for entry in registry.seen]
    assert [h.get("Content-Length") for h in headers[:4]] == ["9", "4", "10000", "6"]
    assert headers[4].get("Transfer-Encoding") == "chunked"  # a generator's length is unknown
    assert all(h["Content-Type"] == "application/octet-stream" for h in headers)
    assert all(h["User-Agent"].startswith("python-requests/") for h in headers)  # the session's defaults


def test_the_headers_are_those_requests_would_send(registry: Server) -> None:
    session = deadline_session()
    url = registry.server.url + "/v2/a/manifests/t"
    cases: list[dict[str, str | None]] = [{}, {"Accept": "application/json"}, {"Accept-Encoding": None}]
    for headers in cases:
        session.request("PUT", url, data=b"{}", headers=headers)
        requests.Session.request(session, "PUT", url, data=b"{}", headers=headers)  # requests' own path
    sent = [entry[2] for entry in registry.seen]
    assert len(sent) == 6
    for ours, theirs in zip(sent[::2], sent[1::2], strict=True):
        assert ours == theirs


def test_a_redirect_to_another_origin_is_followed_without_the_registrys_credentials(registry: Server) -> None:
    storage = Server()
    registry.redirect_to = storage.server.url
    try:
        session = deadline_session()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answer = session.request("GET", registry.server.url + "/v2/moved/blob", headers=headers, stream=True)
        assert answer.status_code == 200 and answer.content == b'{"echo": 0}'
        assert [h.status_code for h in answer.history] == [307]
        assert [entry[1] for entry in storage.seen] == ["/stored/blob"]
        assert "Authorization" not in storage.seen[0][2]
        kept = session.request("GET", registry.server.url + "/v2/moved/b", allow_redirects=False)
        assert kept.status_code == 307 and len(storage.seen) == 1
    finally:
        storage.stop()


def test_a_netrc_entry_does_not_replace_the_registrys_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`requests` puts `~/.netrc` Basic credentials for a host over an Authorization header."""
    server = Server(tokens=True)
    try:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        with RegistryClient(server.server.host, deadline=5) as client:
            client.ping()
        last = server.seen[-1]
        assert (last[1], last[2].get("Authorization")) == ("/v2/", f"Bearer {TOKEN}")
    finally:
        server.stop()


def test_a_registry_request_skips_the_sessions_merging(
    registry: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Session.request` merges cookies, hooks and settings for each request: half its CPU time."""
    merged: list[str] = []
    original = requests.Session.prepare_request

    def counted(self: requests.Session, request: requests.Request) -> requests.PreparedRequest:
        merged.append(str(request.url))
        return original(self, request)

    monkeypatch.setattr(requests.Session, "prepare_request", counted)
    with RegistryClient(registry.server.host, deadline=5) as client:
        client.ping()
        assert client.request("PUT", "/v2/a/manifests/t", data=b"{}", ok=(200,)) is not None
    assert merged == []
    assert [entry[:2] for entry in registry.seen] == [("GET", "/v2/"), ("PUT", "/v2/a/manifests/t")]
