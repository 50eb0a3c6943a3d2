"""What one build or push talks through, and where its new content goes.

The engine and registry clients are opened once by `build`/`push` and handed down as a
`BuildSession`, so every step uses the same connections and tests can hand in fakes. A
`PushTarget` carries the tags a push writes: its content tag and the version it asks for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelpack.errors import RegistryError
from modelpack.image.engine import ClassicBuilder, ImageBuilder
from modelpack.image.results import RegistryAuth
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import Descriptor, RegistryClient
from modelpack.pipeline.base_recipes import BaseSettings
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import Reporter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from docker import DockerClient


@dataclass(frozen=True)
class BuildSession:
    """The engine and registry clients of one build or push, its credentials and its reporter."""

    engine: DockerClient
    registry: RegistryClient
    auth: RegistryAuth | None
    report: Reporter
    builder: ImageBuilder | None = None  # None: the classic builder on `engine`
    # work a push left running (the engine's copy of the pushed image), so the supply-chain
    # records go up meanwhile; `finish` waits for it before the build returns
    pending: list[Callable[[], list[str]]] = field(default_factory=list, repr=False, compare=False)
    # called with the pushed manifest's descriptor before its version is claimed (work that needs
    # the content in the registry but not its version starts then)
    on_sent: list[Callable[[Descriptor], None]] = field(default_factory=list, repr=False, compare=False)

    def finish(self) -> tuple[str, ...]:
        """Wait for the work left running; its notes. Each step reports its own failures as notes:
        what one raises is a bug, raised here once all of it has ended."""
        notes: list[str] = []
        raised: BaseException | None = None
        while self.pending:
            try:
                notes += self.pending.pop(0)()
            except BaseException as error:  # the rest still ends (the load, its files) first
                raised = raised or error
        if raised is not None:
            raise raised
        return tuple(notes)

    def alongside(self, step: Callable[[], None], name: str) -> None:
        """Run `step` (which reports its own failures as notes) in a thread of its own while the
        build goes on; `finish` waits for it, and raises what it did not catch."""
        raised: list[BaseException] = []

        def run() -> None:
            try:
                step()
            except BaseException as error:  # raised again where the build waits for it
                raised.append(error)

        thread = threading.Thread(target=run, name=f"modelpack-{name}", daemon=True)
        thread.start()

        def joined() -> list[str]:
            thread.join()
            if raised:
                raise raised[0]
            return []

        self.pending.append(joined)

    def image_builder(self) -> ImageBuilder:
        return self.builder if self.builder is not None else ClassicBuilder(self.engine)

    def docker_auth(self) -> dict[str, str] | None:
        """The credentials as the engine's push and pull take them (None: the engine's own)."""
        return self.auth.docker_auth() if self.auth else None


@dataclass(frozen=True)
class PushTarget:
    """Where new content goes: the repository, its content tag and the version picked for it."""

    repo: ImageRef
    content_tag: str
    version: str  # the requested version, else the next free one when the push started
    explicit: bool  # the user asked for `version`: it is never replaced by another
    remote_tags: tuple[str, ...] = ()  # the repository's tags when the build started

    @property
    def name(self) -> str:
        return self.repo.name

    def ref(self, tag: str) -> str:
        """`registry/repository:tag`, as the engine names it."""
        return f"{self.repo.name}:{tag}"


@dataclass(frozen=True)
class BuildRequest:
    """What the caller asked of the engine and registry part, checked."""

    repo: ImageRef
    push: bool = False
    version: str | None = None  # a valid version tag the user asked for
    auth: RegistryAuth | None = None
    settings: BuildSettings = field(default_factory=BuildSettings)
    base_registry: str | None = None  # None: resolve reads MODELPACK_BASE_REGISTRY
    network_mode: str | None = None
    signing_key: EllipticCurvePrivateKey | None = None
    build_base: bool = True  # build a missing catalog base (else: fail naming `modelpack base build`)
    base_settings: BaseSettings = field(default_factory=BaseSettings)
    builder: str | None = None  # buildkit, classic, None: BuildKit where the engine has it
    cache_registry: ImageRef | None = None  # BuildKit: the image its build cache is shared through


def registry_for(repo: ImageRef, auth: RegistryAuth | None) -> RegistryClient:
    """A client for the repository's registry: explicit credentials, else the Docker config's."""
    return RegistryClient(
        repo.registry, username=auth.username if auth else None, password=auth.password if auth else None
    )


def ping(registry: RegistryClient) -> None:
    """Fail early, in one line, when the registry is down or refuses the credentials."""
    try:
        registry.ping()
    except RegistryError as error:
        if " 401" in error.message or " 403" in error.message:
            raise RegistryError(
                f"registry {registry.registry} refused authentication (use `docker login` or "
                f"--registry-username/--registry-password-stdin): {error.message}"
            ) from None
        raise


__all__ = ["BuildRequest", "BuildSession", "PushTarget", "ping", "registry_for"]
