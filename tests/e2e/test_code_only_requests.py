"""A code-only change pushed with `build --push --cache-registry` is the common CI build: what is
left of it is a few dozen engine and registry requests, one after another where they depend on
each other. The requests are counted here (never timed: benchmarks/bench_code_only.py does that),
against the real engine and registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from modelpack.image.builder import build
from modelpack.oci.registry import fallback_tag

pytestmark = pytest.mark.e2e


@contextmanager
def requests_sent(registry: str) -> Iterator[dict[str, list[tuple[str, str]]]]:
    """Every HTTP request this process sends meanwhile, as (method, path), by "registry"/"engine"."""
    import urllib3.connectionpool

    sent: dict[str, list[tuple[str, str]]] = {"registry": [], "engine": []}
    pool = urllib3.connectionpool.HTTPConnectionPool
    original = pool._make_request

    def noted(self: Any, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        where = "registry" if f"{self.host}:{self.port}" == registry else "engine"
        sent[where].append((method, url.split("?", 1)[0]))
        return original(self, conn, method, url, *args, **kwargs)

    pool._make_request = noted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        pool._make_request = original  # type: ignore[method-assign]


def test_a_code_only_push_sends_each_request_once(
    tmp_path: Path,
    registry: str,
    registry_repo: Any,
    local_base_image: str,
    copy_example: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = copy_example("hello", tmp_path / "hello")
    options: dict[str, Any] = {
        "repository": registry_repo.ref,
        "push": True,
        "network_mode": "host",
        "cache_registry": f"{registry_repo.ref}-cache",
    }
    first = build(model, **options)
    code = model / "1" / "model.py"
    code.write_text(code.read_text() + "\n# a code-only change\n")
    with requests_sent(registry) as sent:
        second = build(model, **options)
    assert (first.version, second.version) == ("v1", "v2") and second.pushed

    paths = Counter(path for _, path in sent["registry"])
    repository = f"/v2/{registry_repo.name}"
    assert paths[f"{repository}/tags/list"] == 2  # the repository's tags, and the claim's check
    index = f"{repository}/manifests/{fallback_tag(second.digest)}"
    # the record lookup reads the fallback referrers index; the note, SBOM and record are added in one write
    assert [m for m, p in sent["registry"] if p == index] == ["GET", "GET", "PUT"]
    assert not [p for m, p in sent["registry"] if m == "HEAD" and p.endswith(f"/manifests/{second.digest}")]

    engine = Counter(path.split("/", 2)[-1] if path.startswith("/v1.") else path for _, path in sent["engine"])
    # the engine's ping tells its API version and OS: `/version` (5-7 ms of the engine's time) is not asked
    assert engine["/_ping"] == 1 and engine["/version"] + engine["version"] == 0
    assert engine[f"images/{local_base_image}/json"] <= 1
    assert not [m for m, p in sent["engine"] if m == "DELETE"]  # no tag to remove: the cache went up in the registry
    # the load names the version picked: nothing is tagged once it ends
    assert not [p for m, p in sent["engine"] if m == "POST" and "/tag" in p], sent["engine"]
    local = docker.from_env()
    try:
        tagged = local.images.get(f"{registry_repo.ref}:v2")
        assert tagged.id == local.images.get(f"{registry_repo.ref}:{second.content_tag}").id
    finally:
        local.close()
    # all told, against 58 (45 registry, 13 engine) before these were trimmed
    assert len(sent["registry"]) <= 33 and len(sent["engine"]) <= 5, sent
