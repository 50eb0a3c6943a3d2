"""Image references: ``[registry/]repository[:tag][@digest]`` parsed the way the docker CLI reads them.

Kept apart from the registry client so that parsing a name needs no HTTP stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelpack.errors import InvalidInputError

DEFAULT_REGISTRY = "docker.io"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference ``[registry/]repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        text = reference.strip()
        if not text or any(c.isspace() for c in text):
            raise InvalidInputError(f"invalid image reference {reference!r}")
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise InvalidInputError(f"invalid digest in image reference {reference!r}")
        tag = None
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            text, tag = text.rsplit(":", 1)
            if not _TAG_RE.match(tag):
                raise InvalidInputError(f"invalid tag in image reference {reference!r}")
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, repository = first, rest
        else:
            registry, repository = DEFAULT_REGISTRY, text
            if "/" not in repository:
                repository = "library/" + repository
        if not _REPO_RE.match(repository):
            raise InvalidInputError(f"invalid repository name in image reference {reference!r}")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest (cosign's docker-reference)."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes in ``/manifests/<reference>``: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_repository(repository: str) -> ImageRef:
    """`registry/name` without tag or digest, for `--tag REPO` and `versions REPO`."""
    ref = ImageRef.parse(repository)
    if ref.digest or (ref.tag and ":" in repository.rsplit("/", 1)[-1]):
        raise InvalidInputError(f"expected a repository without tag or digest, got {repository!r}")
    return ImageRef(ref.registry, ref.repository)
