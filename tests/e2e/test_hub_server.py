"""The test hub speaks the hub's protocol: raw HTTP checks and huggingface_hub's own snapshot_download."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

WEIGHTS = b"w" * 100_000


@pytest.fixture()
def hub(hubserver: ModuleType) -> Iterator[Any]:
    repo = hubserver.HubRepo("acme/tiny")
    repo.add_commit({"config.json": b"{}", "model.safetensors": WEIGHTS, "sub/dir/a.txt": b"a"}, tags=["v1"])
    with hubserver.HubServer([repo], tokens=["hf_ok"]) as server:
        yield server


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_model_info_and_tree(hub: Any) -> None:
    status, _, body = request(f"{hub.url}/api/models/acme/tiny/revision/v1?blobs=true")
    info = json.loads(body)
    assert status == 200 and len(info["sha"]) == 40
    lfs = next(s for s in info["siblings"] if s["rfilename"] == "model.safetensors")["lfs"]
    assert lfs["sha256"] == hashlib.sha256(WEIGHTS).hexdigest() and lfs["size"] == len(WEIGHTS)

    _, _, body = request(f"{hub.url}/api/models/acme/tiny/tree/main")
    assert [(e["type"], e["path"]) for e in json.loads(body)] == [
        ("file", "config.json"),
        ("file", "model.safetensors"),
        ("directory", "sub"),
    ]
    _, _, body = request(f"{hub.url}/api/models/acme/tiny/tree/main/sub?recursive=true")
    assert [e["path"] for e in json.loads(body)] == ["sub/dir", "sub/dir/a.txt"]


def test_resolve_headers_redirect_and_range(hub: Any, hubserver: ModuleType) -> None:
    status, headers, _ = request(f"{hub.url}/acme/tiny/resolve/main/config.json", "HEAD")
    assert status == 200 and headers["ETag"] == f'"{hubserver.git_blob_sha1(b"{}")}"'
    assert len(headers["X-Repo-Commit"]) == 40 and headers["Content-Length"] == "2"

    status, headers, _ = request(f"{hub.url}/acme/tiny/resolve/v1/model.safetensors", "HEAD")
    assert status == 302 and headers["Location"].startswith(hub.cdn_url)
    assert headers["X-Linked-Etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert headers["X-Linked-Size"] == str(len(WEIGHTS))

    status, headers, body = request(headers["Location"], headers={"Range": "bytes=99990-"})
    assert status == 206 and body == WEIGHTS[99990:]
    assert headers["Content-Range"] == f"bytes 99990-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"


@pytest.mark.parametrize(
    ("path", "auth", "status", "code"),
    [
        ("/api/models/acme/nope", None, 401, "RepoNotFound"),
        ("/api/models/acme/nope", "hf_ok", 404, "RepoNotFound"),
        ("/api/models/acme/tiny/revision/nope", None, 404, "RevisionNotFound"),
        ("/acme/tiny/resolve/main/missing.txt", None, 404, "EntryNotFound"),
        ("/acme/tiny/resolve/main/config.json", "wrong", 401, None),
    ],
)
def test_errors_carry_hub_codes(hub: Any, path: str, auth: str | None, status: int, code: str | None) -> None:
    got, headers, _ = request(hub.url + path, headers={"Authorization": f"Bearer {auth}"} if auth else None)
    assert got == status and headers.get("X-Error-Code") == code


def test_huggingface_hub_snapshot_download_against_it(hub: Any, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download("acme/tiny", cache_dir=tmp_path, endpoint=hub.url, token=False))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "sub" / "dir" / "a.txt").read_bytes() == b"a"
    assert hub.file_downloads() == 3
    hub.reset_counts()
    snapshot_download("acme/tiny", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert hub.file_downloads() == 0
