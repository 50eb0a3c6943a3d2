"""Image versions in a registry: `v1`, `v2`, ... tags plus immutable content tags `c-<hex16>`.

A version tag is only ever created for new content and never moved; the content
tag (derived from the rendered context's digest) is how a rebuild of unchanged
inputs finds the version it already has. Registry traffic goes through
`modelpack.oci.registry`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from modelpack.errors import InvalidInputError, RegistryError
from modelpack.oci.registry import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    ImageRef,
    Manifest,
    RegistryClient,
)

VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")
CONTENT_TAG_PREFIX = "c-"
LABEL_PREFIX = "dev.modelpack."


def content_tag(content_digest: str) -> str:
    """`c-` plus the first 16 hex digits of the content digest (`sha256:...` or bare hex)."""
    hexpart = content_digest.split(":", 1)[-1].lower()
    if not re.fullmatch(r"[0-9a-f]{16,}", hexpart):
        raise ValueError(f"not a content digest: {content_digest!r}")
    return CONTENT_TAG_PREFIX + hexpart[:16]


def version_number(tag: str) -> int | None:
    match = VERSION_RE.match(tag)
    return int(match.group(1)) if match else None


def next_version(tags: list[str] | set[str]) -> str:
    """The version after the highest `vN` among `tags` (`v1` when there is none)."""
    numbers = [n for n in (version_number(t) for t in tags) if n is not None]
    return f"v{max(numbers, default=0) + 1}"


def check_version(version: str) -> str:
    if version_number(version) is None:
        raise InvalidInputError(f"invalid version {version!r}: use v1, v2, ...")
    return version


def parse_repository(repository: str) -> ImageRef:
    """`registry/name` without tag or digest, for `--tag REPO` and `versions REPO`."""
    ref = ImageRef.parse(repository)
    if ref.digest or (ref.tag and ":" in repository.rsplit("/", 1)[-1]):
        raise InvalidInputError(f"expected a repository without tag or digest, got {repository!r}")
    return ImageRef(ref.registry, ref.repository)


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
        if tag.startswith(CONTENT_TAG_PREFIX):
            descriptor = client.head_manifest(ref.repository, tag)
            if descriptor:
                digests_by_content[descriptor.digest] = tag
    versions: list[VersionInfo] = []
    for tag in sorted((t for t in tags if version_number(t)), key=lambda t: -(version_number(t) or 0)):
        manifest = client.find_manifest(ref.repository, tag)
        if manifest is None:  # deleted between listing and reading
            continue
        created: str | None = None
        try:
            created = image_config(client, ref.repository, image_manifest(client, ref.repository, tag)).get(
                "created"
            )
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
        from modelpack.image import engine
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
