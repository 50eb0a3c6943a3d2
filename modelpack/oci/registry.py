"""A small client for the OCI distribution API, used for push checks, tags, signatures and referrers.

Registry traffic goes straight over HTTP(S) with ``requests`` -- never through the Docker engine -- so
signing, verification and tag listing work on machines without a daemon.

Usage::

    from modelpack.oci.reference import ImageRef
    from modelpack.oci.registry import RegistryClient

    ref = ImageRef.parse("127.0.0.1:5000/acme/sentiment:1.0")
    client = RegistryClient.for_ref(ref)          # credentials from ~/.docker/config.json
    client.ping()                                  # GET /v2/
    client.list_tags(ref.repository)               # ["1.0", ...]
    desc = client.head_manifest(ref.repository, "1.0")   # Descriptor or None
    man = client.get_manifest(ref.repository, desc.digest)  # Manifest(digest, media_type, raw)
    blob = client.upload_blob(ref.repository, b"...")       # Descriptor; skipped when present
    client.put_manifest(ref.repository, "1.0", man.raw, man.media_type)
    client.referrers(ref.repository, desc.digest, artifact_type="application/vnd.modelpack.manifest.v1+json")

Rules:

- ``localhost``, ``127.0.0.1`` and ``[::1]`` registries are spoken to over plain HTTP, all others over
  HTTPS (``insecure=True`` forces HTTP).
- Authentication: explicit ``username``/``password``, else ``~/.docker/config.json`` (or
  ``$DOCKER_CONFIG/config.json``): ``auths`` entries and ``credHelpers``/``credsStore`` helpers. On a 401
  the ``WWW-Authenticate`` challenge picks Basic or the Bearer token flow; tokens are cached per scope.
- Every failure is a :class:`~modelpack.errors.RegistryError` with a one-line message naming the
  registry, method and path; credentials and tokens never appear in messages.
- Blobs fetched with :meth:`RegistryClient.get_blob` are checked against their digest.
- :meth:`RegistryClient.referrers` uses ``GET /v2/<name>/referrers/<digest>`` and falls back to the
  OCI 1.1 tag scheme (an image index under the tag ``sha256-<hex>``) when the registry lacks it;
  :meth:`RegistryClient.put_manifest` keeps that fallback index up to date for manifests with a
  ``subject`` when the registry does not acknowledge the subject (no ``OCI-Subject`` header); within
  :meth:`RegistryClient.deferred_referrers` it writes each subject's index once, for all its new referrers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from modelpack.digests import sha256_file_and_size
from modelpack.errors import InvalidInputError, RegistryError
from modelpack.oci.credentials import DOCKER_HUB_API, docker_credentials, parse_challenge
from modelpack.oci.reference import DEFAULT_REGISTRY, ImageRef, is_digest
from modelpack.oci.transfer import (
    BlobReader,
    Deadline,
    deadline_session,
    headers_within,
    read_body,
    registry_deadline,
)

if TYPE_CHECKING:
    import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

MONOLITHIC_LIMIT = 16 * 1024 * 1024  # blobs above this are uploaded in PATCH chunks
CHUNK_SIZE = 8 * 1024 * 1024
# a registry may fail a request that races another client's write (distribution answers 500
# "invalid checksum digest format" when it reads a tag link being rewritten): reads and tag
# removals are tried again after these pauses
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
RETRY_PAUSES = (0.1, 0.3, 0.6)
LINK_RACE_PAUSES = (0.05, 0.2, 0.5)  # a manifest PUT refused while a blob link was being rewritten
MAX_TAG_PAGES = 10_000  # pages of a tag list (1000 tags each where the registry honours `n`)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fallback_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag of ``digest``: ``sha256-<hex>``."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            data["artifactType"] = self.artifact_type
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=str(data["mediaType"]),
                digest=str(data["digest"]),
                size=int(data["size"]),
                annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
                artifact_type=data.get("artifactType"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RegistryError(f"malformed descriptor in registry response: {error}") from None


@dataclass(frozen=True)
class Manifest:
    """A manifest as stored: its exact bytes (what the digest covers) and media type."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.raw)
        except ValueError:
            raise RegistryError(f"manifest {self.digest} is not valid JSON") from None
        if not isinstance(data, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return data

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes we hash and sign."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")



# ---------------------------------------------------------------------------------------------------
# client


class RegistryClient:
    """Talks to one registry host. Methods take the repository name (``acme/model``) explicitly."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool | None = None,
        timeout: float = 60.0,
        docker_config: Path | None = None,
        session: requests.Session | None = None,
        deadline: float | None = None,
    ) -> None:
        self.registry = registry
        host = DOCKER_HUB_API if registry in (DEFAULT_REGISTRY, "index.docker.io") else registry
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        plain = insecure if insecure is not None else hostname in _LOCAL_HOSTS
        self.base_url = f"{'http' if plain else 'https'}://{host}"
        self.timeout = timeout  # each socket read
        self.deadline = deadline if deadline is not None else registry_deadline()  # each answer (transfer)
        try:  # a session of its own bounds the time of each answer's head (`headers_within`)
            self._session = session if session is not None else deadline_session()
        except ImportError:
            raise InvalidInputError(
                "talking to a registry needs requests (pip install 'modelpack[sign]')"
            ) from None
        if username is not None:
            self._credentials: tuple[str, str] | None = (username, password or "")
        else:
            self._credentials = docker_credentials(registry, docker_config)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False
        # blobs this client saw a repository have, found or uploaded ((repository, digest) ->
        # size): content-addressed, so one build does not ask about the same blob twice
        self._blobs: dict[tuple[str, str], int] = {}
        # one read-modify-write of a fallback referrers index at a time: a build attaches its
        # version note and SBOM from two threads of this client
        self._fallback_lock = threading.RLock()
        # inside `deferred_referrers`: the referrers added to each (repository, subject), whose
        # fallback index is written once, when the block ends
        self._deferred: dict[tuple[str, str], list[Descriptor]] | None = None

    @classmethod
    def for_ref(cls, ref: ImageRef | str, **kwargs: Any) -> RegistryClient:
        parsed = ImageRef.parse(ref) if isinstance(ref, str) else ref
        return cls(parsed.registry, **kwargs)

    def __repr__(self) -> str:  # never shows credentials
        return f"RegistryClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self._credentials:
            raw = f"{self._credentials[0]}:{self._credentials[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry}: bearer challenge without a realm")
        query = {"service": params["service"]} if "service" in params else {}
        if scope:
            query["scope"] = scope
        auth = self._credentials if self._credentials else None
        if auth and realm.lower().startswith("http://") and self.base_url.startswith("https://"):
            raise RegistryError(
                f"registry {self.registry}: refusing to send credentials to a token service over plain HTTP"
            )
        try:
            response = self._session.get(realm, params=query, auth=auth, timeout=self.timeout, stream=True)
            read_body(response, Deadline(self.deadline, f"registry {self.registry}: token request"))
        except RegistryError:
            raise
        except Exception as error:  # requests.RequestException and friends
            raise RegistryError(
                f"registry {self.registry}: token request failed: {type(error).__name__}"
            ) from None
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.registry}: authentication refused by token service ({response.status_code})"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryError(f"registry {self.registry}: token service returned no token")
        self._tokens[scope] = str(token)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        ok: Iterable[int] = (200,),
        headers: dict[str, str] | None = None,
        allow_missing: bool = False,
        **kwargs: Any,
    ) -> requests.Response | None:
        """Send one request with auth; 401 triggers one challenge round. ``path`` may be a full URL.

        A GET or HEAD answered with a 5xx is tried again (`RETRY_PAUSES`). Returns None for a 404 when ``allow_missing``; raises RegistryError for any other status
        outside ``ok``.
        """
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        shown = path if not path.startswith(("http://", "https://")) else re.sub(r"\?.*$", "", path)
        ok = tuple(ok)
        pauses = RETRY_PAUSES if method in ("GET", "HEAD") else ()
        for pause in (*pauses, None):
            response = self._send(method, url, shown, scope, headers, **kwargs)
            if response.status_code in ok or response.status_code not in TRANSIENT_STATUSES or pause is None:
                break
            response.close()
            time.sleep(pause)
        if response.status_code in ok:
            return response
        if response.status_code == 404 and allow_missing:
            return None
        raise RegistryError(
            f"registry {self.registry}: {method} {shown}: {_describe_failure(response)}", response.status_code
        )

    def _send(
        self, method: str, url: str, shown: str, scope: str, headers: dict[str, str] | None, **kwargs: Any
    ) -> requests.Response:
        """One request, with one challenge round on a 401."""
        # credentials and tokens go to the registry itself only, never to another host named
        # by a Location or Link header (blob storage, a CDN)
        same_origin = _origin(url) == _origin(self.base_url)
        response = None
        for attempt in range(2):
            all_headers = {**(headers or {}), **(self._auth_header(scope) if same_origin else {})}
            try:
                response = self._answer(method, url, shown, all_headers, kwargs)
                if not kwargs.get("stream"):
                    read_body(response, Deadline(self.deadline, f"registry {self.registry}: {method} {shown}"))
            except RegistryError:
                raise
            except Exception as error:
                reason = type(error).__name__
                if "ConnectionError" in reason or "ConnectTimeout" in reason:
                    reason = "cannot connect"
                raise RegistryError(f"registry {self.registry}: {method} {shown}: {reason}") from None
            if response.status_code != 401 or attempt or not same_origin:
                break
            scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer":
                self._fetch_token(params, params.get("scope", scope))
                if params.get("scope") and params["scope"] != scope:
                    self._tokens[scope] = self._tokens[params["scope"]]
            elif scheme == "basic" and self._credentials and not self._basic:
                self._basic = True
            else:
                break
        assert response is not None
        return response

    def _answer(
        self, method: str, url: str, shown: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> requests.Response:
        """The request's status and headers, streamed; within the deadline unless it uploads a
        stream (a large blob, whose sending time is not the registry's answer time)."""

        def send() -> requests.Response:
            return self._session.request(
                method, url, headers=headers, timeout=self.timeout, **{**kwargs, "stream": True}
            )

        data = kwargs.get("data")
        if data is not None and not isinstance(data, (bytes, bytearray, str)):
            return send()
        return headers_within(self.deadline, f"registry {self.registry}: {method} {shown}", send)

    def _must(self, response: requests.Response | None) -> requests.Response:
        assert response is not None
        return response

    # -- API -------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers the v2 API (authenticating if it asks)."""
        self.request("GET", "/v2/")

    def list_tags(self, repository: str) -> list[str]:
        """All tags of ``repository`` (following ``Link`` pagination); [] when it does not exist."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        asked: set[str] = set()
        while path:
            if path in asked or len(asked) >= MAX_TAG_PAGES:  # a registry whose pages never end
                raise RegistryError(f"registry {self.registry}: the tag list of {repository} does not end")
            asked.add(path)
            response = self.request("GET", path, scope=_pull(repository), allow_missing=True)
            if response is None:
                return []
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("tags") or [], list):
                raise RegistryError(f"registry {self.registry}: the tag list of {repository} is not JSON")
            tags.extend(str(tag) for tag in body.get("tags") or [])
            link = response.links.get("next", {}).get("url")
            path = urljoin(self.base_url + "/", link) if link else None
        return tags

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest by tag or digest, or None when absent."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=_pull(repository),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            allow_missing=True,
        )
        if response is None:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # some registries omit it on HEAD; GET tells us
            return self.get_manifest(repository, reference).descriptor
        media_type = response.headers.get("Content-Type", OCI_MANIFEST).split(";")[0].strip()
        return Descriptor(media_type, digest, int(response.headers.get("Content-Length") or 0))

    def get_manifest(self, repository: str, reference: str, *, allow_missing: bool = False) -> Manifest:
        """Fetch a manifest; when ``reference`` is a digest the bytes are checked against it."""
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=_pull(repository),
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            allow_missing=allow_missing,
        )
        if response is None:
            raise _NotFound(f"manifest {repository}:{reference} not found")
        raw = response.content
        digest = sha256_digest(raw)
        if is_digest(reference) and digest != reference:
            raise RegistryError(
                f"registry {self.registry}: manifest {reference} has wrong content ({digest})"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            try:
                media_type = json.loads(raw).get("mediaType") or OCI_MANIFEST
            except (ValueError, AttributeError):
                media_type = OCI_MANIFEST
        return Manifest(digest, media_type, raw)

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """Like :meth:`get_manifest` but None when absent."""
        try:
            return self.get_manifest(repository, reference, allow_missing=True)
        except _NotFound:
            return None

    def put_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
    ) -> Descriptor:
        """Store a manifest under a tag or its digest; maintains the referrers fallback index.

        When the manifest has a ``subject`` and the registry does not answer with an ``OCI-Subject``
        header (no referrers API), the manifest is added to the index at tag ``sha256-<hex>`` of the
        subject. That read-modify-write is not atomic: concurrent writers may lose entries.
        """
        digest = sha256_digest(raw)
        for pause in (*LINK_RACE_PAUSES, None):
            try:
                response = self._must(
                    self.request(
                        "PUT",
                        f"/v2/{repository}/manifests/{reference}",
                        scope=_push(repository),
                        ok=(200, 201, 202),
                        headers={"Content-Type": media_type},
                        data=raw,
                    )
                )
                break
            except RegistryError as error:
                # distribution (2.x) rewrites a blob's link in place on each upload of it, and a
                # manifest checked meanwhile reads it half-written: 400 DIGEST_INVALID, gone a moment
                # later (concurrent builds upload the same layers into one repository)
                if pause is None or error.status != 400 or "DIGEST_INVALID" not in error.message:
                    raise
                time.sleep(pause)
        descriptor = Descriptor(media_type, digest, len(raw))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        subject = body.get("subject") if isinstance(body, dict) else None
        if isinstance(subject, dict) and "OCI-Subject" not in response.headers:
            annotations = body.get("annotations") or {}
            artifact_type = body.get("artifactType") or (body.get("config") or {}).get("mediaType")
            self._add_fallback_referrer(
                repository,
                str(subject.get("digest")),
                Descriptor(media_type, digest, len(raw), dict(annotations), artifact_type),
            )
        return descriptor

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repository}/manifests/{digest}", scope=_push(repository), ok=(200, 202))

    def untag(self, repository: str, tag: str) -> None:
        """Remove `tag` without deleting the manifest it names.

        The distribution API deletes manifests by digest, which drops every tag on that
        manifest, including tags other clients wrote on identical content at the same time.
        So the tag is first pointed at an empty manifest of its own (unique by a random
        annotation), and only that one is deleted.

        A delete the registry fails part-way (a 500 while another client writes tags) can drop
        the placeholder but keep the tag naming it: listed, yet served to nobody. Writing a new
        placeholder and deleting it again clears that, so transient failures are tried again.
        """
        config, _ = self.ensure_blob(repository, EMPTY_JSON, media_type=OCI_EMPTY)
        for pause in (*RETRY_PAUSES, None):
            body = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.to_dict(),
                "layers": [],
                "annotations": {"org.opencontainers.image.ref.name": f"{tag}.{secrets.token_hex(8)}"},
            }
            try:
                placeholder = self.put_manifest(repository, tag, canonical_json(body), OCI_MANIFEST)
                self.delete_manifest(repository, placeholder.digest)
                return
            except RegistryError as error:
                if error.status not in TRANSIENT_STATUSES or pause is None:
                    raise
            time.sleep(pause)

    def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob, or None when the repository does not have it (a blob this client
        saw there already, found or uploaded, is not asked about again)."""
        known = self._blobs.get((repository, digest))
        if known is not None:
            return known
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=_pull(repository), allow_missing=True
        )
        if response is None:
            return None
        size = int(response.headers.get("Content-Length") or 0)
        self._blobs[(repository, digest)] = size
        return size

    def get_blob(self, repository: str, digest: str) -> bytes:
        """Fetch a whole blob and check it hashes to ``digest``."""
        response = self._must(
            self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=_pull(repository))
        )
        data = response.content
        if sha256_digest(data) != digest:
            raise RegistryError(f"registry {self.registry}: blob {digest} has wrong content")
        return data

    def open_blob(self, repository: str, digest: str) -> BlobReader:
        """Stream a blob; the stream raises RegistryError at EOF when the content does not match."""
        response = self._must(
            self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=_pull(repository), stream=True)
        )
        response.raw.decode_content = True
        what = f"registry {self.registry}: GET /v2/{repository}/blobs/{digest}"
        return BlobReader(response.raw, digest, self.registry, Deadline(self.deadline, what))

    def upload_blob(
        self,
        repository: str,
        data: bytes | Path,
        *,
        media_type: str = "application/octet-stream",
        unasked: bool = False,
    ) -> Descriptor:
        """Upload a blob (bytes or a file) unless the repository already has it."""
        return self.ensure_blob(repository, data, media_type=media_type, unasked=unasked)[0]

    def ensure_blob(
        self,
        repository: str,
        data: bytes | Path,
        *,
        media_type: str = "application/octet-stream",
        digest: str | None = None,
        unasked: bool = False,
    ) -> tuple[Descriptor, bool]:
        """Upload a blob unless the repository already has it (one HEAD first): (descriptor, sent).

        Up to ``MONOLITHIC_LIMIT`` bytes go in one POST+PUT; larger blobs are sent as PATCH chunks
        of ``CHUNK_SIZE`` and closed with a PUT carrying the digest. `digest` of a file its writer
        hashed already spares reading it twice; the registry checks it against what arrives.
        `unasked`: the blob is almost surely new (it carries a time), so it is sent without the
        HEAD; a registry that has it already takes it again.
        """
        if isinstance(data, Path) and digest is not None:
            size = data.stat().st_size
        elif isinstance(data, Path):
            digest, size = _file_digest(data)
        else:
            digest, size = sha256_digest(data), len(data)
        descriptor = Descriptor(media_type, digest, size)
        if unasked and (repository, digest) in self._blobs:
            return descriptor, False
        if not unasked and self.head_blob(repository, digest) is not None:
            return descriptor, False
        scope = _push(repository)
        start = self._must(self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,)))
        location = self._location(start)
        if size <= MONOLITHIC_LIMIT:
            body = data.read_bytes() if isinstance(data, Path) else data
            self.request(
                "PUT",
                _with_query(location, digest=digest),
                scope=scope,
                ok=(201, 204),
                headers={"Content-Type": "application/octet-stream"},
                data=body,
            )
            self._blobs[(repository, digest)] = size
            return descriptor, True
        offset = 0
        for chunk in _chunks(data):
            end = offset + len(chunk) - 1
            response = self._must(
                self.request(
                    "PATCH",
                    location,
                    scope=scope,
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(chunk)),
                    },
                    data=chunk,
                )
            )
            location = self._location(response)
            offset = end + 1
        self.request("PUT", _with_query(location, digest=digest), scope=scope, ok=(201, 204))
        self._blobs[(repository, digest)] = size
        return descriptor, True

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: upload response without Location")
        return urljoin(self.base_url + "/", location)

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest`` (referrers API, else the ``sha256-<hex>`` tag)."""
        path = f"/v2/{repository}/referrers/{digest}"
        if artifact_type:
            path += f"?artifactType={artifact_type}"
        response = self.request(
            "GET", path, scope=_pull(repository), headers={"Accept": OCI_INDEX}, allow_missing=True
        )
        index: dict[str, Any] | None = None
        if response is not None and response.headers.get("Content-Type", "").startswith(OCI_INDEX):
            index = response.json()
        if index is None:
            found = self.find_manifest(repository, fallback_tag(digest))
            index = found.json if found else {"manifests": []}
        result = [Descriptor.from_dict(d) for d in index.get("manifests") or []]
        with self._fallback_lock:  # added in a `deferred_referrers` block, not yet in the index
            pending = list((self._deferred or {}).get((repository, digest), []))
        result += [d for d in pending if d.digest not in {r.digest for r in result}]
        if artifact_type:
            result = [d for d in result if d.artifact_type == artifact_type]
        return result

    @contextlib.contextmanager
    def deferred_referrers(self) -> Iterator[None]:
        """Within the block, referrers added to a subject (from any thread of this client) go into
        its fallback index together, in one read and one write when the block ends, also when it
        fails; not one read-modify-write each. The index is read just before it is written, so
        what others added meanwhile stays. Nested blocks write at the outermost one's end."""
        with self._fallback_lock:
            outer = self._deferred is None
            if outer:
                self._deferred = {}
        if not outer:
            yield
            return
        try:
            yield
        except BaseException:
            with contextlib.suppress(RegistryError):  # the block's own error is the one to see
                self._write_deferred()
            raise
        self._write_deferred()

    def _write_deferred(self) -> None:
        with self._fallback_lock:
            deferred, self._deferred = self._deferred or {}, None
            for (repository, subject), added in deferred.items():
                if added:  # (all of them removed again meanwhile: nothing to write)
                    self._write_fallback(repository, subject, added)

    def _add_fallback_referrer(self, repository: str, subject: str, descriptor: Descriptor) -> None:
        with self._fallback_lock:
            if self._deferred is not None:
                self._deferred.setdefault((repository, subject), []).append(descriptor)
            else:
                self._write_fallback(repository, subject, [descriptor])

    def _write_fallback(self, repository: str, subject: str, added: list[Descriptor]) -> None:
        """Read the fallback index of `subject`, add `added` (replacing entries of their digests), write it."""
        tag = fallback_tag(subject)
        current = self.find_manifest(repository, tag)
        index: dict[str, Any] = (
            current.json if current else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        )
        digests = {d.digest for d in added}
        entries = [m for m in index.get("manifests") or [] if m.get("digest") not in digests]
        index["manifests"] = [*entries, *(d.to_dict() for d in added)]
        self.put_manifest(repository, tag, canonical_json(index), OCI_INDEX)

    def remove_fallback_referrer(self, repository: str, subject: str, digest: str) -> None:
        """Drop ``digest`` from the fallback referrers index of ``subject`` (no-op when absent)."""
        tag = fallback_tag(subject)
        with self._fallback_lock:
            if self._deferred and (repository, subject) in self._deferred:
                pending = self._deferred[(repository, subject)]
                pending[:] = [d for d in pending if d.digest != digest]
            current = self.find_manifest(repository, tag)
            if current is None:
                return
            index = current.json
            index["manifests"] = [m for m in index.get("manifests") or [] if m.get("digest") != digest]
            self.put_manifest(repository, tag, canonical_json(index), OCI_INDEX)


class _NotFound(RegistryError):
    pass


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _origin(url: str) -> tuple[str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    default = {"https": ":443", "http": ":80"}.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return scheme, netloc


def _with_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(params)


def _file_digest(path: Path) -> tuple[str, int]:
    hexdigest, size = sha256_file_and_size(path)
    return "sha256:" + hexdigest, size


def _chunks(data: bytes | Path) -> Iterator[bytes]:
    if isinstance(data, Path):
        with data.open("rb") as handle:
            yield from iter(lambda: handle.read(CHUNK_SIZE), b"")
    else:
        for start in range(0, len(data), CHUNK_SIZE):
            yield data[start : start + CHUNK_SIZE]


def _describe_failure(response: requests.Response) -> str:
    """Status plus the registry's first error code/message; never headers or request data."""
    text = f"{response.status_code} {response.reason or ''}".strip()
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    if errors and isinstance(errors[0], dict):
        code = errors[0].get("code", "")
        message = str(errors[0].get("message", ""))[:200]
        text += f" ({code}: {message})" if message else f" ({code})"
    return text
