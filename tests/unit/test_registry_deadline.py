"""A registry that drips its answers cannot hold a command: each answer (each MiB of a blob)
must arrive within MODELPACK_REGISTRY_DEADLINE seconds, and a tag list's pages must end.
The registry here is a real HTTP server on loopback."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner
from loopback import LoopbackServer, QuietHandler

from modelpack.cli import cli
from modelpack.errors import InvalidInputError, RegistryError
from modelpack.oci import registry as registry_mod
from modelpack.oci.registry import RegistryClient, sha256_digest
from modelpack.oci.transfer import DEADLINE_VARIABLE, DEFAULT_DEADLINE, registry_deadline

TAGS = json.dumps({"name": "team/m", "tags": ["v1", "v2"]}).encode()
BIG = bytes(range(256)) * (3 * 4096 + 7)  # a little over 3 MiB


class Registry:
    """Answers /v2/, a tag list and blobs; `drip` sends bodies one byte per 50 ms."""

    def __init__(self) -> None:
        self.drip = False
        self.drip_headers = False  # the status line and headers one byte per 50 ms
        self.silent = 0.0  # seconds of silence before answering at all
        self.link: str | None = None  # the `Link: <...>; rel="next"` of every tag page
        self.pages = 0
        self.paths: list[str] = []  # as each request named it (a URL when it came through a proxy)
        self.server = LoopbackServer(self._handler()).start()

    @property
    def host(self) -> str:
        return self.server.host

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                path = self.path.split("?", 1)[0]
                headers = {"Content-Type": "application/json"}
                if path == "/v2/":
                    body = b"{}"
                elif path.endswith("/tags/list"):
                    owner.pages += 1
                    body = TAGS
                    if owner.link:
                        headers["Link"] = f'<{owner.link.format(n=owner.pages)}>; rel="next"'
                elif path.endswith("/blobs/" + sha256_digest(BIG)):
                    body = BIG
                else:
                    self.send_error(404)
                    return
                time.sleep(owner.silent)
                if owner.drip_headers:
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    try:
                        for index in range(len(head)):
                            self.wfile.write(head[index : index + 1])
                            self.wfile.flush()
                            time.sleep(0.05)
                        self.wfile.write(body)
                    except OSError:
                        pass
                    return
                self.send_response(200)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if not owner.drip:
                        self.wfile.write(body)
                        return
                    for index in range(len(body)):
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass  # the client gave up

        return Handler

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry()
    yield served
    served.close()


def test_a_dripping_tag_list_fails_at_the_deadline(registry: Registry) -> None:
    registry.drip = True  # the whole list would take len(TAGS) / 20 s, each byte well within a read timeout
    with RegistryClient(registry.host, deadline=0.5) as client:
        with pytest.raises(RegistryError, match=r"GET /v2/team/m/tags/list.*did not arrive within 0.5 s"):
            client.list_tags("team/m")


def test_dripping_headers_fail_at_the_deadline(registry: Registry) -> None:
    """Each header byte comes well within a read timeout; the whole status line and headers do not."""
    registry.drip_headers = True
    started = time.monotonic()
    with RegistryClient(registry.host, deadline=0.5) as client:
        with pytest.raises(RegistryError, match=r"GET /v2/team/m/tags/list\S*: no answer within 0.5 s"):
            client.list_tags("team/m")
    assert time.monotonic() - started < len("HTTP/1.1 200 OK") * 0.05  # it did not wait for them


def test_a_silent_registry_fails_at_the_deadline_not_at_the_read_timeout(registry: Registry) -> None:
    """Each read of the head waits only until the deadline, even when the read timeout is longer."""
    registry.silent = 3.0
    started = time.monotonic()
    with RegistryClient(registry.host, deadline=0.5, timeout=60) as client:
        with pytest.raises(RegistryError, match=r"GET /v2/team/m/tags/list\S*: no answer within 0.5 s"):
            client.list_tags("team/m")
    assert time.monotonic() - started < registry.silent


def test_a_late_answer_leaves_the_client_usable(registry: Registry) -> None:
    """The connection of a late answer is dropped, not handed to the next request."""
    registry.drip_headers = True
    with RegistryClient(registry.host, deadline=0.5) as client:
        with pytest.raises(RegistryError, match="no answer within"):
            client.list_tags("team/m")
        registry.drip_headers = False
        assert client.list_tags("team/m") == ["v1", "v2"]
        registry.drip = True  # the body's own deadline still holds after the head's
        with pytest.raises(RegistryError, match="did not arrive within"):
            client.list_tags("team/m")


def test_requests_are_sent_from_the_callers_thread(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounding the head costs no thread per request (a build sends about forty)."""
    started_here: list[str] = []
    start = threading.Thread.start
    caller = threading.current_thread()

    def start_noted(self: threading.Thread) -> None:
        if threading.current_thread() is caller:  # the loopback server starts its own elsewhere
            started_here.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_noted)
    with RegistryClient(registry.host, deadline=5) as client:
        assert client.list_tags("team/m") == ["v1", "v2"]
        assert client.get_blob("team/m", sha256_digest(BIG)) == BIG
    assert started_here == []


def test_a_registry_client_without_requests_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "requests", None)  # as if not installed: importing it fails
    with pytest.raises(InvalidInputError, match=r"talking to a registry needs requests \(pip install"):
        RegistryClient("127.0.0.1:5000")


def test_versions_on_a_dripping_registry_is_one_line(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.drip = True
    monkeypatch.setenv(DEADLINE_VARIABLE, "0.5")
    result = CliRunner().invoke(cli, ["versions", f"{registry.host}/team/m"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: registry ") and f"did not arrive within 0.5 s ({DEADLINE_VARIABLE})" in line


def test_a_blob_that_keeps_moving_is_not_cut_off(registry: Registry) -> None:
    """The deadline is per MiB of a blob: a download longer than it, but moving, completes."""
    with RegistryClient(registry.host, deadline=2) as client:
        assert client.get_blob("team/m", sha256_digest(BIG)) == BIG
        with client.open_blob("team/m", sha256_digest(BIG)) as stream:
            assert stream.read() == BIG
    registry.drip = True
    with RegistryClient(registry.host, deadline=0.5) as client:
        with client.open_blob("team/m", sha256_digest(BIG)) as stream:
            with pytest.raises(RegistryError, match="did not arrive within"):
                stream.read(4096)


def test_tag_pages_that_never_end_are_refused(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.link = "/v2/team/m/tags/list?n=1000"  # the same page again and again
    with RegistryClient(registry.host) as client:
        with pytest.raises(RegistryError, match="the tag list of team/m does not end"):
            client.list_tags("team/m")
    assert registry.pages == 2
    registry.link, registry.pages = "/v2/team/m/tags/list?n=1000&last={n}", 0  # a new page every time
    monkeypatch.setattr(registry_mod, "MAX_TAG_PAGES", 5)
    with RegistryClient(registry.host) as client:
        with pytest.raises(RegistryError, match="does not end"):
            client.list_tags("team/m")
    assert registry.pages == 5


def test_the_deadline_setting() -> None:
    assert registry_deadline({}) == DEFAULT_DEADLINE
    assert registry_deadline({DEADLINE_VARIABLE: " 2.5 "}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(InvalidInputError, match=DEADLINE_VARIABLE):
            registry_deadline({DEADLINE_VARIABLE: bad})


# --- proxies from the environment ------------------------------------------------------------------


def _without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_a_proxy_in_the_environment_carries_the_registry_requests(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (a corporate proxy): the loopback server plays the proxy here."""
    _without_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://{registry.host}")
    with RegistryClient("registry.example:5000", insecure=True, deadline=5) as client:
        assert client.list_tags("team/m") == ["v1", "v2"]
        assert client.list_tags("team/m") == ["v1", "v2"]
    assert registry.paths == ["http://registry.example:5000/v2/team/m/tags/list?n=1000"] * 2


def test_no_proxy_reaches_the_registry_directly(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with RegistryClient(registry.host, deadline=5) as client:
        with pytest.raises(RegistryError, match="ProxyError"):  # the proxy is asked, and is not there
            client.list_tags("team/m")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with RegistryClient(registry.host, deadline=5) as client:
        assert client.list_tags("team/m") == ["v1", "v2"]
    assert registry.paths == ["/v2/team/m/tags/list?n=1000"]


def test_the_environment_is_read_once_per_registry_not_per_request(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests scans the environment for proxies on every request (milliseconds each, a build
    sends dozens); a client's session keeps the answer for its registry."""
    import requests.sessions

    _without_proxies(monkeypatch)
    looked_up: list[str] = []
    lookup = requests.sessions.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict[str, str]:
        looked_up.append(url)
        return lookup(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    with RegistryClient(registry.host, deadline=5) as client:
        client.ping()
        for _ in range(3):
            assert client.list_tags("team/m") == ["v1", "v2"]
    assert len(looked_up) == 1
