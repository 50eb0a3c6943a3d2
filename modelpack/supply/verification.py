"""Verify an image: its cosign signature, its signed record ("modelpack manifest"), its files (``deep``).

Passes only when all of these hold:

1. a signature under ``sha256-<image hex>.sig`` verifies with the public key and its payload names
   the image's current digest (catches: unsigned image, wrong key, a tag moved to other content,
   a signature copied from another image);
2. a record artifact refers to the image and carries a signature by the same key over
   the artifact's digest (catches: tampered or replaced record);
3. the record names the image's digest;
4. the image is verified in the repository it was built and signed for: the signature's
   ``docker-reference`` and the record's image reference name it (catches: a validly signed image
   copied, with its signatures, into another repository); ``source_repository`` names that
   repository when a mirror or a deliberate copy is verified;
5. a version tag (``vN``) or content tag (``c-<hex16>``) asked for is the one the record names
   (catches: a tag moved onto other, even validly signed, content);
6. with ``deep``: every file the record lists inside the image (code, checkpoints baked in at
   build) is found in the image's layers (later layers and whiteouts win, as in the unpacked
   filesystem) and hashes to the recorded size and sha256; the SBOM blob, when listed, exists with
   its recorded digest.

Failures raise :class:`VerificationFailed` (exit 1) with a one-line reason.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, cast

from modelpack.errors import InvalidInputError, RegistryError, SigningError
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import DOCKER_MANIFEST_LIST, OCI_INDEX, RegistryClient
from modelpack.supply.keys import key_id, load_verification_key
from modelpack.supply.record import (
    RecordError,
    SignedRecord,
    fetch_artifact_payload,
    fetch_record,
    find_records,
)
from modelpack.supply.sbom import SBOM_ARTIFACT_TYPE
from modelpack.supply.signing import (
    payload_digest,
    payload_reference,
    read_signatures,
    resolve_digest,
    signature_tag,
)
from modelpack.tags import is_content_tag, version_number

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey


class VerificationFailed(SigningError):
    """The image, its signature or its record did not verify (exit 1)."""


@dataclass(frozen=True)
class VerifyResult:
    image: str  # repository@digest
    digest: str
    key_id: str
    signature_tag: str
    manifest_digest: str
    manifest: SignedRecord
    deep: bool = False
    files_checked: int = 0
    files_not_in_image: int = 0  # recorded files fetched at runtime, so not checkable in the image

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": True,
            "image": self.image,
            "digest": self.digest,
            "key_id": self.key_id,
            "signature_tag": self.signature_tag,
            "manifest_digest": self.manifest_digest,
            "manifest": self.manifest.to_dict(),
            "deep": self.deep,
            "files_checked": self.files_checked,
            "files_not_in_image": self.files_not_in_image,
        }


def check_signature(
    client: RegistryClient,
    repository: str,
    digest: str,
    key: EllipticCurvePublicKey,
    signed_for: str | None = None,
) -> None:
    """Raise unless a signature by ``key`` over ``digest`` is stored for ``digest`` (and, given
    ``signed_for``, made for that repository)."""
    layers = read_signatures(client, repository, digest)
    if not layers:
        raise VerificationFailed(f"no signature found for {digest} (tag {signature_tag(digest)})")
    by_key = [layer for layer in layers if layer.verifies_with(key)]
    if not by_key:
        raise VerificationFailed(f"no signature for {digest} matches the key")
    vouching = [layer for layer in by_key if payload_digest(layer.payload) == digest]
    if not vouching:
        other = payload_digest(by_key[0].payload)
        raise VerificationFailed(f"the signature stored for {digest} was made for another image ({other})")
    if signed_for is not None:
        names = [payload_reference(layer.payload) for layer in vouching]
        if not any(_same_repository(name, signed_for) for name in names):
            raise VerificationFailed(
                f"the signature for {digest} was made for {names[0]}, not {signed_for} "
                f"(to verify a deliberate copy, pass --source-repository {names[0]})"
            )


def verify(
    image_ref: str,
    key: EllipticCurvePublicKey | str | Path,
    *,
    deep: bool = False,
    client: RegistryClient | None = None,
    source_repository: str | None = None,
) -> VerifyResult:
    """Verify ``image_ref`` with the public ``key`` (object, PEM file or ``env://VAR``).

    The image must have been built and signed for its own repository, or for
    ``source_repository`` when it is a mirror or a deliberate copy of an image from there.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key if isinstance(key, ec.EllipticCurvePublicKey) else load_verification_key(key)
    ref = ImageRef.parse(image_ref)
    signed_for = ImageRef.parse(source_repository).name if source_repository else ref.name
    own_client = client is None
    client = client or RegistryClient.for_ref(ref)
    try:
        target = resolve_digest(client, ref)
        digest = target.digest
        check_signature(client, ref.repository, digest, public, signed_for)

        candidates = find_records(client, ref.repository, digest)
        if not candidates:
            raise VerificationFailed(f"no modelpack manifest is attached to {digest}")
        chosen: tuple[str, SignedRecord] | None = None
        reason = "the modelpack manifest is not signed by this key"
        for candidate in candidates:
            try:
                check_signature(client, ref.repository, candidate.digest, public, signed_for)
                artifact, doc = fetch_record(client, ref.repository, candidate.digest)
            except VerificationFailed:
                continue
            except (RecordError, RegistryError) as error:
                reason = f"the modelpack manifest {candidate.digest} is unreadable: {error.message}"
                continue
            subject = (artifact.get("subject") or {}).get("digest")
            if doc.image.digest != digest or subject != digest:
                reason = f"the signed manifest records image {doc.image.digest}, not {digest}"
                continue
            if not _same_repository(doc.image.reference, signed_for):
                reason = (
                    f"the signed manifest was made for {doc.image.reference}, not {signed_for} "
                    "(to verify a deliberate copy, pass --source-repository)"
                )
                continue
            chosen = (candidate.digest, doc)
            break
        if chosen is None:
            raise VerificationFailed(reason)
        manifest_digest, doc = chosen
        _check_version_tag(ref, doc.image.reference, digest)
        _check_content_tag(ref, doc.image.content_tag, digest)

        checked = skipped = 0
        if deep:
            checked, skipped = verify_files(client, ref.repository, digest, doc)
            if doc.sbom is not None:
                check_sbom(client, ref.repository, doc.sbom.digest)
        return VerifyResult(
            image=f"{ref.name}@{digest}",
            digest=digest,
            key_id=key_id(public),
            signature_tag=signature_tag(digest),
            manifest_digest=manifest_digest,
            manifest=doc,
            deep=deep,
            files_checked=checked,
            files_not_in_image=skipped,
        )
    finally:
        if own_client:
            client.close()


def _check_version_tag(ref: ImageRef, recorded_reference: str, digest: str) -> None:
    """A version tag asked for must be the one the signed record was made for.

    modelpack gives each content exactly one version and never moves a version tag, so
    `repo:v1` resolving to content whose record says `repo:v2` means the tag was moved
    onto other (even validly signed) content.
    """
    if ref.digest is not None or ref.tag is None or version_number(ref.tag) is None:
        return
    try:
        recorded = ImageRef.parse(recorded_reference)
    except InvalidInputError:
        return
    if recorded.tag is not None and version_number(recorded.tag) is not None and recorded.tag != ref.tag:
        raise VerificationFailed(
            f"tag {ref.tag} was moved: it points at {digest}, whose signed manifest was made for "
            f"{recorded.tag} ({recorded_reference})"
        )


def _check_content_tag(ref: ImageRef, recorded: str | None, digest: str) -> None:
    """A content tag asked for must be the one the signed record names: content tags never move."""
    if ref.digest is not None or ref.tag is None or not is_content_tag(ref.tag):
        return
    if recorded is None:
        raise VerificationFailed(
            f"the signed manifest of {digest} names no content tag, so {ref.tag} cannot be checked; "
            "verify the image by its version tag or digest"
        )
    if recorded != ref.tag:
        raise VerificationFailed(
            f"tag {ref.tag} was moved: it points at {digest}, whose signed manifest was made for {recorded}"
        )


def _same_repository(reference: str | None, repository: str) -> bool:
    """``reference`` (a name, with or without tag or digest) names ``repository``."""
    if not reference:
        return False
    try:
        return ImageRef.parse(reference).name == repository
    except InvalidInputError:
        return False


def check_sbom(client: RegistryClient, repository: str, digest: str) -> None:
    """The SBOM artifact the record lists exists, with intact content (digests are checked on fetch)."""
    try:
        fetch_artifact_payload(client, repository, digest, SBOM_ARTIFACT_TYPE)
    except (RecordError, RegistryError) as error:
        raise VerificationFailed(f"the SBOM listed in the manifest is not intact: {error.message}") from None


# --- deep: walk the image layers ------------------------------------------------------------------


def _platform_manifest(client: RegistryClient, repository: str, digest: str) -> dict[str, Any]:
    manifest = client.get_manifest(repository, digest)
    body = manifest.json
    if manifest.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        entries = [m for m in body.get("manifests") or [] if (m.get("platform") or {}).get("os") != "unknown"]
        preferred = [m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"]
        chosen = (preferred or entries or [None])[0]
        if chosen is None:
            raise VerificationFailed(f"image index {digest} lists no image")
        body = client.get_manifest(repository, str(chosen["digest"])).json
    return body


def _normalise(name: str) -> str:
    """Tar member names (``./app/x``, ``app/x``, ``/app/x``) as absolute image paths.

    ``.`` and ``..`` segments are resolved as the engine does when it unpacks a layer, so
    ``app/x/../1/model.py`` overrides ``/app/1/model.py`` here too.
    """
    import posixpath

    return posixpath.normpath("/" + name.lstrip("/"))


def layer_file_hashes(
    client: RegistryClient, repository: str, image_digest: str, wanted: set[str]
) -> dict[str, tuple[int, str]]:
    """``{image path: (size, sha256 hex)}`` for the ``wanted`` paths as the unpacked image has them."""
    state: dict[str, tuple[int, str]] = {}
    unknown: set[str] = set()  # wanted paths that are hard links to files not hashed
    manifest = _platform_manifest(client, repository, image_digest)
    for layer in manifest.get("layers") or []:
        media_type = str(layer.get("mediaType", ""))
        if "zstd" in media_type:
            raise VerificationFailed(
                f"layer {layer.get('digest')} is zstd-compressed, which --deep cannot read"
            )
        stream = client.open_blob(repository, str(layer["digest"]))
        try:
            seen: dict[str, tuple[int, str]] = {}
            try:
                with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|*") as archive:
                    for member in archive:
                        path = _normalise(member.name)
                        parent, base = str(PurePosixPath(path).parent), PurePosixPath(path).name
                        if base == ".wh..wh..opq":
                            prefix = parent.rstrip("/") + "/"
                            for key in [k for k in state if k.startswith(prefix)]:
                                del state[key]
                            continue
                        if base.startswith(".wh."):
                            removed = str(PurePosixPath(parent, base[4:]))
                            state.pop(removed, None)
                            for key in [k for k in state if k.startswith(removed + "/")]:
                                del state[key]
                            continue
                        if not member.isdir():
                            # a file or link where a directory was hides everything below it
                            below = path.rstrip("/") + "/"
                            for table in (state, seen):
                                for key in [k for k in table if k.startswith(below)]:
                                    del table[key]
                        if member.islnk():
                            target = _normalise(member.linkname)
                            if path in wanted and target in seen:
                                seen[path] = seen[target]
                            else:
                                # a link to a file not hashed here: the path's content is
                                # unknown, so it must not keep a lower layer's record
                                seen.pop(path, None)
                                state.pop(path, None)
                                if path in wanted:
                                    unknown.add(path)
                            continue
                        if not member.isfile():
                            seen.pop(path, None)
                            state.pop(path, None)
                            continue
                        if path not in wanted:
                            continue
                        handle = archive.extractfile(member)
                        assert handle is not None
                        digest = hashlib.sha256()
                        for chunk in iter(lambda: handle.read(1024 * 1024), b""):  # noqa: B023
                            digest.update(chunk)
                        seen[path] = (member.size, digest.hexdigest())
            except tarfile.TarError as error:
                raise VerificationFailed(
                    f"layer {layer.get('digest')} is not a readable tar: {error}"
                ) from None
            while stream.read(1024 * 1024):  # drain, so the layer digest gets checked
                pass
            state.update(seen)
        finally:
            stream.close()
    lost = sorted(unknown - set(state))
    if lost:
        raise VerificationFailed(f"{lost[0]} in the image is a hard link that --deep cannot check")
    return state


def verify_files(
    client: RegistryClient, repository: str, image_digest: str, doc: SignedRecord
) -> tuple[int, int]:
    """Check every recorded in-image file; returns (files checked, recorded files not in the image)."""
    files = doc.image_files()
    recorded_total = sum(len(c.files) for c in doc.checkpoints) + (len(doc.code.files) if doc.code else 0)
    wanted = {path for path, _ in files}
    found = layer_file_hashes(client, repository, image_digest, wanted)
    for path, record in files:
        actual = found.get(path)
        if actual is None:
            raise VerificationFailed(f"{path} is recorded in the manifest but missing from the image")
        size, sha = actual
        if sha != record.sha256 or size != record.size:
            raise VerificationFailed(f"{path} in the image does not match the manifest (sha256 {sha[:12]}…)")
    return len(files), recorded_total - len(files)
