"""How modelpack names image tags: versions `v1`, `v2`, ... and content tags `c-<hex16>`.

One leaf module so that building, pushing, listing and verifying agree on what counts as a
version and in which order versions come; it imports nothing of modelpack but its errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from modelpack.errors import InvalidInputError

VERSION_RE = re.compile(r"^v([1-9][0-9]{0,17})$")  # at most 18 digits: an int, never a huge one
CONTENT_TAG_PREFIX = "c-"
CLAIM_MARK = ".claim."  # `v4.claim.<nonce>`: a build's claim on v4 while it tags (modelpack.image.versions)


def version_number(tag: str) -> int | None:
    """N for a version tag `vN` (no leading zero, 1 <= N < 10**18); None for any other tag."""
    match = VERSION_RE.match(tag)
    return int(match.group(1)) if match else None


def check_version(version: str) -> str:
    """`version` when it is a version tag; the `--version` a user gave otherwise is bad input."""
    if version_number(version) is None:
        raise InvalidInputError(f"invalid --version {version!r}: use v1, v2, ...")
    return version


def newest_first(tags: Iterable[str]) -> list[str]:
    """The version tags among `tags`, newest (highest N) first; other tags are left out."""
    return sorted((t for t in tags if version_number(t)), key=lambda t: -(version_number(t) or 0))


def next_version(tags: Iterable[str]) -> str:
    """The version after the highest `vN` among `tags`, claims on a version included (`v1` when
    there is none)."""
    numbers = [n for n in (version_number(claimed_version(t) or t) for t in tags) if n is not None]
    return f"v{max(numbers, default=0) + 1}"


def claim_tag(version: str, nonce: str) -> str:
    """The tag by which one build claims `version` before pointing it at its content."""
    return f"{version}{CLAIM_MARK}{nonce}"


def claimed_version(tag: str) -> str | None:
    """The version a claim tag claims; None for any other tag."""
    version, mark, nonce = tag.partition(CLAIM_MARK)
    return version if mark and nonce and version_number(version) is not None else None


def content_tag(content_digest: str) -> str:
    """`c-` plus the first 16 hex digits of the content digest (`sha256:...` or bare hex)."""
    hexpart = content_digest.split(":", 1)[-1].lower()
    if not re.fullmatch(r"[0-9a-f]{16,}", hexpart):
        raise ValueError(f"not a content digest: {content_digest!r}")
    return CONTENT_TAG_PREFIX + hexpart[:16]


def is_content_tag(tag: str) -> bool:
    return tag.startswith(CONTENT_TAG_PREFIX)


__all__ = [
    "CLAIM_MARK",
    "CONTENT_TAG_PREFIX",
    "VERSION_RE",
    "check_version",
    "claim_tag",
    "claimed_version",
    "content_tag",
    "is_content_tag",
    "newest_first",
    "next_version",
    "version_number",
]
