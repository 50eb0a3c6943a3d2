"""Fetch media given by URL, safely.

A model server fetching URLs chosen by its callers is an SSRF risk, so:
only ``http``/``https``; no user:password in the URL and no credentials or
headers of the incoming request are ever forwarded; every address the host
name resolves to must be public (loopback, private, link-local, multicast and
reserved ranges are refused) unless the operator sets
``MODELPACK_ALLOW_PRIVATE_URLS=1``; the connection goes to the address that was
checked (no DNS rebinding between check and connect); redirects are followed
(at most 5) and re-checked; the body is capped at ``MODELPACK_MAX_URL_BYTES``
(default 100 MB) and each request at ``MODELPACK_URL_TIMEOUT`` seconds (default 30).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5


class FetchError(ValueError):
    """A URL was refused or could not be fetched; the message says why in one line."""


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def private_urls_allowed() -> bool:
    return os.environ.get("MODELPACK_ALLOW_PRIVATE_URLS", "") in ("1", "true", "yes")


def check_url_syntax(url: str) -> None:
    """Refuse what is wrong without any network access (scheme, credentials, host, port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port out of range or not a number raises here)
    except ValueError as error:
        raise FetchError(f"invalid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"URL scheme {parts.scheme or '(none)'!r} is not allowed; use http or https")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials are not allowed")
    if not parts.hostname:
        raise FetchError("URL has no host")


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:  # judged by the IPv4 address the packets reach
            ip = embedded
    return ip.is_global and not ip.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use prefix (RFC 8215)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64, 6to4 or Teredo address carries, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _resolve(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise FetchError(f"cannot resolve {host!r}") from error
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise FetchError(f"cannot resolve {host!r}")
    if not private_urls_allowed():
        for address in addresses:
            if not _is_public(address):
                raise FetchError(
                    f"{host!r} resolves to a private or loopback address; "
                    "set MODELPACK_ALLOW_PRIVATE_URLS=1 to allow it"
                )
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_url(url: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """Return the body of ``url`` under the rules in the module docstring."""
    limit = int(
        max_bytes if max_bytes is not None else _env_float("MODELPACK_MAX_URL_BYTES", DEFAULT_MAX_BYTES)
    )
    seconds = timeout if timeout is not None else _env_float("MODELPACK_URL_TIMEOUT", DEFAULT_TIMEOUT)
    deadline = time.monotonic() + seconds
    for _ in range(MAX_REDIRECTS + 1):
        check_url_syntax(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _resolve(host, port)
        remaining = max(0.1, deadline - time.monotonic())
        cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = cls(host, port, address, remaining)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": "modelpack-runtime", "Accept": "*/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"redirect without Location from {host}")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchError(f"fetching {host}{parts.path} failed: HTTP {response.status}")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise FetchError(f"{host}{parts.path} is larger than the limit of {limit} bytes")
            chunks: list[bytes] = []
            total = 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(f"fetching {host}{parts.path} timed out after {seconds:g}s")
                chunk = response.read(65536)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise FetchError(f"{host}{parts.path} is larger than the limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, TimeoutError | socket.timeout):
                raise FetchError(f"fetching {host}{parts.path} timed out after {seconds:g}s") from error
            raise FetchError(f"fetching {host}{parts.path} failed: {type(error).__name__}") from error
        finally:
            conn.close()
    last = urlsplit(url)  # host and path only: a query may carry a signed token
    raise FetchError(f"too many redirects fetching {last.hostname}{last.path}")
