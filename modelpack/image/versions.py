"""Image versions in a registry: `v1`, `v2`, ... tags plus immutable content tags `c-<hex16>`.

A version tag is only ever created for new content and never moved; the content
tag (derived from the rendered context's digest) is how a rebuild of unchanged
inputs finds the version it already has. The rules here need only a registry client
(and, for a local build, the engine), so they are tested with fakes; the tag names
themselves are `modelpack.tags`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import random
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from modelpack.errors import InvalidInputError, RegistryError
from modelpack.image import engine
from modelpack.image.results import BuildResult, LayerInfo
from modelpack.image.session import PushTarget
from modelpack.oci.artifacts import artifact_manifest
from modelpack.oci.reference import ImageRef, parse_repository
from modelpack.oci.registry import (
    DOCKER_MANIFEST_LIST,
    EMPTY_JSON,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    TRANSIENT_STATUSES,
    Descriptor,
    Manifest,
    RegistryClient,
    sha256_digest,
)
from modelpack.progress import Reporter
from modelpack.tags import claim_tag, claimed_version, is_content_tag, newest_first, next_version

if TYPE_CHECKING:
    from docker import DockerClient

LABEL_PREFIX = "dev.modelpack."
CLAIM_ARTIFACT_TYPE = "application/vnd.modelpack.version-claim.v1"
# a referrer of a version's content: which version it became, and when (`_note_version`)
VERSION_ARTIFACT_TYPE = "application/vnd.modelpack.version.v1"
VERSION_ANNOTATION = f"{LABEL_PREFIX}version"
CREATED_ANNOTATION = "org.opencontainers.image.created"


# --------------------------------------------------------------------------- choosing a version


def pick_version(
    name: str,
    requested: str | None,
    remote_tags: Iterable[str],
    local_tags: Iterable[str],
    preferred: str | None = None,
) -> str:
    """The version new content asks for: `requested` (refused when the registry has it), else
    `preferred` when the registry lacks it, else the version after every one seen here or there."""
    remote = set(remote_tags)
    if requested is not None:
        if requested in remote:
            raise InvalidInputError(f"version {requested} already exists in {name} with other content")
        return requested
    if preferred is not None and preferred not in remote:
        return preferred
    return next_version(remote | set(local_tags))


def free_version(
    registry: RegistryClient, repo: ImageRef, wanted: str | None, tags: Iterable[str], notes: list[str]
) -> str:
    """`wanted` (or the next version) if the registry does not have it; else the next free one."""
    current = set(registry.list_tags(repo.repository)) | set(tags)
    chosen = wanted or next_version(current)
    if chosen in current:
        taken = chosen
        chosen = next_version(current)
        notes.append(f"version {taken} was taken meanwhile; using {chosen}")
    return chosen


@dataclass(frozen=True)
class PushedManifest:
    """A manifest the registry holds under its content tag, waiting for its version tag."""

    raw: bytes
    media_type: str
    digest: str
    tags_before: tuple[str, ...] = ()  # the repository's tags seen before it was pushed


CLAIM_ATTEMPTS = 12


@dataclass(frozen=True)
class VersionClaim:
    """How one build asks for a version tag: which one, and whether only that one will do."""

    repo: ImageRef
    wanted: str | None  # None: the next free one
    explicit: bool  # the user asked for `wanted`: never replaced by another
    content_tag: str  # where the content stays when no version can be had


def claim_version(
    registry: RegistryClient,
    claim: VersionClaim,
    pushed: PushedManifest,
    notes: list[str],
    pause: Callable[[float], None] = time.sleep,
    leave: list[Callable[[], list[str]]] | None = None,
) -> str:
    """Point a version tag no other build takes at `pushed`, on a registry without conditional writes.

    A plain distribution registry lets the last PUT of a tag win, so two builds that list the
    same tags would both take the same `vN`. Each build therefore first writes a claim tag
    `vN.claim.<nonce>` (a tiny manifest of its own), then lists the tags again: it tags `vN`
    only when no version `vN` and no other claim on it is there. Of two builds that claim the
    same version, the later lister always sees the earlier claim, so at most one of them tags
    it; when both see each other, both withdraw and try again after a random pause. A claim is
    deleted once its version is tagged (where the registry allows deletes; a claim left behind
    only makes the next build skip that number). A version some build already gave this
    content (a concurrent build of the same inputs) is reported instead of a second one.

    `leave`: where to put the deletion of the won claim, to be waited for later (the caller's
    pending work) instead of now; it changes nothing another build decides on, since the
    version it claimed is tagged already.
    """
    repository = claim.repo.repository
    nonce = secrets.token_hex(6)
    for attempt in range(CLAIM_ATTEMPTS):
        # the first claim of a next free version goes by the tags listed before the push: the
        # list after the claim is what keeps two builds off one version; a stale one only costs
        # another round. An explicit version is checked afresh (taken: nothing is written).
        fresh = attempt or claim.explicit or not pushed.tags_before
        tags = set(registry.list_tags(repository)) if fresh else set(pushed.tags_before)
        new_tags = tags - set(pushed.tags_before)
        existing = _version_of(registry, repository, pushed.digest, newest_first(new_tags))
        if existing is not None:
            if claim.explicit and existing != claim.wanted:
                raise InvalidInputError(
                    f"this content is already {claim.repo.name}:{existing}; a version is never duplicated"
                )
            return existing
        seen = tags | set(pushed.tags_before)
        if claim.explicit and claim.wanted is not None:
            if claim.wanted in seen:
                raise InvalidInputError(
                    f"version {claim.wanted} was taken in {claim.repo.name} meanwhile; "
                    f"content pushed as {claim.content_tag}"
                )
            candidate = claim.wanted
        elif claim.wanted is not None and not _claimed(claim.wanted, seen):
            candidate = claim.wanted
        else:
            candidate = next_version(seen)
        mine = claim_tag(candidate, nonce)
        claim_digest = _put_claim(registry, repository, mine, candidate, pushed.digest)
        after = set(registry.list_tags(repository))
        rivals = [t for t in after if t != mine and claimed_version(t) == candidate]
        if candidate not in after and not rivals:
            registry.put_manifest(repository, candidate, pushed.raw, pushed.media_type)
            # the check, the version note and the claim's deletion are independent: at once
            helpers = ThreadPoolExecutor(2, thread_name_prefix="modelpack-claim")
            try:
                dropped = helpers.submit(_drop_claim, registry, repository, mine, claim_digest)
                noted = helpers.submit(_note_version, registry, repository, candidate, pushed)
                check = registry.head_manifest(repository, candidate)
                note, refusal = noted.result()
                if leave is None:
                    dropped.result()
                else:
                    leave.append(functools.partial(_ended, dropped))
            finally:
                helpers.shutdown(wait=leave is None)
            if check is None or check.digest != pushed.digest:
                if note is not None:  # the note says the version is this content's: it is not
                    with contextlib.suppress(RegistryError):
                        registry.delete_manifest(repository, note)
                raise RegistryError(
                    f"{claim.repo.name}:{candidate} does not point at the pushed content {pushed.digest}"
                )
            if claim.wanted is not None and candidate != claim.wanted:
                notes.append(f"version {claim.wanted} was taken meanwhile; using {candidate}")
            if refusal is not None:
                notes.append(refusal)
            return candidate
        _drop_claim(registry, repository, mine, claim_digest)
        if candidate in after:
            continue  # a version, not a rival claim: the next round reports it or takes another
        pause(random.uniform(0.05, 0.25) * (attempt + 1))
    raise RegistryError(
        f"no version could be claimed in {claim.repo.name} after {CLAIM_ATTEMPTS} tries (other builds "
        f"kept taking them); content pushed as {claim.content_tag}"
    )


def _claimed(version: str, tags: set[str]) -> bool:
    """The registry has `version`, or some build claims it."""
    return version in tags or any(claimed_version(t) == version for t in tags)


def _version_of(registry: RegistryClient, repository: str, digest: str, versions: list[str]) -> str | None:
    """The first of `versions` that points at `digest`."""
    for tag in versions:
        found = registry.head_manifest(repository, tag)
        if found is not None and found.digest == digest:
            return tag
    return None


def _put_claim(registry: RegistryClient, repository: str, tag: str, version: str, digest: str) -> str:
    """Store the claim manifest under `tag`; returns its digest (unique to this claim)."""
    config, _ = registry.ensure_blob(repository, EMPTY_JSON, media_type=OCI_EMPTY)
    annotations = {f"{LABEL_PREFIX}claim.version": version, f"{LABEL_PREFIX}claim.for": digest}
    raw = artifact_manifest(CLAIM_ARTIFACT_TYPE, config, annotations=annotations)
    return registry.put_manifest(repository, tag, raw, OCI_MANIFEST).digest


def _note_version(
    registry: RegistryClient, repository: str, version: str, pushed: PushedManifest
) -> tuple[str | None, str | None]:
    """Attach to the content a referrer that says when `version` was given to it, by this host's
    clock: (its digest, None), or (None, why it is not recorded). The image itself is
    reproducible (its config's `created` is SOURCE_DATE_EPOCH, or the time its runtime stage was
    first built, for every version reusing it), so a version's own time cannot live in it; a
    referrer leaves the image digest as it is. A registry that refuses it costs only that time
    (`versions` then shows the config's)."""
    when = _dt.datetime.now(tz=_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        config, _ = registry.ensure_blob(repository, EMPTY_JSON, media_type=OCI_EMPTY)
        raw = artifact_manifest(
            VERSION_ARTIFACT_TYPE,
            config,
            subject=Descriptor(pushed.media_type, pushed.digest, len(pushed.raw)),
            annotations={VERSION_ANNOTATION: version, CREATED_ANNOTATION: when},
        )
        return registry.put_manifest(repository, sha256_digest(raw), raw, OCI_MANIFEST).digest, None
    except RegistryError as error:
        return None, f"when {version} was created is not recorded: {error.message}"


def version_created(client: RegistryClient, repository: str, digest: str, version: str) -> str | None:
    """When `version` was given to the content `digest` (its version referrer), None without one."""
    for found in client.referrers(repository, digest, artifact_type=VERSION_ARTIFACT_TYPE):
        if found.annotations.get(VERSION_ANNOTATION) == version and found.annotations.get(CREATED_ANNOTATION):
            return found.annotations[CREATED_ANNOTATION]
    return None


def _ended(work: Future[None]) -> list[str]:
    """Wait for `work` (which reports nothing)."""
    work.result()
    return []


def _drop_claim(registry: RegistryClient, repository: str, tag: str, digest: str) -> None:
    """Delete a claim; a registry that refuses deletes keeps it (the number is then skipped).

    The claim's manifest is its own, so it goes by digest; when the registry fails that part-way
    (a 500 under concurrent writes), the tag may outlive its manifest and is removed by name.
    """
    try:
        registry.delete_manifest(repository, digest)
    except RegistryError as error:
        if error.status in TRANSIENT_STATUSES:
            with contextlib.suppress(RegistryError):
                registry.untag(repository, tag)


def tag_version(
    registry: RegistryClient,
    target: PushTarget,
    pushed: PushedManifest,
    notes: list[str],
    report: Reporter,
    leave: list[Callable[[], list[str]]] | None = None,
) -> str:
    """Point the first free version tag (`target.version` unless taken meanwhile) at the pushed manifest.

    A version tag is never moved and never taken by two builds (`claim_version`): a taken
    version becomes the next free one, or an error when the user asked for that version.
    `leave`: pending work of the build, where the claim's deletion may end later.
    """
    claim = VersionClaim(target.repo, target.version, target.explicit, target.content_tag)
    before = len(notes)
    final = claim_version(registry, claim, pushed, notes, leave=leave)
    for note in notes[before:]:
        report("note", note)
    return final


# --------------------------------------------------------------------------- content seen before


def reuse_remote(
    registry: RegistryClient,
    repo: ImageRef,
    ctag: str,
    remote_tags: list[str],
    requested: str | None,
    report: Reporter,
) -> BuildResult:
    """The registry has this content already: report its version (adding one if it has none)."""
    descriptor = registry.head_manifest(repo.repository, ctag)
    if descriptor is None:  # deleted meanwhile; treat as not present is too subtle for a rare race
        raise RegistryError(f"{repo.name}:{ctag} disappeared while building; run the build again")
    for tag in newest_first(remote_tags):
        found = registry.head_manifest(repo.repository, tag)
        if found is not None and found.digest == descriptor.digest:
            if requested and requested != tag:
                raise InvalidInputError(
                    f"this content is already {repo.name}:{tag}; a version is never duplicated"
                )
            report("done", f"unchanged: {repo.name}:{tag} already has this content; nothing pushed")
            return BuildResult(
                image=f"{repo.name}:{tag}",
                version=tag,
                digest=descriptor.digest,
                tags=(tag, ctag),
                pushed=False,
                bytes_pushed=0,
                content_tag=ctag,
                reused=True,
            )
    # content pushed earlier but its version tag never landed (interrupted push): tag it now
    notes: list[str] = []
    manifest = registry.get_manifest(repo.repository, descriptor.digest)
    if requested and requested in set(registry.list_tags(repo.repository)) | set(remote_tags):
        # an explicit version is never silently replaced by another (as in tag_version)
        raise InvalidInputError(f"version {requested} already exists in {repo.name} with other content")
    pushed = PushedManifest(manifest.raw, manifest.media_type, descriptor.digest, tuple(remote_tags))
    chosen = claim_version(
        registry, VersionClaim(repo, requested, requested is not None, ctag), pushed, notes
    )
    report("done", f"{repo.name}:{chosen} tagged (content was already in the registry)")
    return BuildResult(
        image=f"{repo.name}:{chosen}",
        version=chosen,
        digest=descriptor.digest,
        tags=(chosen, ctag),
        pushed=True,
        bytes_pushed=len(manifest.raw),
        content_tag=ctag,
        reused=True,
        notes=tuple(notes),
    )


def reuse_local(
    docker_client: DockerClient, name: str, ctag: str, requested: str | None, report: Reporter
) -> BuildResult | None:
    """A local build of content the engine already has: report its local version, build nothing."""
    image = engine.inspect_image(docker_client, f"{name}:{ctag}")
    if image is None:
        return None
    tags = newest_first(r.rsplit(":", 1)[1] for r in image.get("RepoTags") or [] if r.startswith(name + ":"))
    if not tags or (requested and requested not in tags):
        return None
    chosen = requested or tags[0]
    report("done", f"unchanged: {name}:{chosen} already has this content (local)")
    return BuildResult(
        image=f"{name}:{chosen}",
        version=chosen,
        digest=str(image.get("Id")),
        tags=(chosen, ctag),
        pushed=False,
        layers=local_layers(image),
        content_tag=ctag,
        reused=True,
    )


def local_layers(image: dict[str, Any]) -> tuple[LayerInfo, ...]:
    """The layers of an image the engine inspected (none of them pushed)."""
    return tuple(LayerInfo(diff_id=d) for d in (image.get("RootFS") or {}).get("Layers") or [])


def newest_version_blobs(
    registry: RegistryClient, repo: ImageRef, tags: Iterable[str]
) -> dict[str, tuple[str, int, str]]:
    """diff_id -> (blob digest, size, media type) for the layers of the newest version in the registry."""
    for tag in newest_first(tags)[:1]:
        return image_blobs(registry, repo.repository, tag)
    return {}


def image_blobs(registry: RegistryClient, repository: str, tag: str) -> dict[str, tuple[str, int, str]]:
    """diff_id -> (blob digest, size, media type) of the image `tag` names; {} when it cannot be read."""
    try:
        manifest = image_manifest(registry, repository, tag)
        config = image_config(registry, repository, manifest)
    except RegistryError:
        return {}
    layers = manifest.json.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    return {
        str(d): (str(layer["digest"]), int(layer["size"]), str(layer.get("mediaType") or ""))
        for d, layer in zip(diff_ids, layers, strict=False)
    }


# --------------------------------------------------------------------------- listing and inspecting


@dataclass(frozen=True)
class VersionInfo:
    version: str
    digest: str
    created: str | None
    content_tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionList:
    repository: str
    versions: tuple[VersionInfo, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"repository": self.repository, "versions": [v.to_dict() for v in self.versions]}


def image_manifest(client: RegistryClient, repository: str, reference: str) -> Manifest:
    """The image manifest for `reference`; for an index, its linux/amd64 (or first) entry."""
    manifest = client.get_manifest(repository, reference)
    if manifest.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        entries = manifest.json.get("manifests") or []
        if not entries:
            raise RegistryError(f"{repository}:{reference} is an empty image index")
        chosen = next(
            (
                e
                for e in entries
                if (e.get("platform") or {}).get("os") == "linux"
                and (e.get("platform") or {}).get("architecture") == "amd64"
            ),
            entries[0],
        )
        manifest = client.get_manifest(repository, str(chosen["digest"]))
    return manifest


def image_config(client: RegistryClient, repository: str, manifest: Manifest) -> dict[str, Any]:
    """The image config JSON a manifest points to."""
    return image_config_blob(client, repository, manifest)[1]


def image_config_blob(
    client: RegistryClient, repository: str, manifest: Manifest
) -> tuple[bytes, dict[str, Any]]:
    """The image config a manifest points to: its exact bytes and the parsed JSON."""
    config = manifest.json.get("config") or {}
    digest = config.get("digest")
    if not digest:
        raise RegistryError(f"manifest {manifest.digest} has no config")
    raw = client.get_blob(repository, str(digest))
    try:
        data = json.loads(raw)
    except ValueError:
        raise RegistryError(f"config blob {digest} is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(f"config blob {digest} is not a JSON object")
    return raw, data


def list_versions(repository: str, *, client: RegistryClient | None = None) -> VersionList:
    """Every `vN` tag of `repository`, newest first, with manifest digest and creation time."""
    ref = parse_repository(repository)
    if client is None:
        with RegistryClient.for_ref(ref) as own:
            return list_versions(repository, client=own)
    tags = client.list_tags(ref.repository)
    digests_by_content: dict[str, str] = {}
    for tag in tags:
        if is_content_tag(tag):
            descriptor = client.head_manifest(ref.repository, tag)
            if descriptor:
                digests_by_content[descriptor.digest] = tag
    versions: list[VersionInfo] = []
    for tag in newest_first(tags):
        manifest = client.find_manifest(ref.repository, tag)
        if manifest is None:  # deleted between listing and reading
            continue
        created: str | None = None
        try:  # the version's own time; for one pushed before versions had it, the image's
            created = version_created(client, ref.repository, manifest.digest, tag) or image_config(
                client, ref.repository, image_manifest(client, ref.repository, tag)
            ).get("created")
        except RegistryError:
            created = None
        versions.append(VersionInfo(tag, manifest.digest, created, digests_by_content.get(manifest.digest)))
    return VersionList(ref.name, tuple(versions))


@dataclass(frozen=True)
class InspectResult:
    image: str
    source: str  # "engine" or "registry"
    digest: str | None
    labels: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect(image: str, *, prefer: str = "engine") -> InspectResult:
    """The `dev.modelpack.*` labels of `image`, from the local engine if it has it, else the registry."""
    ref = ImageRef.parse(image)  # a malformed reference is bad input (exit 2), whoever would be asked
    if prefer == "engine":
        found = _inspect_local(image)
        if found is not None:
            return found
    with RegistryClient.for_ref(ref) as client:
        manifest = image_manifest(client, ref.repository, ref.reference)
        config = image_config(client, ref.repository, manifest)
        labels = (config.get("config") or {}).get("Labels") or {}
        top = client.head_manifest(ref.repository, ref.reference)
    return InspectResult(
        image=str(ref),
        source="registry",
        digest=top.digest if top else manifest.digest,
        labels=_modelpack_labels(labels),
    )


def _inspect_local(image: str) -> InspectResult | None:
    """None when there is no engine or it does not have the image."""
    try:
        client = engine.connect(timeout=30)
    except Exception:
        return None
    try:
        data = engine.inspect_image(client, image)
    finally:
        client.close()
    if data is None:
        return None
    labels = (data.get("Config") or {}).get("Labels") or {}
    name = image.rsplit("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    repo_digests = [d for d in data.get("RepoDigests") or [] if d.split("@", 1)[0] == name]
    digest = repo_digests[0].split("@", 1)[1] if repo_digests else str(data.get("Id"))
    return InspectResult(image=image, source="engine", digest=digest, labels=_modelpack_labels(labels))


def _modelpack_labels(labels: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in sorted(labels.items()) if str(k).startswith(LABEL_PREFIX)}
