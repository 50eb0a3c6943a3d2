"""Base images in the engine and a base registry: find, pull, build (from recipes) and push them.

`ensure` is what `modelpack build` calls before the engine build: the base a model resolved to
is used from the engine, else pulled from the base registry (``PREFIX/NAME``), else built from
its recipe (`modelpack.pipeline.base_recipes`) and pushed there, so other machines reuse it.
A push goes the way the runtime stage's layers go (`runtime_layers.image_in_registry`): layers
the registry has are mounted, the rest gzipped with ISA-L while `docker save` streams them (the
engine's own push gzips a 5 GB torch layer with zlib on one core); the manifest is Docker schema
2 with the engine's exact config, and where it went is kept for the builds that mount from it.
Builds run BuildKit through the docker CLI: the CA bundle is a secret mount and uv a bind
mount, so neither reaches a layer; a failed build tags nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack import scratch
from modelpack.errors import EngineError, RegistryError, RuntimeFailure
from modelpack.image import assemble, engine, runtime_layers
from modelpack.image.buildkit import CLI_VARIABLE, configured_cli
from modelpack.image.results import LayerInfo, RegistryAuth
from modelpack.image.session import BuildSession, ping, registry_for
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import DOCKER_MANIFEST
from modelpack.pipeline.base_recipes import (
    DEBIAN_SUITES,
    BaseRecipe,
    BaseSettings,
    python_sources,
    recipe,
    select,
)
from modelpack.pipeline.catalog import Catalog, load_catalog, with_registry
from modelpack.pipeline.locking import SYSTEM_CA_BUNDLE, find_uv
from modelpack.progress import Reporter
from modelpack.resources import cache_lock, data_dir

if TYPE_CHECKING:
    from docker import DockerClient

BASE_LOCKS = "base-locks"  # cache folder of the per-base build locks


class BaseSourceError(RuntimeFailure):
    """No source of a base was reachable, or its build failed; exit 1."""


@dataclass(frozen=True)
class BaseJob:
    """What base work needs: the engine, where ingredients and copies live, how to report."""

    engine: DockerClient
    settings: BaseSettings
    report: Reporter
    base_registry: str | None = None  # PREFIX: pull PREFIX/NAME first, push built bases there
    auth: RegistryAuth | None = None
    ca_bundle: Path | None = None  # reaches the install step as a BuildKit secret only
    catalog: Catalog = field(default_factory=load_catalog)

    def remote(self, name: str) -> str | None:
        return with_registry(name, self.base_registry) if self.base_registry else None


@dataclass(frozen=True)
class BaseOutcome:
    """Where a base came from (engine, registry, built) and the reference and digest used."""

    name: str
    reference: str
    source: str  # "engine", "registry" or "built:<how>"
    digest: str | None
    pushed: bool = False
    layers: tuple[LayerInfo, ...] = ()  # what a push did with each layer: pushed, present, mounted
    bytes_pushed: int = 0
    local: engine.LocalImage | None = None  # `reference` as the engine had it, when it was looked at

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference": self.reference,
            "source": self.source,
            "digest": self.digest,
            "pushed": self.pushed,
            "layers": [layer.to_dict() for layer in self.layers],
            "bytes_pushed": self.bytes_pushed,
        }


# --------------------------------------------------------------------------- ensure


def ensure(job: BaseJob, name: str, *, build_missing: bool = True, push: bool = True) -> BaseOutcome:
    """Have `name` (a catalog name) in the engine, under ``PREFIX/NAME`` when a registry is set.

    A build holds a lock per base name (`cache_lock`), so concurrent builds on this machine make
    a base once: the next one waits, then finds it in the engine or the base registry; when the
    first build failed, it builds the base itself.
    """
    found = _existing(job, name, push)
    if found is not None:
        return found
    with cache_lock(
        BASE_LOCKS,
        name.replace("/", "_").replace(":", "_") + ".lock",
        on_wait=lambda: job.report("base", f"waiting for another build of {name} on this machine"),
    ):
        found = _existing(job, name, push)  # what the build we waited for made
        if found is not None:
            return found
        if not build_missing:  # after waiting: a base another build is making here is used
            where = f" nor in {job.base_registry}" if job.base_registry else ""
            raise EngineError(
                f"base image {name} is not in the engine{where}; build it with `modelpack base build {name}` "
                "or leave out --no-build-base"
            )
        return _build_and_share(job, name, push)


def _existing(job: BaseJob, name: str, push: bool) -> BaseOutcome | None:
    """The base from the engine (tagged and shared when the registry lacks it) or the registry."""
    remote = job.remote(name)
    wanted = remote or name
    image = engine.inspect_image(job.engine, wanted)
    if image is not None:
        return _seen(name, wanted, "engine", image)
    if remote is None:
        return None
    image = engine.inspect_image(job.engine, name)
    if image is not None:
        _tag(job, name, remote)
        if push:
            return _push(job, name, remote, "engine")
        return _seen(name, remote, "engine", image)  # a tag changes neither its id nor its digests
    if _pull(job, remote):
        job.report("base", f"pulled {remote}")
        return _seen(name, remote, "registry", engine.inspect_image(job.engine, remote))
    return None


def _build_and_share(job: BaseJob, name: str, push: bool) -> BaseOutcome:
    remote = job.remote(name)
    wanted = remote or name
    how = build(job, recipe(name, job.settings, job.catalog))
    if remote is not None:
        _tag(job, name, remote)
        if push:
            return _push(job, name, remote, f"built:{how}")
    return _seen(name, wanted, f"built:{how}", engine.inspect_image(job.engine, wanted))


def _seen(name: str, reference: str, source: str, image: dict[str, Any] | None) -> BaseOutcome:
    """The outcome with the engine's one answer about `reference`: the build keeps it (the id for
    the runtime cache, the digest for the record) instead of asking the engine again."""
    if image is None:
        return BaseOutcome(name, reference, source, None)
    digest = _digest(reference, image)
    local = engine.LocalImage(reference, str(image.get("Id") or ""), digest)
    return BaseOutcome(name, reference, source, digest, local=local)


def _digest(reference: str, image: dict[str, Any]) -> str | None:
    """The digest to name the base by: a repo digest the engine knows, else, for a base that
    `base push` put in `reference`'s repository, that manifest's digest (the engine sets none for
    a push it did not make), else the image id. `image`: the engine's inspection of `reference`."""
    found = engine.digest_of(image)
    if found != image.get("Id"):
        return found
    name = reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
    for copy in runtime_layers.recorded_copies(str(image.get("Id") or "")):
        if copy.split("@", 1)[0] == name:
            return copy.split("@", 1)[1]
    return found


def _tag(job: BaseJob, source: str, reference: str) -> None:
    repository, tag = reference.rsplit(":", 1)
    engine.tag_image(job.engine, source, repository, tag)


def _pull(job: BaseJob, reference: str) -> bool:
    repository, tag = reference.rsplit(":", 1)
    try:
        engine.pull_image(
            job.engine, repository, tag, auth_config=job.auth.docker_auth() if job.auth else None
        )
    except RegistryError:
        return False
    return True


def _push(job: BaseJob, name: str, reference: str, source: str) -> BaseOutcome:
    """Put the engine's `reference` into its registry as modelpack pushes runtime layers (not the
    engine's push), tag it with a Docker schema 2 manifest, and keep where it went."""
    repo = ImageRef.parse(reference)
    assert repo.tag is not None  # PREFIX/NAME, and catalog names have tags
    job.report("base", f"pushing {reference}")
    with registry_for(repo, job.auth) as registry:
        ping(registry)
        session = BuildSession(job.engine, registry, job.auth, job.report)
        image = runtime_layers.image_in_registry(session, repo, reference)
        manifest = assemble.image_manifest(image.config, image.descriptors)
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        digest = registry.put_manifest(repo.repository, repo.tag, raw, DOCKER_MANIFEST).digest
    image_id = str(manifest["config"]["digest"])
    runtime_layers.remember_copy(image_id, f"{repo.registry}/{repo.repository}@{digest}")
    sent = sum(layer.status == "pushed" for layer in image.layers)
    job.report(
        "base",
        f"pushed {reference}@{digest}: {sent} of {len(image.layers)} layers sent, {image.bytes_pushed} bytes",
    )
    local = engine.LocalImage(reference, image_id, digest)  # the engine's exact config: its id
    layers = tuple(image.layers)
    return BaseOutcome(name, reference, source, digest, True, layers, image.bytes_pushed, local=local)


def push(job: BaseJob, name: str) -> BaseOutcome:
    """Publish the built base `name` as ``PREFIX/NAME``."""
    remote = job.remote(name)
    if remote is None:
        raise BaseSourceError("pushing a base needs --base-registry PREFIX (or $MODELPACK_BASE_REGISTRY)")
    recipe(name, job.settings, job.catalog)  # an unknown name is exit 2
    tagged = engine.inspect_image(job.engine, remote) is None
    if tagged and engine.inspect_image(job.engine, name) is None:
        raise EngineError(
            f"base image {name} is not in the engine; build it with `modelpack base build {name}`"
        )
    if tagged:
        _tag(job, name, remote)
    try:
        return _push(job, name, remote, "engine")
    except BaseException:
        if tagged:  # a failed push leaves no name behind that says the base is there
            engine.untag(job.engine, remote)
        raise


# --------------------------------------------------------------------------- build


def build(job: BaseJob, plan: BaseRecipe) -> str:
    """Build `plan` into the engine under its catalog name; how it was made ("debootstrap", ...)."""
    if plan.kind == "python":
        return _build_python(job, plan)
    if plan.kind == "cuda" and plan.cuda_image and _pull_source(job, plan.cuda_image):
        _buildkit(job, plan.name, plan.image_dockerfile(plan.cuda_image), with_uv=False)
        return f"image {plan.cuda_image}"
    assert plan.parent is not None
    parent = ensure(job, plan.parent, push=False).reference
    if plan.extra_index_url and not job.settings.torch_index.has(plan.torch_variant or "cpu"):
        raise BaseSourceError(
            f"cannot build {plan.name}: the torch wheel index {plan.extra_index_url} is unreachable; set "
            "$MODELPACK_TORCH_INDEX_URL (or --torch-index-url) to a PyTorch-style mirror, or use the "
            "release's default CUDA, which comes from PyPI"
        )
    job.report("base", f"building {plan.name} on {parent}: uv pip install {' '.join(plan.packages)}")
    _buildkit(job, plan.name, plan.install_dockerfile(parent), with_uv=True)
    return "uv"


def _build_python(job: BaseJob, plan: BaseRecipe) -> str:
    failures: list[str] = []
    for source in plan.python_sources:
        if source.kind == "image":
            if _pull_source(job, source.detail):
                job.report("base", f"building {plan.name} from {source.detail}")
                _buildkit(job, plan.name, plan.image_dockerfile(source.detail), with_uv=False)
                return f"image {source.detail}"
            failures.append(f"{source.detail} could not be pulled (${source.setting} names another image)")
        elif source.kind == "debootstrap":
            job.report("base", f"building {plan.name} with debootstrap (Debian {source.detail})")
            _debootstrap(job, plan)
            return f"debootstrap {source.detail}"
        else:
            os_image = _local_os_image(job)
            if os_image is None:
                failures.append(
                    "uv-managed CPython needs a Debian base made by debootstrap, and none could be made"
                )
                continue
            job.report("base", f"building {plan.name}: uv-managed CPython from {source.detail} on {os_image}")
            _buildkit(
                job,
                plan.name,
                plan.uv_python_dockerfile(os_image),
                with_uv=True,
                build_args={"UV_PYTHON_INSTALL_MIRROR": source.detail},
            )
            return "uv python"
    kinds = {s.kind for s in plan.python_sources}
    if "debootstrap" not in kinds:
        suites = ", ".join(f"{suite} has {py}" for py, suite in DEBIAN_SUITES.items())
        reason = (
            "debootstrap needs root and the debootstrap package"
            if plan.python_version in DEBIAN_SUITES
            else (f"no Debian release ships Python {plan.python_version} for debootstrap ({suites})")
        )
        failures.append(reason)
    if "uv" not in kinds:
        failures.append("no uv Python mirror is set ($UV_PYTHON_INSTALL_MIRROR)")
    raise BaseSourceError(f"cannot build {plan.name}: " + "; ".join(failures))


def _pull_source(job: BaseJob, reference: str) -> bool:
    if engine.inspect_image(job.engine, reference) is not None:
        return True
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        repository, tag = reference, "latest"
    try:
        engine.pull_image(job.engine, repository, tag)
    except RegistryError:
        return False
    return True


def _local_os_image(job: BaseJob) -> str | None:
    """A debootstrapped Python base to put uv's CPython on (made when none is in the engine)."""
    for python in DEBIAN_SUITES:
        name = job.catalog.python_image(python)
        if engine.inspect_image(job.engine, name) is not None:
            return name
    if not job.settings.debootstrap:
        return None
    python = next(iter(DEBIAN_SUITES))
    name = job.catalog.python_image(python)
    _debootstrap(job, recipe(name, job.settings, job.catalog))
    return name


def _debootstrap(job: BaseJob, plan: BaseRecipe) -> None:
    script = data_dir("base-images") / "build-local-base.sh"
    env = {**os.environ, "MODELPACK_REBUILD_BASE": "0"}
    mirror = os.environ.get("MODELPACK_DEBOOTSTRAP_MIRROR", "").strip()
    if mirror:
        env["MODELPACK_DEBOOTSTRAP_MIRROR"] = mirror
    _stream(job, ["bash", str(script), plan.name, plan.python_version], env, f"debootstrap of {plan.name}")


def docker_cli() -> tuple[str, dict[str, str]]:
    """The docker client that builds with BuildKit (`buildkit.find_cli`: $MODELPACK_DOCKER_CLI, a
    client with buildx, or one older than 23.0 with BuildKit built in) and its environment."""
    cli = configured_cli()
    if cli is None:
        raise EngineError(
            "no docker client that builds with BuildKit was found: install docker buildx, or set "
            f"${CLI_VARIABLE} to a docker client older than 23.0"
        )
    return cli.path, {**os.environ, "DOCKER_BUILDKIT": "1"}


def _buildkit(
    job: BaseJob, tag: str, dockerfile: str, *, with_uv: bool, build_args: dict[str, str] | None = None
) -> None:
    """`docker build` of a one-file context (plus uv) with the CA bundle as a secret; tags `tag`."""
    cli, env = docker_cli()
    with scratch.folder("modelpack-base-") as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        if with_uv:
            shutil.copy2(find_uv(), context / "uv")
        secret = Path(tmp) / "ca.crt"
        # the host's trust (a TLS-inspecting proxy's CA is there): a secret mount, never a layer
        bundle = job.ca_bundle or (SYSTEM_CA_BUNDLE if SYSTEM_CA_BUNDLE.is_file() else None)
        if bundle is not None:
            shutil.copyfile(bundle, secret)
        else:
            secret.write_bytes(b"")
        command = [
            cli,
            "build",
            "--network",
            "host",
            "--progress",
            "plain",
            "--secret",
            f"id=ca,src={secret}",
        ]
        for key, value in (build_args or {}).items():
            command += ["--build-arg", f"{key}={value}"]
        command += ["--tag", tag, str(context)]
        _stream(job, command, env, f"building {tag}")


def _stream(job: BaseJob, command: list[str], env: dict[str, str], what: str) -> None:
    """Run `command`, its output as "log" progress; EngineError with its last lines on failure."""
    tail: list[str] = []
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        )
    except OSError as error:
        raise EngineError(f"{what} could not start: {error}") from None
    assert process.stdout is not None
    with process:
        for raw in process.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            del tail[:-40]
            job.report("log", line)
    if process.returncode != 0:
        raise BaseSourceError(f"{what} failed: {_failure_line(tail)}")


def _failure_line(tail: list[str]) -> str:
    for line in reversed(tail):
        lowered = line.lower()
        if "error" in lowered or "failed" in lowered or "unreachable" in lowered or "die" in lowered:
            return line.split(" ", 1)[1] if line.startswith("#") and " " in line else line
    return tail[-1] if tail else "no output"


# --------------------------------------------------------------------------- list


@dataclass(frozen=True)
class BaseStatus:
    name: str
    kind: str
    python_version: str
    torch_version: str | None
    torch_variant: str | None
    in_engine: bool
    in_registry: bool | None  # None: no base registry given
    size: int | None  # bytes in the engine
    digest: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "python_version": self.python_version,
            "torch_version": self.torch_version,
            "torch_variant": self.torch_variant,
            "in_engine": self.in_engine,
            "in_registry": self.in_registry,
            "size": self.size,
            "digest": self.digest,
        }


@dataclass(frozen=True)
class BaseList:
    bases: tuple[BaseStatus, ...]
    buildable_python: dict[str, list[str]]  # Python version -> how this machine can make its base

    def to_dict(self) -> dict[str, Any]:
        return {"bases": [b.to_dict() for b in self.bases], "buildable_python": self.buildable_python}


def list_bases(job: BaseJob, patterns: tuple[str, ...], registry_has: Any = None) -> BaseList:
    """The catalog's bases (matching `patterns`) with where they are; `registry_has(ref) -> bool`."""
    statuses: list[BaseStatus] = []
    for image in select(job.catalog, patterns):
        remote = job.remote(image.name)
        found, local = None, None
        for reference in (remote, image.name):
            local = engine.inspect_image(job.engine, reference) if reference else None
            if local is not None:
                found = reference
                break
        statuses.append(
            BaseStatus(
                name=image.name,
                kind=image.kind,
                python_version=image.python_version,
                torch_version=image.torch_version,
                torch_variant=image.torch_variant,
                in_engine=local is not None,
                in_registry=bool(registry_has(remote)) if remote and registry_has else None,
                size=int(local.get("Size") or 0) if local else None,
                digest=_digest(found, local) if found and local else None,
            )
        )
    buildable: dict[str, list[str]] = {}
    for python in job.catalog.python_versions:
        ways: list[str] = []
        if engine.inspect_image(job.engine, job.catalog.python_image(python)) is not None:
            ways.append("in engine")
        for source in python_sources(python, job.settings):
            if source.kind == "image":
                ways.append(f"{source.detail} (if pullable)")
            elif source.kind == "debootstrap":
                ways.append(f"debootstrap {source.detail}")
            else:
                ways.append(f"uv python from {source.detail}")
        buildable[python] = ways
    return BaseList(tuple(statuses), buildable)
