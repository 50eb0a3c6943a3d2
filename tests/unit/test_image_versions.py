"""The version and push rules of `build`/`push`, against the in-memory registry and engine of fakes.py.

A version tag names one content forever: new content gets the next free `vN` (or the one asked
for), unchanged content gets the version it already has and nothing is pushed, and a version
taken by someone else between listing and tagging is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelpack import scratch
from modelpack.errors import InvalidInputError, RegistryError
from modelpack.image import push as push_mod
from modelpack.image import runtime_layers, stages
from modelpack.image.assemble import AssemblyPlan
from modelpack.image.push import AssembledPush, ImagePush, SentImage
from modelpack.image.results import BuildResult
from modelpack.image.session import BuildRequest, BuildSession, PushTarget
from modelpack.image.stages import ContextSpec
from modelpack.image.versions import (
    CREATED_ANNOTATION,
    VERSION_ANNOTATION,
    VERSION_ARTIFACT_TYPE,
    PushedManifest,
    VersionClaim,
    claim_version,
    pick_version,
    reuse_remote,
    tag_version,
)
from modelpack.oci.reference import parse_repository
from modelpack.oci.registry import DOCKER_MANIFEST, EMPTY_JSON, Descriptor, sha256_digest
from modelpack.pipeline.rendering import FinalStage
from modelpack.progress import ProgressEvent, Reporter
from modelpack.tags import check_version, claimed_version, content_tag, newest_first, next_version
from tests.unit import fakes

REPO = parse_repository("127.0.0.1:5000/acme/m")
NAME = REPO.name  # 127.0.0.1:5000/acme/m
REPOSITORY = REPO.repository  # acme/m


@pytest.fixture
def registry() -> Any:
    return fakes.FakeRegistry()


@pytest.fixture
def events() -> list[ProgressEvent]:
    return []


@pytest.fixture
def session(registry: Any, events: list[ProgressEvent]) -> BuildSession:
    return BuildSession(fakes.FakeEngine(registry), registry, None, Reporter(events.append))


def notes_of(events: list[ProgressEvent]) -> list[str]:
    return [e.message for e in events if e.stage == "note"]


# --------------------------------------------------------------------------- tag names


def test_the_version_order_is_by_number_and_skips_other_tags() -> None:
    tags = ["v2", "latest", "v10", "c-0123456789abcdef", "v9", "v01", "v1"]
    assert newest_first(tags) == ["v10", "v9", "v2", "v1"]
    assert next_version(tags) == "v11"
    assert check_version("v3") == "v3"
    with pytest.raises(InvalidInputError, match="invalid --version 'v0'"):
        check_version("v0")
    assert content_tag("sha256:" + "0123456789abcdef" * 4) == "c-0123456789abcdef"


# --------------------------------------------------------------------------- choosing a version


def test_a_new_version_notes_when_it_was_created_beside_the_content(registry: Any) -> None:
    """A version's own time lives in a referrer of its content, not in the reproducible image."""
    pushed = _pushed(registry)
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    assert claim_version(registry, VersionClaim(REPO, None, False, "c-new"), pushed, []) == "v1"
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    notes = [json.loads(raw) for raw, _ in registry.manifests.values() if b"subject" in raw]
    (note,) = [n for n in notes if n.get("artifactType") == VERSION_ARTIFACT_TYPE]
    assert note["subject"]["digest"] == pushed.digest
    assert note["annotations"][VERSION_ANNOTATION] == "v1"
    assert before <= note["annotations"][CREATED_ANNOTATION] <= after
    assert registry.digest_of(REPOSITORY, "v1") == pushed.digest  # the image is as pushed


def test_next_free_version_is_after_every_tag_seen(registry: Any) -> None:
    registry.add_image(REPOSITORY, ["v1", "v2", "c-1"], "old")
    pushed = _pushed(registry)
    notes: list[str] = []
    # tags seen earlier count too (a tag listed at the start of the build may be gone now)
    seen_before = PushedManifest(pushed.raw, pushed.media_type, pushed.digest, ("v3",))
    assert claim_version(registry, VersionClaim(REPO, None, False, "c-new"), seen_before, notes) == "v4"
    assert notes == []


def test_a_version_taken_meanwhile_becomes_the_next_free_one(registry: Any) -> None:
    registry.add_image(REPOSITORY, ["v1", "v2", "c-1"], "old")
    notes: list[str] = []
    assert claim_version(registry, VersionClaim(REPO, "v2", False, "c-new"), _pushed(registry), notes) == "v3"
    assert notes == ["version v2 was taken meanwhile; using v3"]


def test_a_claim_is_deleted_once_its_version_is_tagged(registry: Any) -> None:
    pushed = _pushed(registry)
    assert claim_version(registry, VersionClaim(REPO, "v7", True, "c-new"), pushed, []) == "v7"
    assert registry.digest_of(REPOSITORY, "v7") == pushed.digest
    assert [t for t in registry.list_tags(REPOSITORY) if claimed_version(t)] == []
    assert any(claimed_version(t) == "v7" for t in registry.puts)  # it was claimed first


def test_the_version_note_goes_out_with_the_check_and_the_claims_deletion_may_end_later(
    registry: Any,
) -> None:
    """After the version tag is written, its check (a HEAD), the version note and the claim's
    deletion are independent: the note is written while the check is asked, and with `leave`
    the claim's deletion is left to the build's pending work instead of being waited for."""
    pushed = _pushed(registry)
    noted, deleting = threading.Event(), threading.Event()
    head, delete = registry.head_manifest, registry.delete_manifest

    def head_manifest(repository: str, reference: str) -> Any:
        if reference == "v1" and not noted.wait(5):
            raise AssertionError("the version was checked before its note was written")
        return head(repository, reference)

    def delete_manifest(repository: str, digest: str) -> None:
        if not deleting.wait(5):
            raise AssertionError("the claim's deletion was waited for")
        delete(repository, digest)

    def on_put(repository: str, reference: str) -> None:
        if reference.startswith("sha256:"):  # the version note, stored by digest
            noted.set()

    registry.on_put.append(on_put)
    registry.head_manifest, registry.delete_manifest = head_manifest, delete_manifest
    leave: list[Any] = []
    assert claim_version(registry, VersionClaim(REPO, None, False, "c-new"), pushed, [], leave=leave) == "v1"
    assert any(claimed_version(t) for t in registry.list_tags(REPOSITORY))  # still being deleted
    deleting.set()
    assert [done() for done in leave] == [[]]
    assert [t for t in registry.list_tags(REPOSITORY) if claimed_version(t)] == []


def test_a_version_that_does_not_point_at_the_content_keeps_no_note(registry: Any) -> None:
    """A registry that answers the version's check with other content: the push fails, and the
    version note written meanwhile (it says the version is this content's) is deleted."""
    pushed = _pushed(registry)
    other = _other_pushed(registry, "other")
    head = registry.head_manifest
    registry.head_manifest = lambda repository, reference: head(
        repository, other.digest if reference == "v1" else reference
    )
    with pytest.raises(RegistryError, match="does not point at the pushed content"):
        claim_version(registry, VersionClaim(REPO, None, False, "c-new"), pushed, [])
    notes = [json.loads(raw) for raw, _ in registry.manifests.values() if b"subject" in raw]
    assert [n for n in notes if n.get("artifactType") == VERSION_ARTIFACT_TYPE] == []


def test_a_claim_whose_delete_fails_part_way_is_removed_by_name(registry: Any) -> None:
    registry.failing_deletes = 1
    assert claim_version(registry, VersionClaim(REPO, "v1", False, "c-new"), _pushed(registry), []) == "v1"
    assert [t for t in registry.list_tags(REPOSITORY) if claimed_version(t)] == []


def test_a_build_that_lists_while_another_claims_takes_the_next_version(registry: Any) -> None:
    """B runs start to end in the moment after A wrote its claim on v1: B must not take v1."""
    mine, theirs = _pushed(registry), _other_pushed(registry, "theirs")
    results: dict[str, str] = {}

    def other_build(repository: str, reference: str) -> None:
        if claimed_version(reference) == "v1" and "b" not in results:
            results["b"] = "running"
            results["b"] = claim_version(registry, VersionClaim(REPO, "v1", False, "c-b"), theirs, [])

    registry.on_put.append(other_build)
    results["a"] = claim_version(registry, VersionClaim(REPO, "v1", False, "c-a"), mine, [])
    assert {results["a"], results["b"]} == {"v1", "v2"}
    assert registry.digest_of(REPOSITORY, results["a"]) == mine.digest
    assert registry.digest_of(REPOSITORY, results["b"]) == theirs.digest


def test_two_builds_that_see_each_others_claim_both_withdraw(registry: Any) -> None:
    """A rival claim on v1 that is never tagged: A withdraws, pauses, and takes v2; v1 stays free."""
    mine = _pushed(registry)
    rival = _other_pushed(registry, "rival")
    pauses: list[float] = []

    def rival_claims(repository: str, reference: str) -> None:
        if claimed_version(reference) == "v1" and "v1.claim.rival" not in registry.tags[repository]:
            registry.tags[repository]["v1.claim.rival"] = rival.digest

    registry.on_put.append(rival_claims)
    notes: list[str] = []
    chosen = claim_version(registry, VersionClaim(REPO, "v1", False, "c-a"), mine, notes, pause=pauses.append)
    assert chosen == "v2" and len(pauses) == 1
    assert registry.digest_of(REPOSITORY, "v1") is None
    assert notes == ["version v1 was taken meanwhile; using v2"]


def _listings(registry: Any) -> list[str]:
    """Counts the tag lists `registry` answers."""
    listed: list[str] = []
    real = registry.list_tags

    def counted(repository: str) -> list[str]:
        listed.append(repository)
        return real(repository)

    registry.list_tags = counted
    return listed


def test_a_claim_without_rivals_lists_the_tags_once(registry: Any) -> None:
    """The tags listed before the push choose the first candidate; the list after the claim is
    the one that keeps two builds off one version (a list before the claim is not needed)."""
    registry.add_image(REPOSITORY, ["v1"], "older content")
    new = _pushed(registry)
    pushed = PushedManifest(new.raw, new.media_type, new.digest, ("v1", "c-old"))
    listed = _listings(registry)
    assert claim_version(registry, VersionClaim(REPO, "v2", False, "c-new"), pushed, []) == "v2"
    assert len(listed) == 1 and registry.digest_of(REPOSITORY, "v2") == pushed.digest


def test_a_version_taken_since_the_listing_costs_a_round_but_no_pause(registry: Any) -> None:
    """The stale list proposes v1, which another build tagged meanwhile: the claim is withdrawn
    and the next round, listing afresh, takes v2 at once (a pause only parts rival claims)."""
    pushed = _pushed(registry)
    other = registry.add_image(REPOSITORY, ["v1"], "another build")
    pauses: list[float] = []
    notes: list[str] = []
    claim = VersionClaim(REPO, "v1", False, "c-new")
    assert claim_version(registry, claim, pushed, notes, pause=pauses.append) == "v2"
    assert pauses == [] and notes == ["version v1 was taken meanwhile; using v2"]
    assert registry.digest_of(REPOSITORY, "v1") == other
    assert not [t for t in registry.list_tags(REPOSITORY) if claimed_version(t)]


def test_a_version_another_build_gave_the_same_content_is_reported_not_duplicated(registry: Any) -> None:
    pushed = _pushed(registry)
    registry.tags[REPOSITORY]["v1"] = pushed.digest  # a concurrent build of the same inputs tagged it
    assert claim_version(registry, VersionClaim(REPO, None, False, "c-new"), pushed, []) == "v1"
    assert [t for t in registry.list_tags(REPOSITORY) if t.startswith("v")] == ["v1"]


def test_parallel_builds_each_get_their_own_version(registry: Any) -> None:
    """Threads racing on one registry: every version names exactly the content of the build that got it."""
    import threading

    pushed = [_other_pushed(registry, f"build {i}") for i in range(6)]
    real_list = registry.list_tags

    def slow_list(repository: str) -> list[str]:
        tags = real_list(repository)
        time.sleep(0.002)  # let the others interleave between listing and tagging
        return tags

    registry.list_tags = slow_list
    results: dict[int, str] = {}

    def run(i: int) -> None:
        target = PushTarget(REPO, f"c-{i}", "v1", explicit=False)
        results[i] = tag_version(registry, target, pushed[i], [], Reporter())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pushed))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(pushed) and len(set(results.values())) == len(pushed)
    for i, version in results.items():
        assert registry.digest_of(REPOSITORY, version) == pushed[i].digest


def test_pick_version_for_new_content() -> None:
    remote = ["v1", "v2", "c-1"]
    assert pick_version(NAME, None, remote, ["v5", "c-2"]) == "v6"  # local versions count too
    assert pick_version(NAME, "v9", remote, []) == "v9"
    with pytest.raises(InvalidInputError, match=r"version v2 already exists in .* with other content"):
        pick_version(NAME, "v2", remote, [])
    # `push` of a locally built vN keeps that number unless the registry has it
    assert pick_version(NAME, None, remote, ["v3"], preferred="v3") == "v3"
    assert pick_version(NAME, None, remote, ["v2"], preferred="v2") == "v3"


# --------------------------------------------------------------------------- content the registry has


def test_unchanged_content_reuses_its_version_and_pushes_nothing(registry: Any) -> None:
    digest = registry.add_image(REPOSITORY, ["v1", "c-1"], "same")
    registry.add_image(REPOSITORY, ["v2"], "newer")
    events: list[ProgressEvent] = []
    result = reuse_remote(
        registry, REPO, "c-1", registry.list_tags(REPOSITORY), None, Reporter(events.append)
    )
    assert (result.version, result.digest, result.reused, result.pushed) == ("v1", digest, True, False)
    assert result.bytes_pushed == 0 and registry.puts == []
    assert events[-1].message.startswith(f"unchanged: {NAME}:v1")


def test_explicit_version_that_exists_with_the_same_content_is_that_content(registry: Any) -> None:
    registry.add_image(REPOSITORY, ["v1", "c-1"], "same")
    result = reuse_remote(registry, REPO, "c-1", registry.list_tags(REPOSITORY), "v1", Reporter())
    assert (result.version, result.reused, result.pushed) == ("v1", True, False)
    assert registry.puts == []


def test_content_is_never_given_a_second_version(registry: Any) -> None:
    registry.add_image(REPOSITORY, ["v1", "c-1"], "same")
    with pytest.raises(InvalidInputError, match=r"already .*:v1; a version is never duplicated"):
        reuse_remote(registry, REPO, "c-1", registry.list_tags(REPOSITORY), "v2", Reporter())
    assert registry.puts == []


def test_content_whose_version_tag_never_landed_gets_the_next_free_one(registry: Any) -> None:
    registry.add_image(REPOSITORY, ["v1"], "other")
    digest = registry.add_image(REPOSITORY, ["c-1"], "interrupted")
    result = reuse_remote(registry, REPO, "c-1", registry.list_tags(REPOSITORY), None, Reporter())
    assert (result.version, result.digest, result.pushed, result.reused) == ("v2", digest, True, True)
    assert registry.digest_of(REPOSITORY, "v2") == digest
    tags = [p for p in registry.puts if not claimed_version(p) and not p.startswith("sha256:")]
    assert tags == ["v2"]  # (what is put by digest is the version's note)
    assert result.bytes_pushed == len(registry.manifests[digest][0])


def test_reused_content_never_takes_an_explicit_version_that_is_taken(registry: Any) -> None:
    other = registry.add_image(REPOSITORY, ["v1"], "other")
    digest = registry.add_image(REPOSITORY, ["c-1"], "interrupted")
    with pytest.raises(InvalidInputError, match="v1 already exists"):
        reuse_remote(registry, REPO, "c-1", ["c-1", "v1"], "v1", Reporter())
    assert registry.puts == [] and registry.digest_of(REPOSITORY, "v1") == other
    result = reuse_remote(registry, REPO, "c-1", ["c-1", "v1"], None, Reporter())
    assert result.version == "v2" and registry.digest_of(REPOSITORY, "v2") == digest


# --------------------------------------------------------------------------- tagging pushed content


def _pushed(registry: Any) -> PushedManifest:
    digest = registry.add_image(REPOSITORY, ["c-new"], "new")
    raw, media_type = registry.manifests[digest]
    return PushedManifest(raw, media_type, digest, tags_before=("c-new",))


def _other_pushed(registry: Any, seed: str) -> PushedManifest:
    digest = registry.add_image(REPOSITORY, [], seed)
    raw, media_type = registry.manifests[digest]
    return PushedManifest(raw, media_type, digest)


def test_version_taken_meanwhile_moves_to_the_next_free_one(registry: Any) -> None:
    pushed = _pushed(registry)
    target = PushTarget(REPO, "c-new", "v1", explicit=False)  # v1 was free when the build started
    other = registry.add_image(REPOSITORY, ["v1"], "another build")  # ... and taken since
    events: list[ProgressEvent] = []
    notes: list[str] = []
    assert tag_version(registry, target, pushed, notes, Reporter(events.append)) == "v2"
    assert notes == ["version v1 was taken meanwhile; using v2"] == notes_of(events)
    assert registry.digest_of(REPOSITORY, "v1") == other  # never moved
    assert registry.digest_of(REPOSITORY, "v2") == pushed.digest


def test_explicit_version_taken_meanwhile_is_an_error(registry: Any) -> None:
    pushed = _pushed(registry)
    other = registry.add_image(REPOSITORY, ["v4"], "another build")
    target = PushTarget(REPO, "c-new", "v4", explicit=True)
    with pytest.raises(
        InvalidInputError, match=r"version v4 was taken in .* meanwhile; content pushed as c-new"
    ):
        tag_version(registry, target, pushed, [], Reporter())
    assert registry.digest_of(REPOSITORY, "v4") == other and registry.puts == []


def test_a_version_tag_moved_right_after_tagging_is_reported(registry: Any) -> None:
    pushed = _pushed(registry)

    def move_it(repository: str, reference: str) -> None:
        if reference == "v1":
            registry.tags[repository]["v1"] = registry.add_image(REPOSITORY, [], "someone else")

    registry.on_put.append(move_it)
    with pytest.raises(RegistryError, match="v1 does not point at the pushed content"):
        tag_version(registry, PushTarget(REPO, "c-new", "v1", False), pushed, [], Reporter())


class _Recorded(ImagePush):
    """A push that sends a prepared manifest (or fails) and records how it was settled."""

    def __init__(self, session: BuildSession, target: PushTarget, sent: SentImage | None) -> None:
        super().__init__(session, target)
        self.sent = sent
        self.settled: list[str | None] = []

    def send(self) -> SentImage:
        if self.sent is None:
            raise RegistryError("the registry went away")
        return self.sent

    def settle(self, version: str | None, notes: list[str]) -> None:
        self.settled.append(version)


def test_every_push_ends_with_one_version_tag_and_one_result(session: BuildSession, registry: Any) -> None:
    pushed = _pushed(registry)
    registry.add_image(REPOSITORY, ["v1"], "another build")
    sent = SentImage(pushed, (), bytes_pushed=123)
    push = _Recorded(session, PushTarget(REPO, "c-new", "v1", False), sent)
    result = push.run()
    assert push.settled == ["v2"]
    assert result == BuildResult(
        image=f"{NAME}:v2",
        version="v2",
        digest=pushed.digest,
        tags=("v2", "c-new"),
        pushed=True,
        bytes_pushed=123,
        content_tag="c-new",
        notes=("version v1 was taken meanwhile; using v2",),
    )
    failing = _Recorded(session, PushTarget(REPO, "c-new", "v3", False), None)
    with pytest.raises(RegistryError, match="went away"):
        failing.run()
    assert failing.settled == [None] and "v3" not in registry.list_tags(REPOSITORY)


class _Loading:
    """The engine's load of a composed image, as `AssembledPush` starts it: records its end."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def finish(self, version: str, notes: list[str]) -> None:
        self.calls.append(f"tagged {version}")
        notes.append("the local engine took its time")

    def undo(self) -> None:
        self.calls.append("undone")


def test_the_local_copy_loads_while_the_build_goes_on(session: BuildSession, tmp_path: Path) -> None:
    """A pushed composed image is waited for by `session.finish()` (the build's end), not by the
    push: the supply-chain records go up while the engine loads it. A failed push is undone at once."""
    calls: list[str] = []
    target = PushTarget(REPO, "c-new", "v1", False)
    push = AssembledPush(session, target, "sha256:" + "1" * 64, None, tmp_path)  # type: ignore[arg-type]
    push._loading = _Loading(calls)  # type: ignore[assignment]
    push._work = work = push._held.enter_context(scratch.folder("modelpack-assemble-"))
    push.settle("v1", [])
    assert calls == [] and Path(work).is_dir()  # still loading: its archive stays
    assert session.finish() == ("the local engine took its time",)
    assert calls == ["tagged v1"] and not Path(work).exists()
    assert session.finish() == ()

    failed = AssembledPush(session, target, "sha256:" + "1" * 64, None, tmp_path)  # type: ignore[arg-type]
    failed._loading = _Loading(calls)  # type: ignore[assignment]
    failed._work = work = failed._held.enter_context(scratch.folder("modelpack-assemble-"))
    failed.settle(None, [])
    assert calls[-1] == "undone" and not Path(work).exists() and session.pending == []


def _runtime_config() -> tuple[bytes, str]:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [LAYER]},
        }
    ).encode()
    return config, "sha256:" + hashlib.sha256(config).hexdigest()


LAYER = "sha256:" + "a" * 64


@pytest.mark.parametrize("known", [False, True])
def test_a_known_runtime_config_starts_the_local_load_first(
    session: BuildSession, tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    """The runtime image's config is content-addressed: kept from the last push, it lets the
    engine load the final image while the registry is asked about the runtime layers. Unknown
    (or not hashing to the id), the load starts once the registry gave the config."""
    config, runtime_id = _runtime_config()
    kept = own_cache / "modelpack" / "runtime-configs"
    kept.mkdir(parents=True)
    if known:
        (kept / f"{runtime_id[7:]}.json").write_bytes(config)
    (kept / f"{'0' * 64}.json").write_bytes(config)  # under the wrong id: never used
    assert runtime_layers.known_config("sha256:" + "0" * 64) is None
    order: list[str] = []

    class Load:
        def __init__(self, _session: BuildSession, _target: PushTarget, archive: Path) -> None:
            order.append("load")
            with tarfile.open(archive) as tar:
                member = tar.extractfile("manifest.json")
                assert member is not None
                assert json.loads(member.read())[0]["Layers"][0].startswith("a" * 64)

    def runtime_in_registry(*_: Any) -> Any:
        order.append("registry")
        descriptor: dict[str, str | int] = {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
            "digest": LAYER,
            "size": 1,
        }
        return runtime_layers.RuntimeImage(config, [LAYER], [descriptor], [], 0)

    monkeypatch.setattr(push_mod, "_LocalLoad", Load)
    monkeypatch.setattr(push_mod, "runtime_in_registry", runtime_in_registry)
    context = tmp_path / "context"
    (context / "app" / "1").mkdir(parents=True)
    (context / "app" / "1" / "model.py").write_text("print('hi')\n")
    plan = AssemblyPlan(FinalStage(labels={}), "key", "base:1")
    pushing = AssembledPush(session, PushTarget(REPO, "c-new", "v1", False), runtime_id, plan, context)
    try:
        sent = pushing.send()
    finally:
        pushing._cleanup()
    assert order == (["load", "registry"] if known else ["registry", "load"])
    assert json.loads(sent.manifest.raw)["layers"][0]["digest"] == LAYER


# --------------------------------------------------------------------------- `push` of a local image


def test_push_keeps_the_local_version_and_then_pushes_nothing(session: BuildSession, registry: Any) -> None:
    api = session.engine.api
    api.add_image({"app.py": b"print(1)"}, [f"{NAME}:v3", f"{NAME}:c-0123456789abcdef"])
    first = stages.push_local(session, f"{NAME}:v3", REPO, None)
    assert (first.version, first.pushed, first.reused) == ("v3", True, False)
    assert registry.list_tags(REPOSITORY) == ["c-0123456789abcdef", "v3"]
    assert [layer.status for layer in first.layers] == ["pushed"] and first.bytes_pushed > 0
    assert registry.digest_of(REPOSITORY, "v3") == first.digest

    puts, pushes = list(registry.puts), list(api.pushes)
    again = stages.push_local(session, f"{NAME}:v3", REPO, None)
    assert (again.version, again.digest, again.reused, again.pushed) == ("v3", first.digest, True, False)
    assert registry.puts == puts and api.pushes == pushes  # nothing sent


def test_push_of_an_image_id_gets_the_next_version_and_its_content_tag(
    session: BuildSession, registry: Any
) -> None:
    registry.add_image(REPOSITORY, ["v1", "v2"], "older")
    image_id = session.engine.api.add_image({"app.py": b"print(2)"}, [])
    result = stages.push_local(session, image_id, REPO, None)
    assert (result.version, result.content_tag) == ("v3", content_tag(image_id))
    assert {f"{NAME}:v3", f"{NAME}:{content_tag(image_id)}"} <= session.engine.api.refs()


def test_push_lists_the_repositorys_tags_once_before_the_claim(
    session: BuildSession, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's push takes the tags the push listed; only the claim lists them again."""
    registry.add_image(REPOSITORY, ["v1"], "older")
    image_id = session.engine.api.add_image({"app.py": b"print(4)"}, [])
    listed: list[str] = []
    real = registry.list_tags

    def list_tags(repository: str) -> list[str]:
        listed.append(repository)
        return real(repository)

    monkeypatch.setattr(registry, "list_tags", list_tags)
    assert stages.push_local(session, image_id, REPO, None).version == "v2"
    assert listed == [REPOSITORY, REPOSITORY]  # before the push, and the claim's check


def test_push_whose_version_is_taken_meanwhile_moves_on(session: BuildSession, registry: Any) -> None:
    api = session.engine.api
    api.add_image({"app.py": b"print(3)"}, [f"{NAME}:v1", f"{NAME}:c-00000000000000aa"])

    def another_build(repository: str, reference: str) -> None:
        if reference == "c-00000000000000aa":  # while this push sends its content
            registry.add_image(repository, ["v1"], "another build")

    registry.on_put.append(another_build)
    result = stages.push_local(session, f"{NAME}:v1", REPO, None)
    assert result.version == "v2" and result.notes == ("version v1 was taken meanwhile; using v2",)
    assert registry.digest_of(REPOSITORY, "v2") == result.digest != registry.digest_of(REPOSITORY, "v1")
    assert f"{NAME}:v2" in api.refs() and f"{NAME}:v1" not in api.refs()  # the local tag follows


def test_explicit_push_version_taken_meanwhile_fails_and_leaves_no_local_tags(
    session: BuildSession, registry: Any
) -> None:
    api = session.engine.api
    image_id = api.add_image({"app.py": b"print(4)"}, [])
    ctag = content_tag(image_id)

    def another_build(repository: str, reference: str) -> None:
        if reference == ctag:
            registry.add_image(repository, ["v4"], "another build")

    registry.on_put.append(another_build)
    with pytest.raises(
        InvalidInputError, match=rf"version v4 was taken in .* meanwhile; content pushed as {ctag}"
    ):
        stages.push_local(session, image_id, REPO, "v4")
    assert api.refs() == set()  # the tags this push made are gone
    assert registry.digest_of(REPOSITORY, ctag) is not None  # the content is there, without a version


def test_a_failed_engine_push_leaves_no_local_tags(session: BuildSession, registry: Any) -> None:
    api = session.engine.api
    image_id = api.add_image({"app.py": b"print(5)"}, [])
    api.fail_push = True
    with pytest.raises(RegistryError, match="refused authentication"):
        stages.push_local(session, image_id, REPO, None)
    assert api.refs() == set() and registry.list_tags(REPOSITORY) == []


# --------------------------------------------------------------------------- build of a rendered context


def _context(root: Path, code: str) -> tuple[Path, str]:
    (root / "deps").mkdir(parents=True, exist_ok=True)
    (root / "deps" / "lib.py").write_text("DEPS = 1\n")
    (root / "app.py").write_text(code)
    return root, fakes.content_digest(code)


def test_build_push_and_rebuild(session: BuildSession, registry: Any, tmp_path: Path) -> None:
    api = session.engine.api
    request = BuildRequest(REPO, push=True)
    context, digest = _context(tmp_path, "print('one')\n")
    first = stages.build_or_reuse(session, ContextSpec(context, digest), request)
    assert (first.version, first.pushed, first.content_tag) == ("v1", True, content_tag(digest))
    assert [layer.status for layer in first.layers] == ["pushed", "pushed"]
    assert registry.list_tags(REPOSITORY) == sorted(["v1", first.content_tag])
    assert {f"{NAME}:v1", f"{NAME}:{first.content_tag}"} <= api.refs()

    # unchanged: the registry has the content tag, so nothing is built or pushed
    builds, puts = list(api.builds), list(registry.puts)
    again = stages.build_or_reuse(session, ContextSpec(context, digest), request)
    assert (again.version, again.digest, again.reused, again.pushed) == ("v1", first.digest, True, False)
    assert api.builds == builds and registry.puts == puts

    # a code change: the next version; the deps layer is found in the registry by HEAD before
    # the push, even when the engine does not say so
    api.says_exists = False
    context, changed = _context(tmp_path, "print('two')\n")
    second = stages.build_or_reuse(session, ContextSpec(context, changed), request)
    assert second.version == "v2" and second.digest != first.digest
    assert sorted(layer.status for layer in second.layers) == ["present", "pushed"]

    # an explicit version that exists holds other content: refused before anything is tagged
    context, third = _context(tmp_path, "print('three')\n")
    with pytest.raises(InvalidInputError, match=r"version v1 already exists in .* with other content"):
        stages.build_or_reuse(session, ContextSpec(context, third), BuildRequest(REPO, True, "v1"))
    assert "v1" in registry.list_tags(REPOSITORY) and registry.digest_of(REPOSITORY, "v1") == first.digest


def test_local_rebuild_of_unchanged_content_keeps_its_version(
    session: BuildSession, registry: Any, tmp_path: Path, events: list[ProgressEvent]
) -> None:
    request = BuildRequest(REPO)
    context, digest = _context(tmp_path, "print('local')\n")
    first = stages.build_or_reuse(session, ContextSpec(context, digest), request)
    assert (first.version, first.pushed, first.reused) == ("v1", False, False)
    again = stages.build_or_reuse(session, ContextSpec(context, digest), request)
    assert (again.version, again.digest, again.reused) == ("v1", first.digest, True)
    assert session.engine.api.builds == [f"{NAME}:{first.content_tag}"]  # built once
    assert registry.puts == []


def test_the_empty_config_is_in_the_registry_before_the_sbom_thread_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The claim (main thread) and the SBOM (staging thread) both name the empty config. Were
    both to upload it into a new repository at once, distribution rewrites its link while the
    other's manifest PUT reads it and answers 400 DIGEST_INVALID (seen in CI)."""
    registry = fakes.FakeRegistry()
    present_at_start: list[bool] = []

    def staging(client: Any, repo: Any, digest: str, context_dir: Path, subject: Any) -> Any:
        present_at_start.append(sha256_digest(EMPTY_JSON) in registry.blobs)
        return None

    monkeypatch.setattr(stages, "stage_supply_chain", staging)
    session = BuildSession(engine=None, registry=fakes.as_client(registry), auth=None, report=Reporter())
    staged = stages._SupplyStaging(session, parse_repository("127.0.0.1:5000/team/model"), tmp_path)
    staged.start(Descriptor(DOCKER_MANIFEST, "sha256:" + "a" * 64, 100))
    staged.wait()
    assert present_at_start == [True]
