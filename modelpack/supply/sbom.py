"""A CycloneDX 1.5 SBOM of the image's Python dependencies, built from the hash-pinned lock file.

The lock (``requirements.lock``) has lines ``name==version --hash=sha256:<hex> ...`` (backslash
continuations allowed, ``; marker`` kept). The SBOM is canonical JSON with a serial number derived
from its content, so the same lock and build time give the same bytes. It is attached to the image
as an OCI artifact (:data:`SBOM_ARTIFACT_TYPE`) and listed in the signed record. Written here
rather than with cyclonedx-python-lib (no extra runtime dependency, byte-for-byte reproducible);
the tests validate it against the CycloneDX 1.5 JSON schema that library ships.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from modelpack._version import __version__
from modelpack.errors import InvalidInputError
from modelpack.oci.registry import Descriptor, RegistryClient, canonical_json
from modelpack.project.requirements import logical_lines
from modelpack.supply.record import push_artifact

SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*===?\s*([^\s;]+)")
_HASH_RE = re.compile(r"--hash[=\s]+(sha256|sha384|sha512):([0-9a-fA-F]+)")
_ALGS = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}


@dataclass(frozen=True)
class LockedPackage:
    name: str  # canonical (PEP 503) name
    version: str
    hashes: tuple[tuple[str, str], ...]  # (algorithm, hex)
    marker: str | None = None

    @property
    def purl(self) -> str:
        return f"pkg:pypi/{self.name}@{self.version}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str, filename: str = "requirements.lock") -> list[LockedPackage]:
    """The pinned packages of a lock file; option lines (``--index-url``...) are skipped."""
    logical = logical_lines(text)  # joined as pip joins them: pip installs the image from it
    packages = []
    for number, line in logical:
        if line.startswith("-"):
            continue
        match = _PIN_RE.match(line)
        if not match:
            raise InvalidInputError(
                f"{filename}:{number}: not a pinned requirement (name==version): {line[:80]}"
            )
        requirement = line.split("--hash", 1)[0]
        marker = requirement.split(";", 1)[1].strip() if ";" in requirement else None
        hashes = tuple((alg, value.lower()) for alg, value in _HASH_RE.findall(line))
        packages.append(LockedPackage(_canonical(match.group(1)), match.group(3), hashes, marker))
    return sorted(packages, key=lambda p: (p.name, p.version, p.marker or ""))


def build_sbom(lock_text: str, *, subject: str, build_time: str) -> dict[str, Any]:
    """The CycloneDX document for ``lock_text``; ``subject`` names the image it describes."""
    components = []
    for package in parse_lock(lock_text):
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": package.purl,
            "name": package.name,
            "version": package.version,
            "purl": package.purl,
        }
        if package.hashes:
            component["hashes"] = [{"alg": _ALGS[alg], "content": value} for alg, value in package.hashes]
        if package.marker:
            component["properties"] = [{"name": "python:environment-marker", "value": package.marker}]
        components.append(component)
    body: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": build_time,
            "tools": {"components": [{"type": "application", "name": "modelpack", "version": __version__}]},
            "component": {"type": "container", "name": subject, "bom-ref": subject},
        },
        "components": components,
    }
    body["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, canonical_json(body).decode()))
    return body


def sbom_bytes(lock_text: str, *, subject: str, build_time: str) -> bytes:
    return canonical_json(build_sbom(lock_text, subject=subject, build_time=build_time))


def push_sbom(client: RegistryClient, repository: str, subject: Descriptor, sbom: bytes) -> Descriptor:
    """Attach the SBOM to the image ``subject`` as an OCI artifact; the record lists the result."""
    return push_artifact(client, repository, subject, SBOM_ARTIFACT_TYPE, sbom)
