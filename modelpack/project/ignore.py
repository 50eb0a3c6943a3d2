"""Which files of a model directory go into the build context.

`.modelpackignore` (and the Clarifai SDK's `.clarifaiignore`, read first) use gitignore syntax (matched with `pathspec`'s GitIgnoreSpec,
so negation, anchoring and directory-only patterns behave as in git). A set of
defaults always applies first, so that VCS data, caches, virtualenvs, `.env` files and
credential files (`.netrc`, `.pypirc`, `.npmrc`, `.git-credentials`, `.envrc`, `*.pem`/`*.key`
and other private keys, `~/.aws`-, gcloud-, Azure-, kube- and docker-login files) never reach an
image even without an ignore file; a user pattern starting with `!` can re-include a
default-ignored file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack.errors import RenderError

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

IGNORE_FILE = ".modelpackignore"
CLARIFAI_IGNORE_FILE = ".clarifaiignore"
IGNORE_FILES = (CLARIFAI_IGNORE_FILE, IGNORE_FILE)  # in reading order: .modelpackignore wins

DEFAULT_PATTERNS: tuple[str, ...] = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".venv/",
    "venv/",
    ".env",
    ".env.*",
    "*.env",  # prod.env, secrets.env: the same dotenv files under another name
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    ".DS_Store",
    # credentials: package indexes, git, shells, private keys, cloud and cluster logins
    ".netrc",
    "_netrc",
    ".envrc",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa",
    "id_ecdsa",
    "id_ed25519",
    ".ssh/",
    ".aws/",
    ".azure/",
    ".config/gcloud/",
    "application_default_credentials.json",
    ".kube/",
    ".docker/config.json",
)


@dataclass(frozen=True)
class IgnoreRules:
    """A compiled matcher for paths relative to the model directory (POSIX separators)."""

    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_spec", _compiled(self.patterns))

    def ignored(self, relpath: str, *, is_dir: bool = False) -> bool:
        """True when `relpath` (relative, '/'-separated) is excluded from the context."""
        candidate = relpath.rstrip("/") + ("/" if is_dir else "")
        return bool(self._spec.match_file(candidate))  # type: ignore[attr-defined]


@lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> GitIgnoreSpec:
    """The matcher of `patterns`, once per process (a matcher is only read): compiling the
    defaults' regular expressions was a few milliseconds of each render."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def default_rules() -> IgnoreRules:
    """The rules of a model directory without ignore files."""
    return IgnoreRules(DEFAULT_PATTERNS)


def load_rules(root: Path, extra: Iterable[str] = ()) -> IgnoreRules:
    """Defaults, then `extra`, then `.clarifaiignore` and `.modelpackignore` (later wins)."""
    lines: list[str] = [*DEFAULT_PATTERNS, *extra]
    for name in IGNORE_FILES:
        ignore_file = root / name
        if not ignore_file.is_file():
            continue
        try:
            text = ignore_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise RenderError(
                f"{ignore_file}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
            ) from None
        except OSError as error:
            raise RenderError(f"{ignore_file}: cannot read: {error.strerror}") from None
        lines.extend(text.splitlines())
    return IgnoreRules(tuple(lines))


def is_virtualenv(path: Path) -> bool:
    """A directory holding `pyvenv.cfg` is a virtualenv whatever its name (an unreadable one is
    not: reading it is what reports it)."""
    try:
        return (path / "pyvenv.cfg").is_file()
    except OSError:
        return False
