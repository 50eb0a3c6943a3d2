"""The registry client, sign and verify against an in-memory fake of the distribution API.

The fake plugs in as the client's ``requests.Session``; it implements just enough of the API
(blobs, monolithic and chunked uploads, manifests, tags, optional referrers API, Basic or Bearer
auth) to exercise the client's logic without a network.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from loopback import LoopbackServer, QuietHandler
from requests.structures import CaseInsensitiveDict

from modelpack.errors import InvalidInputError, RegistryError
from modelpack.oci import registry as registry_mod
from modelpack.oci.artifacts import artifact_manifest
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    canonical_json,
    docker_credentials,
    fallback_tag,
    parse_challenge,
    sha256_digest,
)
from modelpack.supply.keys import generate_private_key

USER, SECRET, TOKEN = "alice", "s3cret-pass", "tok-123456"


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers = CaseInsensitiveDict(headers or {})
    response.raw = io.BytesIO(body)
    response.reason = {200: "OK", 201: "Created", 202: "Accepted", 401: "Unauthorized", 404: "Not Found"}.get(
        status, ""
    )
    return response


def _error(status: int, code: str, message: str) -> requests.Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return _response(status, body, {"Content-Type": "application/json"})


class FakeRegistry:
    """An in-memory registry reachable as a requests.Session."""

    def __init__(self, auth: str = "none", referrers_api: bool = False) -> None:
        self.auth = auth
        self.referrers_api = referrers_api
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}  # repo -> ref -> (raw, media type)
        self.uploads: dict[str, bytearray] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.token_requests: list[dict[str, Any]] = []

    # requests.Session surface
    def close(self) -> None:
        pass

    def get(
        self, url: str, params: dict[str, str] | None = None, auth: Any = None, timeout: float = 0, **_: Any
    ) -> Any:
        self.token_requests.append({"url": url, "params": params, "auth": auth})
        if auth == (USER, SECRET):
            return _response(200, json.dumps({"token": TOKEN}).encode())
        return _response(401)

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        headers = headers or {}
        self.log.append((method, url, dict(headers)))
        denied = self._check_auth(headers)
        if denied is not None:
            return denied
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        data = kwargs.get("data") or b""
        if path == "/v2/":
            return _response(200, b"{}")
        match = re.match(r"^/v2/(.+)/(blobs/uploads|blobs|manifests|tags|referrers)/?(.*)$", path)
        assert match, path
        repo, kind, rest = match.groups()
        if kind == "blobs/uploads":
            return self._upload(method, repo, rest, query, data)
        if kind == "blobs":
            blob = self.blobs.get(rest)
            if blob is None:
                return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return _response(200, b"" if method == "HEAD" else blob, {"Content-Length": str(len(blob))})
        if kind == "tags":
            tags = sorted(r for r in self.manifests.get(repo, {}) if not r.startswith("sha256:"))
            if repo not in self.manifests:
                return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
            return _response(200, json.dumps({"name": repo, "tags": tags}).encode())
        if kind == "referrers":
            if not self.referrers_api:
                return _response(404, b"404 page not found", {"Content-Type": "text/plain"})
            found = []
            for raw, media_type in {v[0]: v for v in self.manifests.get(repo, {}).values()}.values():
                body = json.loads(raw)
                if (body.get("subject") or {}).get("digest") == rest:
                    found.append(
                        {
                            "mediaType": media_type,
                            "digest": sha256_digest(raw),
                            "size": len(raw),
                            "artifactType": body.get("artifactType"),
                        }
                    )
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
            return _response(200, json.dumps(index).encode(), {"Content-Type": OCI_INDEX})
        return self._manifest(method, repo, rest, headers, data)

    def _check_auth(self, headers: dict[str, str]) -> Any:
        given = headers.get("Authorization", "")
        if self.auth == "basic":
            expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
            if given != expected:
                return _response(401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})
        if self.auth == "bearer" and given != f"Bearer {TOKEN}":
            challenge = 'Bearer realm="https://auth.example/token",service="fake",scope="repository:x:pull"'
            return _response(401, b"", {"WWW-Authenticate": challenge})
        return None

    def _upload(self, method: str, repo: str, session: str, query: dict[str, str], data: bytes) -> Any:
        if method == "POST":
            session_id = f"u{len(self.uploads)}"
            self.uploads[session_id] = bytearray()
            return _response(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{session_id}?state=0"})
        buffer = self.uploads[session]
        buffer += data
        if method == "PATCH":
            return _response(
                202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{session}?state={len(buffer)}"}
            )
        digest = query["digest"]
        if sha256_digest(bytes(buffer)) != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self.blobs[digest] = bytes(buffer)
        return _response(201, b"", {"Location": f"/v2/{repo}/blobs/{digest}"})

    def _manifest(self, method: str, repo: str, ref: str, headers: dict[str, str], data: bytes) -> Any:
        store = self.manifests.setdefault(repo, {})
        if method == "PUT":
            digest = sha256_digest(data)
            store[digest] = (data, headers["Content-Type"])
            if not ref.startswith("sha256:"):
                store[ref] = store[digest]
            extra = {"Docker-Content-Digest": digest}
            if self.referrers_api and b'"subject"' in data:
                extra["OCI-Subject"] = json.loads(data)["subject"]["digest"]
            return _response(201, b"", extra)
        if method == "DELETE":
            for key in [k for k, v in store.items() if sha256_digest(v[0]) == ref]:
                del store[key]
            return _response(202)
        if ref not in store:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        raw, media_type = store[ref]
        head = {
            "Content-Type": media_type,
            "Docker-Content-Digest": sha256_digest(raw),
            "Content-Length": str(len(raw)),
        }
        return _response(200, b"" if method == "HEAD" else raw, head)


def make_client(fake: FakeRegistry, **kwargs: Any) -> RegistryClient:
    return RegistryClient("127.0.0.1:5000", session=fake, docker_config=Path("/nonexistent"), **kwargs)  # type: ignore[arg-type]


# --- references -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/acme/model:v1", ("127.0.0.1:5000", "acme/model", "v1", None)),
        ("localhost/model", ("localhost", "model", "latest", None)),
        ("ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
        ("ghcr.io/a/b@sha256:" + "a" * 64, ("ghcr.io", "a/b", None, "sha256:" + "a" * 64)),
        ("reg.io:443/a/b:t@sha256:" + "b" * 64, ("reg.io:443", "a/b", "t", "sha256:" + "b" * 64)),
    ],
)
def test_image_ref_parse(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text", ["", "a b", "Repo/Upper", "x/y@sha256:short", "x/y:bad tag", "x/y:-bad"])
def test_image_ref_rejects_bad_references(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^invalid (repository name in |digest in |tag in )?image reference '"):
        ImageRef.parse(text)


def test_scheme_is_http_only_for_loopback() -> None:
    assert RegistryClient("127.0.0.1:5000", docker_config=Path("/x")).base_url == "http://127.0.0.1:5000"
    assert RegistryClient("localhost:5000", docker_config=Path("/x")).base_url == "http://localhost:5000"
    assert RegistryClient("ghcr.io", docker_config=Path("/x")).base_url == "https://ghcr.io"
    assert RegistryClient("docker.io", docker_config=Path("/x")).base_url == "https://registry-1.docker.io"
    assert RegistryClient("reg.local", insecure=True, docker_config=Path("/x")).base_url == "http://reg.local"


def test_fallback_tag() -> None:
    assert fallback_tag("sha256:" + "c" * 64) == "sha256-" + "c" * 64


# --- blobs, manifests, tags -----------------------------------------------------------------------


def test_blob_upload_monolithic_and_skip_when_present() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    descriptor = client.upload_blob("a/b", b"hello")
    assert fake.blobs[descriptor.digest] == b"hello"
    posts = [m for m, _, _ in fake.log if m == "POST"]
    client.upload_blob("a/b", b"hello")
    assert [m for m, _, _ in fake.log if m == "POST"] == posts  # HEAD found it: no second upload
    assert client.get_blob("a/b", descriptor.digest) == b"hello"
    assert client.head_blob("a/b", sha256_digest(b"nope")) is None


def test_a_blob_that_carries_a_time_is_sent_without_asking_first() -> None:
    """An SBOM or record payload (it carries its build time) is never there yet: no HEAD
    before its upload. Sent again, the registry takes it again."""
    fake = FakeRegistry()
    client = make_client(fake)
    descriptor = client.upload_blob("a/b", b"built at noon", unasked=True)
    assert [m for m, _, _ in fake.log] == ["POST", "PUT"] and fake.blobs[descriptor.digest] == b"built at noon"
    assert client.upload_blob("a/b", b"built at noon", unasked=True) == descriptor
    assert [m for m, _, _ in fake.log] == ["POST", "PUT"]  # this client sent it: nothing to send


def test_a_blob_seen_in_a_repository_is_not_asked_about_again() -> None:
    """One build pushes the empty config of its claim, version note, SBOM and record: one
    question. A blob found missing is asked about again; another repository is asked on its own."""
    fake = FakeRegistry()
    client = make_client(fake)
    empty = client.upload_blob("a/b", b"{}").digest
    present = sha256_digest(b"there")
    fake.blobs[present] = b"there"
    missing = sha256_digest(b"later")
    asked = len(fake.log)
    for _ in range(3):
        assert client.ensure_blob("a/b", b"{}") == (Descriptor("application/octet-stream", empty, 2), False)
    assert client.head_blob("a/b", empty) == 2 and len(fake.log) == asked
    assert client.head_blob("a/b", present) == 5 and client.head_blob("a/b", present) == 5
    assert len(fake.log) == asked + 1
    assert client.head_blob("a/b", missing) is None
    fake.blobs[missing] = b"later"
    assert client.head_blob("a/b", missing) == 5  # asked again: it may have arrived
    assert client.head_blob("c/d", empty) == 2 and len(fake.log) == asked + 4


def test_blob_upload_chunked_for_large_blobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry_mod, "MONOLITHIC_LIMIT", 10)
    monkeypatch.setattr(registry_mod, "CHUNK_SIZE", 7)
    fake = FakeRegistry()
    client = make_client(fake)
    data = bytes(range(40))
    path = tmp_path / "blob"
    path.write_bytes(data)
    descriptor = client.upload_blob("a/b", path)
    assert descriptor.size == 40
    assert fake.blobs[descriptor.digest] == data
    patches = [headers for method, _, headers in fake.log if method == "PATCH"]
    assert [h["Content-Range"] for h in patches] == ["0-6", "7-13", "14-20", "21-27", "28-34", "35-39"]


def test_a_file_whose_digest_its_writer_knows_is_not_read_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A gzipped layer is hashed while it is written; uploading it must not hash the file again
    (81 MB of a one-dependency change), and the upload still names that digest."""
    fake = FakeRegistry()
    client = make_client(fake)
    path = tmp_path / "blob"
    path.write_bytes(b"layer bytes")

    def no_second_read(_: Path) -> tuple[str, int]:
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(registry_mod, "_file_digest", no_second_read)
    digest = sha256_digest(b"layer bytes")
    descriptor, sent = client.ensure_blob("a/b", path, digest=digest)
    assert sent and descriptor.digest == digest and descriptor.size == len(b"layer bytes")
    assert fake.blobs[digest] == b"layer bytes"


def test_get_blob_rejects_wrong_content() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    digest = client.upload_blob("a/b", b"good").digest
    fake.blobs[digest] = b"evil"
    with pytest.raises(RegistryError, match="wrong content"):
        client.get_blob("a/b", digest)
    reader = client.open_blob("a/b", digest)
    with pytest.raises(RegistryError, match="wrong content"):
        while reader.read(2):
            pass


def test_manifest_roundtrip_and_tags() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    raw = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []})
    put = client.put_manifest("a/b", "v1", raw)
    head = client.head_manifest("a/b", "v1")
    assert head is not None and head.digest == put.digest == sha256_digest(raw)
    got = client.get_manifest("a/b", put.digest)
    assert got.raw == raw and got.media_type == OCI_MANIFEST
    assert client.head_manifest("a/b", "v2") is None
    assert client.find_manifest("a/b", "v2") is None
    assert client.list_tags("a/b") == ["v1"]
    assert client.list_tags("nope/none") == []


def test_get_manifest_by_digest_checks_content() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    raw = canonical_json({"schemaVersion": 2, "layers": []})
    digest = client.put_manifest("a/b", "v1", raw).digest
    fake.manifests["a/b"][digest] = (b'{"schemaVersion":2,"layers":[1]}', OCI_MANIFEST)
    with pytest.raises(RegistryError, match="wrong content"):
        client.get_manifest("a/b", digest)


def test_errors_are_one_line_with_registry_code() -> None:
    client = make_client(FakeRegistry())
    with pytest.raises(RegistryError) as caught:
        client.get_manifest("a/b", "missing")
    message = caught.value.message
    assert "\n" not in message
    assert "127.0.0.1:5000" in message and "404" in message and "MANIFEST_UNKNOWN" in message


def test_unreachable_registry_is_a_registry_error() -> None:
    client = RegistryClient("127.0.0.1:9", docker_config=Path("/x"), timeout=2)
    with pytest.raises(RegistryError, match="cannot connect"):
        client.ping()


# --- referrers ------------------------------------------------------------------------------------


def _artifact(subject: str, artifact_type: str) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256_digest(b"{}"),
                "size": 2,
            },
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        }
    )


@pytest.mark.parametrize("referrers_api", [False, True])
def test_referrers_with_and_without_api(referrers_api: bool) -> None:
    fake = FakeRegistry(referrers_api=referrers_api)
    client = make_client(fake)
    subject = sha256_digest(b"image")
    first = client.put_manifest(
        "a/b", sha256_digest(_artifact(subject, "x/one")), _artifact(subject, "x/one")
    )
    second = client.put_manifest(
        "a/b", sha256_digest(_artifact(subject, "x/two")), _artifact(subject, "x/two")
    )
    assert (fallback_tag(subject) in fake.manifests["a/b"]) is not referrers_api
    assert {d.digest for d in client.referrers("a/b", subject)} == {first.digest, second.digest}
    only = client.referrers("a/b", subject, artifact_type="x/two")
    assert [d.digest for d in only] == [second.digest]
    assert client.referrers("a/b", sha256_digest(b"other")) == []


def test_referrers_attached_from_two_threads_are_all_in_the_fallback_index() -> None:
    """A build attaches its version note and its SBOM at the same time through one client: the
    fallback index is read and rewritten by one of them at a time, so neither entry is lost."""

    class SlowIndex(FakeRegistry):
        def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
            answer = super().request(method, url, headers, **kwargs)
            if method == "GET" and "/manifests/sha256-" in url:
                time.sleep(0.02)  # between reading the index and writing it back
            return answer

    fake = SlowIndex()
    client = make_client(fake)
    subject = sha256_digest(b"image")

    def attach(kind: str) -> None:
        for n in range(5):
            raw = _artifact(subject, f"x/{kind}{n}")
            client.put_manifest("a/b", sha256_digest(raw), raw)

    threads = [threading.Thread(target=attach, args=(kind,)) for kind in ("note", "sbom")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(client.referrers("a/b", subject)) == 10


def _fallback_requests(fake: FakeRegistry, subject: str) -> list[str]:
    return [method for method, url, _ in fake.log if url.endswith("/manifests/" + fallback_tag(subject))]


def test_referrers_added_in_a_deferred_block_go_into_the_fallback_index_in_one_write() -> None:
    """A build attaches a version note, an SBOM (another thread) and a record to one image: one
    read and one write of its fallback index, not a read-modify-write each."""
    fake = FakeRegistry()
    client = make_client(fake)
    subject = sha256_digest(b"image")
    with client.deferred_referrers():
        note = client.put_manifest("a/b", "n", _artifact(subject, "x/note"))
        sbom = threading.Thread(target=client.put_manifest, args=("a/b", "s", _artifact(subject, "x/sbom")))
        sbom.start()
        sbom.join()
        record = client.put_manifest("a/b", "r", _artifact(subject, "x/record"))
        assert _fallback_requests(fake, subject) == []
        assert note.digest in {d.digest for d in client.referrers("a/b", subject)}  # pending, yet listed
        del fake.log[:]
    assert _fallback_requests(fake, subject) == ["GET", "PUT"]
    found = [d.artifact_type for d in client.referrers("a/b", subject)]
    assert found == ["x/note", "x/sbom", "x/record"] and record.digest


def test_a_deferred_write_keeps_what_another_client_added_meanwhile() -> None:
    fake = FakeRegistry()
    mine, theirs = make_client(fake), make_client(fake)
    subject = sha256_digest(b"image")
    with pytest.raises(RuntimeError, match="the build failed"):
        with mine.deferred_referrers():
            mine.put_manifest("a/b", "one", _artifact(subject, "x/mine"))
            theirs.put_manifest("a/b", "two", _artifact(subject, "x/theirs"))
            raise RuntimeError("the build failed")  # what was attached is indexed all the same
    assert sorted(d.artifact_type or "" for d in mine.referrers("a/b", subject)) == ["x/mine", "x/theirs"]


def test_fallback_index_entries_can_be_removed() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    subject = sha256_digest(b"image")
    put = client.put_manifest("a/b", sha256_digest(_artifact(subject, "x/one")), _artifact(subject, "x/one"))
    client.remove_fallback_referrer("a/b", subject, put.digest)
    assert client.referrers("a/b", subject) == []


# --- auth -----------------------------------------------------------------------------------------


def test_basic_auth_from_explicit_credentials() -> None:
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, username=USER, password=SECRET)
    client.ping()
    assert fake.log[-1][2]["Authorization"].startswith("Basic ")


def test_bearer_token_flow() -> None:
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, username=USER, password=SECRET)
    assert client.list_tags("a/b") == []
    assert fake.token_requests[0]["params"] == {"service": "fake", "scope": "repository:x:pull"}
    assert fake.log[-1][2]["Authorization"] == f"Bearer {TOKEN}"
    client.list_tags("a/b")
    assert len(fake.token_requests) == 1  # cached


def test_refused_credentials_do_not_leak() -> None:
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, username=USER, password="wrong-" + SECRET)
    with pytest.raises(RegistryError) as caught:
        client.ping()
    assert "authentication refused" in caught.value.message
    assert SECRET not in caught.value.message and USER not in caught.value.message
    assert SECRET not in repr(client)
    fake = FakeRegistry(auth="basic")
    with pytest.raises(RegistryError) as caught:
        make_client(fake).ping()
    assert "401" in caught.value.message


def test_docker_config_credentials(tmp_path: Path) -> None:
    auth = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"auths": {"127.0.0.1:5000": {"auth": auth}, "https://index.docker.io/v1/": {"auth": auth}}}
        )
    )
    assert docker_credentials("127.0.0.1:5000", config) == (USER, SECRET)
    assert docker_credentials("docker.io", config) == (USER, SECRET)
    assert docker_credentials("ghcr.io", config) is None
    assert docker_credentials("ghcr.io", tmp_path / "missing.json") is None
    fake = FakeRegistry(auth="basic")
    client = RegistryClient("127.0.0.1:5000", session=fake, docker_config=config)  # type: ignore[arg-type]
    client.ping()


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"bob:pw").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.example": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_credentials("reg.example") == ("bob", "pw")


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://a/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://a/token", "service": "reg", "scope": "repository:a/b:pull,push"}


# --- sign and verify over the fake ----------------------------------------------------------------


def test_sign_and_verify_over_fake_registry_with_referrers_api() -> None:
    from modelpack.pipeline.resolve_types import ResolveResult
    from modelpack.supply.record import ImageRecord, InputDigests, RecordSource, build_record, push_record
    from modelpack.supply.signing import sign, signature_tag
    from modelpack.supply.verification import VerificationFailed, verify

    fake = FakeRegistry(referrers_api=True)
    client = make_client(fake)
    config = client.upload_blob("a/b", b'{"os":"linux"}')
    image = client.put_manifest(
        "a/b",
        "v1",
        canonical_json(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_dict(), "layers": []}
        ),
    )
    source = RecordSource(
        image=ImageRecord("127.0.0.1:5000/a/b:v1", image.digest),
        base_image=ImageRecord("python:3.11", None),
        inputs=InputDigests(sha256_digest(b"c")),
        resolve=ResolveResult("3.11", None, None, "cpu", "python:3.11", "test"),
    )
    doc = build_record(source, build_time="2024-01-01T00:00:00Z")
    artifact = push_record(client, "a/b", image, doc)
    key = generate_private_key()
    result = sign("127.0.0.1:5000/a/b:v1", key, client=client)
    assert result.manifests_signed == (artifact.digest,)
    assert signature_tag(image.digest) in fake.manifests["a/b"]
    verified = verify("127.0.0.1:5000/a/b:v1", key.public_key(), client=client)
    assert verified.manifest == doc
    with pytest.raises(VerificationFailed, match="matches the key"):
        verify("127.0.0.1:5000/a/b:v1", generate_private_key().public_key(), client=client)


def _tar_layer(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A gzip tar of (path, data, hardlink target) entries; data None and no target -> directory."""
    import gzip
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for path, data, link in entries:
            info = tarfile.TarInfo(path)
            if link is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = link
                archive.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _push_layers(client: RegistryClient, layers: list[bytes]) -> Descriptor:
    """An OCI image `a/b:v1` of the given gzip layers and an empty config."""
    descriptors = [
        client.upload_blob("a/b", blob, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
        for blob in layers
    ]
    config = client.upload_blob("a/b", b"{}")
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_dict(),
        "layers": [d.to_dict() for d in descriptors],
    }
    return client.put_manifest("a/b", "v1", canonical_json(body))


def test_layer_walk_applies_overrides_whiteouts_and_hardlinks() -> None:
    from modelpack.supply.verification import layer_file_hashes

    fake = FakeRegistry()
    client = make_client(fake)
    layers = [
        _tar_layer(
            [
                ("./app/a.py", b"old", None),
                ("app/gone.py", b"x", None),
                ("models/ckpt/w.bin", b"weights", None),
                ("models/ckpt/extra.bin", b"e", None),
            ]
        ),
        _tar_layer(
            [
                ("app/a.py", b"new", None),
                ("app/.wh.gone.py", b"", None),
                ("models/.wh..wh..opq", b"", None),
                ("models/ckpt", None, None),
                ("models/ckpt/w2.bin", b"w2", None),
                ("models/ckpt/link.bin", None, "models/ckpt/w2.bin"),
            ]
        ),
    ]
    image = _push_layers(client, layers)
    wanted = {
        "/app/a.py",
        "/app/gone.py",
        "/models/ckpt/w.bin",
        "/models/ckpt/w2.bin",
        "/models/ckpt/link.bin",
    }
    found = layer_file_hashes(client, "a/b", image.digest, wanted)
    sha = lambda data: sha256_digest(data).split(":")[1]  # noqa: E731
    assert found == {
        "/app/a.py": (3, sha(b"new")),
        "/models/ckpt/w2.bin": (2, sha(b"w2")),
        "/models/ckpt/link.bin": (2, sha(b"w2")),
    }
    # a corrupted layer blob is caught by its digest while streaming
    fake.blobs[sha256_digest(layers[1])] = layers[0]
    with pytest.raises(RegistryError, match="wrong content"):
        layer_file_hashes(client, "a/b", image.digest, wanted)


def test_simple_signing_payload_matches_cosign_bytes() -> None:
    from modelpack.supply.signing import payload_digest, signature_tag, simple_signing_payload

    digest = "sha256:" + "e" * 64
    payload = simple_signing_payload("127.0.0.1:5000/acme/m", digest)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/acme/m"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"e" * 64 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    assert payload_digest(payload) == digest
    assert payload_digest(b'{"critical":{"type":"other"}}') is None
    assert signature_tag(digest) == "sha256-" + "e" * 64 + ".sig"


def test_credentials_are_not_sent_to_other_hosts() -> None:
    """A Location (or Link) naming another host gets neither the password nor the bearer token."""

    class RedirectingRegistry(FakeRegistry):
        def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            if parts.netloc == "storage.example":
                self.log.append((method, url, dict(headers or {})))
                local = url.replace("https://storage.example", "http://127.0.0.1:5000")
                saved, self.auth = self.auth, "none"  # the storage host needs no registry credentials
                try:
                    return super().request(
                        method, local, headers={**(headers or {}), "Authorization": ""}, **kwargs
                    )
                finally:
                    self.auth = saved
            response = super().request(method, url, headers=headers, **kwargs)
            location = response.headers.get("Location", "")
            if method == "POST" and location.startswith("/v2/"):
                response.headers["Location"] = "https://storage.example" + location
            return response

    for auth, credentials in (("basic", {"username": USER, "password": SECRET}), ("bearer", {})):
        fake = RedirectingRegistry(auth=auth)
        client = (
            make_client(fake, **credentials)
            if credentials
            else make_client(fake, username=USER, password=SECRET)
        )
        descriptor = client.upload_blob("a/b", b"payload")
        assert fake.blobs[descriptor.digest] == b"payload"
        foreign = [entry for entry in fake.log if "storage.example" in entry[1]]
        assert foreign, fake.log
        for _, _, headers in foreign:
            assert "Authorization" not in headers, headers
        own = [entry for entry in fake.log if "127.0.0.1:5000" in entry[1]]
        assert any("Authorization" in headers for _, _, headers in own)


def test_layer_walk_fails_closed_on_a_hardlink_to_an_unhashed_file() -> None:
    """An upper layer replacing a recorded file by a hard link to an unrecorded one must not pass
    with the lower layer's (good) hash."""
    from modelpack.supply.verification import VerificationFailed, layer_file_hashes

    fake = FakeRegistry()
    client = make_client(fake)
    layers = [
        _tar_layer([("app/model.py", b"good", None)]),
        _tar_layer([("tmp/evil.py", b"evil", None), ("app/model.py", None, "tmp/evil.py")]),
    ]
    image = _push_layers(client, layers)
    with pytest.raises(VerificationFailed, match=r"/app/model\.py"):
        layer_file_hashes(client, "a/b", image.digest, {"/app/model.py"})
    # the same link inside one layer whose target is recorded too is followed
    found = layer_file_hashes(client, "a/b", image.digest, {"/app/model.py", "/tmp/evil.py"})
    evil = sha256_digest(b"evil").split(":")[1]
    assert found["/app/model.py"] == (4, evil) == found["/tmp/evil.py"]


def test_credentials_never_go_to_a_plain_http_token_service() -> None:
    class PlainRealm(FakeRegistry):
        def _check_auth(self, headers: dict[str, str]) -> Any:
            if headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = 'Bearer realm="http://auth.example/token",service="fake"'
                return _response(401, b"", {"WWW-Authenticate": challenge})
            return None

    fake = PlainRealm(auth="bearer")
    client = RegistryClient(
        "reg.example",
        username=USER,
        password=SECRET,
        session=fake,  # type: ignore[arg-type]
        docker_config=Path("/nonexistent"),
    )
    assert client.base_url.startswith("https://")
    with pytest.raises(RegistryError, match="plain HTTP"):
        client.ping()
    assert fake.token_requests == []  # the password was never sent


def test_same_origin_ignores_default_ports_and_case() -> None:
    from modelpack.oci.registry import _origin

    assert _origin("https://Reg.Example:443/v2/x") == _origin("https://reg.example")
    assert _origin("http://127.0.0.1:5000/v2/") == _origin("http://127.0.0.1:5000")
    assert _origin("https://storage.example/v2/") != _origin("https://reg.example")
    assert _origin("http://reg.example/v2/") != _origin("https://reg.example")


def test_layer_walk_resolves_dot_dot_like_the_engine() -> None:
    """`app/x/../model.py` in an upper layer replaces /app/model.py when the engine unpacks it."""
    from modelpack.supply.verification import layer_file_hashes

    fake = FakeRegistry()
    client = make_client(fake)
    layers = [
        _tar_layer([("app/model.py", b"good", None)]),
        _tar_layer([("app/x/../model.py", b"evil", None)]),
    ]
    image = _push_layers(client, layers)
    found = layer_file_hashes(client, "a/b", image.digest, {"/app/model.py"})
    assert found == {"/app/model.py": (4, sha256_digest(b"evil").split(":")[1])}


def test_layer_walk_drops_files_under_a_directory_replaced_by_a_symlink() -> None:
    import tarfile as _tarfile

    from modelpack.supply.verification import layer_file_hashes

    fake = FakeRegistry()
    client = make_client(fake)
    raw = io.BytesIO()
    with _tarfile.open(fileobj=raw, mode="w") as archive:
        link = _tarfile.TarInfo("app/1")
        link.type = _tarfile.SYMTYPE
        link.linkname = "/tmp/evil"
        archive.addfile(link)
    import gzip

    layers = [
        _tar_layer([("app/1", None, None), ("app/1/model.py", b"good", None)]),
        gzip.compress(raw.getvalue(), mtime=0),
    ]
    image = _push_layers(client, layers)
    assert layer_file_hashes(client, "a/b", image.digest, {"/app/1/model.py"}) == {}


def test_a_tag_list_that_is_not_json_is_a_registry_error() -> None:
    """A registry (or a proxy in front of it) answering 200 with HTML: one line, exit 1."""
    class Html(QuietHandler):
        def do_GET(self) -> None:
            self.reply(b"<html>login</html>", "text/html")

    with LoopbackServer(Html) as server:
        client = RegistryClient(server.host)
        with pytest.raises(RegistryError, match="tag list of a/b is not JSON") as caught:
            client.list_tags("a/b")
        assert caught.value.exit_code == 1


class FlakyRegistry(FakeRegistry):
    """Fails like distribution does while another client rewrites tags: a read answers 500 once,
    and a manifest DELETE answers 500 after dropping the manifest but not the tags naming it (they
    stay listed and are served to nobody)."""

    def __init__(self, failing_reads: int = 0, failing_deletes: int = 0, delete_status: int = 500) -> None:
        super().__init__()
        self.failing_reads, self.failing_deletes, self.delete_status = failing_reads, failing_deletes, delete_status
        self.dangling: set[tuple[str, str]] = set()

    def _manifest(self, method: str, repo: str, ref: str, headers: dict[str, str], data: bytes) -> Any:
        if method in ("GET", "HEAD") and self.failing_reads:
            self.failing_reads -= 1
            return _error(500, "UNKNOWN", "invalid checksum digest format")
        if method in ("GET", "HEAD") and (repo, ref) in self.dangling:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        if method == "PUT":
            self.dangling.discard((repo, ref))
        if method == "DELETE" and self.delete_status == 405:
            return _error(405, "UNSUPPORTED", "The operation is unsupported.")
        if method == "DELETE" and self.failing_deletes:
            self.failing_deletes -= 1
            store = self.manifests[repo]
            for key, (raw, _) in list(store.items()):
                if sha256_digest(raw) == ref:
                    if key.startswith("sha256:"):
                        del store[key]
                    else:
                        self.dangling.add((repo, key))
            return _error(500, "UNKNOWN", "invalid checksum digest format")
        return super()._manifest(method, repo, ref, headers, data)


@pytest.fixture
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "RETRY_PAUSES", (0.0, 0.0, 0.0))
    monkeypatch.setattr(registry_mod, "LINK_RACE_PAUSES", (0.0, 0.0, 0.0))


class RacingUploadsRegistry(FakeRegistry):
    """distribution 2.x while another client uploads a blob the manifest names: its link file is
    rewritten in place, so the manifest's check reads it half-written (400 DIGEST_INVALID)."""

    def __init__(self, refusals: int, code: str = "DIGEST_INVALID") -> None:
        super().__init__()
        self.refusals, self.code, self.puts = refusals, code, 0

    def _manifest(self, method: str, repo: str, ref: str, headers: dict[str, str], data: bytes) -> Any:
        if method == "PUT":
            self.puts += 1
            if self.refusals:
                self.refusals -= 1
                return _error(400, self.code, "provided digest did not match uploaded content")
        return super()._manifest(method, repo, ref, headers, data)


def test_a_manifest_refused_while_a_blob_link_is_rewritten_is_put_again(no_retry_pause: None) -> None:
    fake = RacingUploadsRegistry(refusals=2)
    digest = _tagged(make_client(fake), "v1")
    assert fake.puts == 3 and sha256_digest(fake.manifests["a/b"]["v1"][0]) == digest


@pytest.mark.parametrize(("refusals", "code"), [(4, "DIGEST_INVALID"), (1, "MANIFEST_INVALID")])
def test_a_manifest_the_registry_keeps_refusing_is_one_error(
    no_retry_pause: None, refusals: int, code: str
) -> None:
    fake = RacingUploadsRegistry(refusals, code)
    with pytest.raises(RegistryError, match=code):
        _tagged(make_client(fake), "v1")
    assert fake.puts == min(refusals, 4)  # an invalid manifest is not sent again


def _tagged(client: RegistryClient, tag: str) -> str:
    raw = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "annotations": {"t": tag}})
    return client.put_manifest("a/b", tag, raw, OCI_MANIFEST).digest


def test_a_read_the_registry_fails_once_is_tried_again(no_retry_pause: None) -> None:
    fake = FlakyRegistry()
    client = make_client(fake)
    digest = _tagged(client, "v1")
    fake.failing_reads = 1
    found = client.head_manifest("a/b", "v1")
    assert found is not None and found.digest == digest


def test_a_read_that_keeps_failing_is_one_registry_error(no_retry_pause: None) -> None:
    fake = FlakyRegistry()
    client = make_client(fake)
    _tagged(client, "v1")
    fake.failing_reads = 10
    with pytest.raises(RegistryError) as caught:
        client.get_manifest("a/b", "v1")
    assert caught.value.status == 500 and "\n" not in caught.value.message
    reads = [m for m, url, _ in fake.log if m == "GET" and url.endswith("/manifests/v1")]
    assert len(reads) == 1 + len(registry_mod.RETRY_PAUSES)


def test_untag_after_a_delete_that_failed_part_way_leaves_no_tag(no_retry_pause: None) -> None:
    """The failure seen in CI: the tag outlived its manifest, listed but unreadable, so a check by
    HEAD took it for removed."""
    fake = FlakyRegistry(failing_deletes=1)
    client = make_client(fake)
    kept = _tagged(client, "keep")
    _tagged(client, "c-0000000000000001-runtime")
    client.untag("a/b", "c-0000000000000001-runtime")
    assert client.list_tags("a/b") == ["keep"]
    assert client.get_manifest("a/b", "keep").digest == kept


def test_untag_on_a_registry_without_deletes_fails_at_once(no_retry_pause: None) -> None:
    fake = FlakyRegistry(delete_status=405)
    client = make_client(fake)
    _tagged(client, "scratch")
    with pytest.raises(RegistryError) as caught:
        client.untag("a/b", "scratch")
    assert caught.value.status == 405
    assert len([m for m, _, _ in fake.log if m == "DELETE"]) == 1


def test_an_artifact_manifest_names_its_type_subject_and_annotations_canonically() -> None:
    """Claims, version notes and records share one manifest shape; the subject carries no more
    than the three fields a referrer needs, whatever the descriptor given holds."""
    empty = Descriptor("application/vnd.oci.empty.v1+json", sha256_digest(b"{}"), 2)
    subject = Descriptor(OCI_MANIFEST, "sha256:" + "a" * 64, 123, {"x": "y"}, "some/type")
    raw = artifact_manifest("application/vnd.test", empty, subject=subject, annotations={"k": "v"})
    assert raw == canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.test",
            "config": empty.to_dict(),
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 123},
            "annotations": {"k": "v"},
        }
    )
    bare = json.loads(artifact_manifest("application/vnd.test", empty, [empty]))
    assert "subject" not in bare and "annotations" not in bare and bare["layers"] == [empty.to_dict()]
