"""Reading a registry's answers under a deadline.

`requests`' timeout bounds each socket read, so a registry that sends one byte a second never
times out. The status line and headers must arrive within the deadline (`headers_within`).
Every answer body is read here in small reads with a deadline instead: each MiB
of it (or the whole body, when smaller) must arrive within `MODELPACK_REGISTRY_DEADLINE`
seconds (default 120). A tag list or manifest arrives whole within the deadline; a large blob
only has to keep moving (about 9 KB/s at the default), so no real download hits it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from modelpack.errors import InvalidInputError, RegistryError

if TYPE_CHECKING:
    import requests

DEADLINE_VARIABLE = "MODELPACK_REGISTRY_DEADLINE"
DEFAULT_DEADLINE = 120.0
DEADLINE_BYTES = 1 << 20  # each MiB of a body gets the whole deadline
_READ = 64 * 1024
T = TypeVar("T")


def registry_deadline(environ: Mapping[str, str] | None = None) -> float:
    """`MODELPACK_REGISTRY_DEADLINE` in seconds, else the default; anything else is bad input."""
    environ = os.environ if environ is None else environ
    text = environ.get(DEADLINE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_DEADLINE
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise InvalidInputError(f"{DEADLINE_VARIABLE}={text!r}: give a number of seconds above 0")
    return value


class Deadline:
    """Each `DEADLINE_BYTES` of a body within `seconds` of the previous ones (or of the start)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self._since = time.monotonic()
        self._pending = 0

    def arrived(self, size: int) -> None:
        now = time.monotonic()
        self._pending += size
        if self._pending >= DEADLINE_BYTES:
            self._pending %= DEADLINE_BYTES
            self._since = now
        elif now - self._since > self.seconds:
            raise RegistryError(
                f"{self.what}: the answer did not arrive within {self.seconds:g} s "
                f"({DEADLINE_VARIABLE}); the registry sends too slowly"
            )


class _HeadWatch:
    """The status line and headers of the request this thread is sending are due by `due`."""

    def __init__(self, seconds: float) -> None:
        self.due = time.monotonic() + seconds
        self.missed = False


_WATCH = threading.local()  # .current: the _HeadWatch of the request this thread is sending


def headers_within(seconds: float, what: str, send: Callable[[], T]) -> T:
    """`send()` (a streamed request of a `deadline_session`: it returns once the status line and
    headers are in) when they arrive within `seconds`; else a RegistryError.

    Nothing in `requests` bounds the time of a whole answer, only each socket read. So the
    request runs here, in the caller's thread, and each read of its answer's head waits at most
    until the deadline, which is checked again before every read: a registry that sends its
    headers a byte at a time is cut off at the deadline, and its connection is dropped.
    """
    watch = _HeadWatch(seconds)
    outer = getattr(_WATCH, "current", None)
    _WATCH.current = watch
    try:
        answer = send()
    except Exception:
        if not watch.missed:
            raise
    else:
        if not watch.missed:
            return answer
    finally:
        _WATCH.current = outer
    raise RegistryError(
        f"{what}: no answer within {seconds:g} s ({DEADLINE_VARIABLE}); the registry answers too slowly"
    )


class _HeadReader(io.RawIOBase):
    """The socket reads of one answer; until its head is in, none waits past the deadline."""

    def __init__(self, sock: Any, watch: _HeadWatch) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._watch: _HeadWatch | None = watch

    def head_done(self) -> None:
        self._watch = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        watch = self._watch
        if watch is None:
            return self._raw.readinto(buffer)
        left = watch.due - time.monotonic()
        if left <= 0:
            watch.missed = True
            raise TimeoutError("the answer's status line and headers are late")
        timeout = self._sock.gettimeout()
        cut = timeout is None or left <= timeout  # a read timing out now means the deadline passed
        self._sock.settimeout(left if cut else timeout)
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            watch.missed = cut
            raise
        finally:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        self._raw.close()
        super().close()


@functools.cache
def _deadline_adapter_class() -> type[Any]:
    """A `requests` transport adapter whose connections read each answer's head with `_HeadReader`
    while a `headers_within` call of their thread waits for it (built once, on first use: it
    needs requests and urllib3)."""
    import http.client

    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class HeadTimedResponse(http.client.HTTPResponse):
        def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            watch = getattr(_WATCH, "current", None)
            self.head_reader = None
            # a socket, or urllib3's TLS-in-TLS transport through an HTTPS proxy: both time out reads
            if watch is not None and all(hasattr(sock, name) for name in ("makefile", "settimeout")):
                self.fp.close()  # the plain reader http.client made; nothing was read from it
                self.head_reader = _HeadReader(sock, watch)
                self.fp = io.BufferedReader(self.head_reader)

        def begin(self) -> None:
            try:
                super().begin()
            finally:  # the body has a deadline of its own (`read_body`, `BlobReader`)
                if self.head_reader is not None:
                    self.head_reader.head_done()

    class Connection(HTTPConnection):
        response_class = HeadTimedResponse

    class TLSConnection(HTTPSConnection):
        response_class = HeadTimedResponse

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    pools = {"http": Pool, "https": TLSPool}

    class DeadlineAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # a SOCKS proxy has connections of its own
                manager.pool_classes_by_scheme = pools
            return manager

    return DeadlineAdapter


_PLAIN_ARGUMENTS = frozenset({"headers", "data", "timeout", "stream", "allow_redirects"})


@functools.cache
def _session_class() -> type[Any]:
    """A `requests.Session` that reads the environment's settings for an origin once and sends
    a registry's requests straight to its transport adapter (built on first use: it needs requests).

    `requests` looks up the proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundle variables again for
    every request, scanning the whole environment twice each time: a few milliseconds of a
    code-only build. One session talks to one registry (and its token service), so the answer
    for an origin is kept; a request that brings its own proxies, CA or certificate is merged
    as `requests` does it.

    A request with only headers, a body, a timeout and the redirect choice (every registry
    request but the token service's) skips `Session.request`'s merging of cookies, hooks and
    per-request settings: a third of its CPU time, 0.3-0.4 ms of each of a push's dozens of
    requests, on the cores the engine needs for its load. The adapter still picks the proxy,
    the CA bundle and the pool, and redirects are followed by `requests` itself. Left out on
    purpose: cookies (a registry's client keeps none, as docker's does not) and `~/.netrc`,
    whose Basic credentials `requests` would put over the registry's bearer token."""
    from urllib.parse import urlsplit

    import requests
    from requests.structures import CaseInsensitiveDict

    class EnvironmentOnceSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self._settings: dict[tuple[str, str, object], Any] = {}

        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            if args or not self.trust_env or not _PLAIN_ARGUMENTS.issuperset(kwargs):
                return super().request(method, url, *args, **kwargs)
            stream = bool(kwargs.get("stream"))
            settings = self.merge_environment_settings(url, {}, stream, None, None)
            prepared = requests.PreparedRequest()
            prepared.method = str(method).upper()
            prepared.prepare_url(url, None)
            headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(self.headers)
            for name, value in (kwargs.get("headers") or {}).items():
                if value is None:
                    headers.pop(name, None)
                else:
                    headers[name] = value
            prepared.headers = headers
            prepared.prepare_body(kwargs.get("data"), None)
            prepared.prepare_hooks({})
            sent = {"timeout": kwargs.get("timeout"), "verify": settings["verify"], "cert": settings["cert"]}
            sent["proxies"] = settings["proxies"]
            response = self.get_adapter(str(prepared.url)).send(prepared, stream=stream, **sent)
            if kwargs.get("allow_redirects", True) and response.is_redirect:
                prepared.prepare_cookies(None)  # an empty jar: `requests` moves a hop's cookies on in it
                hops = [response, *self.resolve_redirects(response, prepared, stream, **sent)]
                response = hops.pop()
                response.history = hops
            if not stream:
                response.content  # noqa: B018 - read now, as requests does without `stream`
            return response

        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> Any:
            if proxies or verify is not None or cert is not None or not self.trust_env:
                return super().merge_environment_settings(url, proxies, stream, verify, cert)
            parts = urlsplit(str(url))
            key = (parts.scheme.lower(), parts.netloc.lower(), stream)
            settings: Any = self._settings.get(key)
            if settings is None:  # two threads may both compute it: the same answer
                settings = super().merge_environment_settings(url, {}, stream, None, None)
                self._settings[key] = settings
            return {**settings, "proxies": dict(settings["proxies"])}

    return EnvironmentOnceSession


def deadline_session() -> requests.Session:
    """A `requests.Session` whose answers `headers_within` can bound (see there), and which reads
    the environment's proxy settings once per origin (`_session_class`)."""
    import requests  # here, not only in the class built once: a missing requests fails every call

    session = _session_class()()
    assert isinstance(session, requests.Session)
    adapter = _deadline_adapter_class()()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_some(raw: Any, size: int) -> bytes:
    """What the connection has now, up to `size` bytes: one socket read, never a wait for all."""
    reader = getattr(raw, "read1", None)
    data = reader(size) if reader is not None else raw.read(size)
    return bytes(data or b"")


def read_body(response: Any, deadline: Deadline) -> bytes:
    """The whole (decoded) body of a streamed `requests` response, under `deadline`; the response
    then answers `.content`, `.json()` and `.text` as if it had been read by requests."""
    raw = response.raw
    raw.decode_content = True
    chunks: list[bytes] = []
    try:
        while True:
            data = read_some(raw, _READ)
            if not data:
                break
            chunks.append(data)
            deadline.arrived(len(data))
    except RegistryError:
        response.close()
        raise
    except Exception as error:  # the connection broke or timed out mid-body
        response.close()
        raise RegistryError(f"{deadline.what}: reading the answer failed: {type(error).__name__}") from None
    body = b"".join(chunks)
    response._content = body  # what requests itself stores once a body is read
    response._content_consumed = True
    return body


class BlobReader:
    """A file-like reader over a blob stream that checks the digest once fully read, under the
    deadline rule (each MiB within the deadline)."""

    def __init__(self, raw: Any, digest: str, registry: str, deadline: Deadline) -> None:
        self._raw = raw
        self._digest = digest
        self._registry = registry
        self._deadline = deadline
        self._hash = hashlib.sha256()
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all that is left when negative), fewer only at the end of the blob."""
        parts: list[bytes] = []
        left = None if size is None or size < 0 else size
        while left is None or left > 0:
            try:
                data = read_some(self._raw, _READ if left is None else min(left, _READ))
            except Exception as error:
                what = self._deadline.what
                raise RegistryError(f"{what}: reading the blob failed: {type(error).__name__}") from None
            if not data:
                self._check()
                break
            self._hash.update(data)
            self._deadline.arrived(len(data))
            parts.append(data)
            left = None if left is None else left - len(data)
        return b"".join(parts)

    def _check(self) -> None:
        if not self._checked:
            self._checked = True
            if "sha256:" + self._hash.hexdigest() != self._digest:
                raise RegistryError(f"registry {self._registry}: blob {self._digest} has wrong content")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
