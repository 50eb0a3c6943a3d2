"""A thin wrapper over the Docker SDK: connect, build, tag, push, inspect.

Everything the engine says is turned into `EngineError`/`RegistryError` with a
one-line message, so callers never see docker-py exceptions or tracebacks.
The docker package is imported lazily: `modelpack --help` must stay fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Protocol

from modelpack.errors import EngineError, RegistryError
from modelpack.pipeline.settings import CLASSIC, BuildSecret
from modelpack.progress import Reporter

if TYPE_CHECKING:
    from docker import DockerClient

# Build/push events are forwarded as (kind, message) pairs; kind is "step", "log" or "push".
EventSink = Callable[[str, str], None]

# compiled on first use (the `re` module's cache): read only when a build fails
_PIP_FAILURE_PATTERNS = (
    r"No matching distribution found for (?P<req>\S+)",
    r"Could not find a version that satisfies the requirement (?P<req>\S+)",
    r"Failed to build (?P<req>\S+)",
    r"Failed building wheel for (?P<req>\S+)",
    r"ResolutionImpossible",
    r"Cannot install (?P<req>.+?) because",
    # uv's words for the same
    r"Because (?P<req>\S+) was not found in the package registry",
    r"Failed to (?:download|fetch|build|prepare distributions)[: ]+`(?P<req>[^`]+)`",
    r"Hash mismatch for `(?P<req>[^`]+)`",
    r"No solution found when resolving",
)


_UNIX_SOCKET_URL = "http+docker://localhost"  # how the SDK names an engine on a unix socket
# each connected client's `/version` answer, kept for as long as the client lives
_VERSIONS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _docker() -> ModuleType:
    try:
        import docker
    except ImportError as error:  # pragma: no cover - depends on the install
        raise EngineError("the docker SDK is not installed; install modelpack[build]") from error
    return docker


def engine_location() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 600, *, request_timeout: int | None = None) -> DockerClient:
    """A docker client from the environment (DOCKER_HOST, DOCKER_TLS_VERIFY, ...), checked by one
    request that also tells the engine's API version and OS (`_engine_answer`).

    That request waits `timeout` seconds; later requests `request_timeout` (default the same), so
    a client can fail fast on a hung engine and still sit through a quiet build step.
    """
    docker = _docker()
    try:
        # the SDK's own negotiation would ask `/version` and keep only the API version; asked
        # here, the answer is kept for the builder choice (`version_info`)
        client = docker.from_env(timeout=timeout, version=docker.constants.MINIMUM_DOCKER_API_VERSION)
        try:
            info = _engine_answer(client, timeout)
            _speak(client, str(info["ApiVersion"]))
        except BaseException:
            client.close()
            raise
    except Exception as error:
        raise EngineError(
            f"cannot reach the Docker engine at {engine_location()}: {_short(error)}"
        ) from error
    _VERSIONS[client] = info
    if client.api.base_url == _UNIX_SOCKET_URL:
        # proxies and CA bundles do not apply to a local socket: requests would look them up in
        # the environment again for every engine request
        client.api.trust_env = False
    if request_timeout is not None:
        client.api.timeout = request_timeout
    return client


def _engine_answer(probe: DockerClient, timeout: int) -> dict[str, Any]:
    """The engine's API version and OS (`ApiVersion`, `Os`), from the headers of its `/_ping`:
    under a millisecond here, where `/version` keeps the engine 5-7 ms (it asks containerd and
    the kernel). An engine whose ping does not tell both is asked `/version`."""
    response = probe.api.get(f"{probe.api.base_url}/_ping", timeout=timeout)
    api_version, os_type = response.headers.get("Api-Version"), response.headers.get("Ostype")
    if response.ok and api_version and os_type:
        return {"ApiVersion": api_version, "Os": os_type}
    return dict(probe.api.version(api_version=False))


def _speak(client: DockerClient, api_version: str) -> None:
    """Make `client` speak the engine's API version from now on, as a client made with it would
    (the SDK keeps it in one attribute, which its own negotiation sets): the connection that asked
    it serves the next request, instead of a second client's new one after this one's close. The
    SDK (7.x) offers no public way: `api_version` is a read-only property, and `version=` at
    construction needs the answer before the first request."""
    docker = _docker()
    minimum = docker.constants.MINIMUM_DOCKER_API_VERSION
    if docker.utils.version_lt(api_version, minimum):
        raise docker.errors.InvalidVersion(f"API versions below {minimum} are no longer supported by the docker SDK")
    client.api._version = api_version


def version_info(client: DockerClient) -> dict[str, Any]:
    """The engine's API version and OS (`ApiVersion`, `Os`, at least): what `connect` learnt, else
    its `/version` answer asked now."""
    known = _VERSIONS.get(client)
    return dict(known) if known is not None else dict(client.version())


def default_network_mode(client: DockerClient, endpoints: Iterable[str | None] = ()) -> str | None:
    """`host` when a build must reach a loopback service or the engine has no bridge network."""
    for endpoint in endpoints:
        if endpoint and is_loopback_url(endpoint):
            return "host"
    try:
        if not client.networks.list(names=["bridge"]):
            return "host"
    except Exception:
        return None
    return None


def is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url if "://" in url else f"//{url}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class BuildOutput:
    image_id: str
    log_tail: list[str] = field(default_factory=list)
    # digests of images the builder pulled itself (reference as written -> manifest digest):
    # BuildKit keeps them out of the engine's image store, where `image_digest` would look
    pulled: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineBuild:
    """One image build as every builder takes it: the context, what to build and what it may use."""

    context_dir: str
    tag: str
    dockerfile: str | None = None  # relative to the context; None: the engine's default
    target: str | None = None  # a stage; None: the last
    network_mode: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    secrets: tuple[BuildSecret, ...] = ()  # BuildKit only: mounted into single RUN steps
    cache_from: tuple[str, ...] = ()  # BuildKit only: images whose inline build cache is imported
    inline_cache: bool = False  # BuildKit only: write the build cache into the image config


class ImageBuilder(Protocol):
    """What builds an image in the engine: the classic builder (docker-py) or BuildKit (the CLI)."""

    name: str

    def build(self, job: EngineBuild, on_event: EventSink | None = None) -> BuildOutput:
        """Build `job` into `job.tag`; raises EngineError naming the failing step or requirement."""
        ...


class ClassicBuilder:
    """The engine's classic builder through the Docker SDK: build args reach the builder stages,
    where they stay in the intermediate images' history (no secret mounts, no cache mounts)."""

    name = CLASSIC

    def __init__(self, client: DockerClient) -> None:
        self.client = client

    def build(self, job: EngineBuild, on_event: EventSink | None = None) -> BuildOutput:
        if job.secrets or job.cache_from:
            raise EngineError("the classic builder has no secret mounts or registry cache; use BuildKit")
        return build_image(
            self.client,
            job.context_dir,
            tag=job.tag,
            buildargs=dict(job.build_args),
            network_mode=job.network_mode,
            dockerfile=job.dockerfile,
            target=job.target,
            on_event=on_event,
        )


def build_image(
    client: DockerClient,
    context_dir: str,
    *,
    tag: str,
    buildargs: dict[str, str] | None = None,
    network_mode: str | None = None,
    dockerfile: str | None = None,
    target: str | None = None,
    on_event: EventSink | None = None,
) -> BuildOutput:
    """Build `context_dir` (up to the stage `target`, default the last) into `tag`.

    Raises EngineError naming the failing step or requirement.
    """
    docker = _docker()
    tail: list[str] = []
    image_id: str | None = None
    kwargs: dict[str, Any] = {
        "path": context_dir,
        "tag": tag,
        "buildargs": dict(buildargs or {}),
        "rm": True,
        "forcerm": True,
        "decode": True,
    }
    if network_mode:
        kwargs["network_mode"] = network_mode
    if dockerfile:
        kwargs["dockerfile"] = dockerfile
    if target:
        kwargs["target"] = target
    scrub = scrubber(buildargs)
    try:
        for event in client.api.build(**kwargs):
            if "error" in event or "errorDetail" in event:
                detail = event.get("errorDetail") or {}
                message = str(detail.get("message") or event.get("error") or "build failed")
                raise EngineError(build_failure(scrub(message), tail))
            text = event.get("stream")
            if text:
                for line in scrub(text).splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    del tail[:-200]
                    if on_event:
                        on_event("step" if line.startswith("Step ") else "log", line)
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
    except EngineError:
        raise
    except docker.errors.DockerException as error:
        raise EngineError(build_failure(scrub(_short(error)), tail)) from None
    except Exception as error:  # requests/urllib3 connection errors mid-stream
        raise EngineError(f"the Docker engine failed during the build: {scrub(_short(error))}") from None
    if image_id is None:
        try:
            image_id = str(client.images.get(tag).id)
        except Exception as error:
            raise EngineError(f"the build finished but image {tag} is missing: {_short(error)}") from error
    return BuildOutput(image_id=image_id, log_tail=tail)


_SECRET_ARG_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY", "INDEX_URL", "CREDENTIAL", "AUTH")


def scrubber(buildargs: Mapping[str, str] | None) -> Callable[[str], str]:
    """Replace the values of secret build args (tokens, index URLs and their passwords) by
    ``<NAME>`` in build output and errors: a failing step may echo them."""
    from urllib.parse import urlsplit

    found: dict[str, str] = {}
    for name, value in (buildargs or {}).items():
        if not value or not any(word in name.upper() for word in _SECRET_ARG_WORDS):
            continue
        for part in {value, *value.split()}:
            if len(part) >= 4:
                found[part] = name
            try:
                password = urlsplit(part).password if "://" in part else None
            except ValueError:
                password = None
            if password and len(password) >= 4:
                found[password] = name
    ordered = sorted(found.items(), key=lambda item: -len(item[0]))

    def scrub(text: str) -> str:
        for secret, name in ordered:
            text = text.replace(secret, f"<{name}>")
        return text

    return scrub


def build_failure(message: str, tail: list[str]) -> str:
    """One line: which requirement failed and pip's own words, or the engine's error."""
    text = message.strip().splitlines()[0] if message.strip() else "build failed"
    if "no space left on device" in message.lower() or any("no space left on device" in t for t in tail):
        return f"build failed: out of disk space ({text})"
    steps = [line for line in tail if line.startswith("Step ")]
    if steps and tail[-1] == steps[-1] and " : FROM " in steps[-1]:
        base = steps[-1].split(" : FROM ", 1)[1].split()[0]
        return f"base image {base} is not in the engine and could not be pulled: {text}"
    pip_errors = [line for line in tail if line.startswith("ERROR:")]
    for line in reversed(tail):
        for pattern in _PIP_FAILURE_PATTERNS:
            match = re.search(pattern, line)
            if match:
                requirement = match.groupdict().get("req")
                detail = pip_errors[-1] if pip_errors else line
                if requirement:
                    return f"installing requirement {requirement.strip()} failed: {detail.strip()}"
                return f"installing requirements failed: {detail.strip()}"
    if pip_errors:
        return f"build failed: {pip_errors[-1].strip()}"
    return f"build failed: {text}"


@dataclass
class PushOutput:
    digest: str | None
    size: int | None
    layer_status: dict[str, str]  # short diff id (12 hex) -> "pushed" | "exists" | "mounted"


def push_image(
    client: DockerClient,
    repository: str,
    tag: str,
    *,
    auth_config: dict[str, str] | None = None,
    on_event: EventSink | None = None,
) -> PushOutput:
    """Push `repository:tag`; raises RegistryError (never leaves the engine's message unread)."""
    status: dict[str, str] = {}
    digest: str | None = None
    size: int | None = None
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
        for event in stream:
            if "error" in event or "errorDetail" in event:
                detail = event.get("errorDetail") or {}
                message = str(detail.get("message") or event.get("error"))
                raise RegistryError(_push_failure(repository, message))
            layer = event.get("id")
            text = str(event.get("status") or "")
            if layer and text:
                if text == "Pushed":
                    status[layer] = "pushed"
                elif text == "Layer already exists":
                    status[layer] = "exists"
                elif text.startswith("Mounted from"):
                    status[layer] = "mounted"
                if on_event and layer in status and text != "Preparing":
                    on_event("push", f"{layer}: {text}")
                elif on_event and text == "Pushing":
                    _report_bytes(on_event, layer, event.get("progressDetail") or {})
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
                size = int(aux.get("Size") or 0)
    except RegistryError:
        raise
    except Exception as error:
        raise RegistryError(_push_failure(repository, _short(error))) from error
    return PushOutput(digest=digest, size=size, layer_status=status)


def _report_bytes(on_event: EventSink, layer: str, detail: dict[str, Any]) -> None:
    """Upload progress of one layer: byte counts only go to a `Reporter` (a plain sink takes two strings)."""
    current, total = detail.get("current"), detail.get("total")
    if isinstance(on_event, Reporter) and isinstance(current, int) and isinstance(total, int) and total > 0:
        # the engine counts compressed bytes sent against the layer's uncompressed size
        on_event("push", f"{layer}: Pushing", min(current, total), total, "bytes")


def _push_failure(repository: str, message: str) -> str:
    lowered = message.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return f"the registry refused authentication for {repository}"
    if "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
        return f"the registry for {repository} is not reachable: {message.splitlines()[0]}"
    return f"pushing {repository} failed: {message.splitlines()[0] if message else 'unknown error'}"


def load_image(client: DockerClient, archive: str | os.PathLike[str]) -> None:
    """`docker load` an image archive; raises EngineError with the engine's reason."""
    try:
        with open(archive, "rb") as data:
            failure = _first_error(client.api.load_image(data))
    except Exception as error:
        raise EngineError(f"loading the image failed: {_short(error)}") from error
    if failure is not None:
        raise EngineError(f"loading the image failed: {failure}")


@dataclass
class SavedLayers:
    """Layers of an image as `docker save` gives them: uncompressed, each named by its diff id."""

    config: bytes  # the image config, exactly (its sha256 is the image id)
    files: dict[str, str] = field(default_factory=dict)  # diff id -> a file holding the layer tar
    # the archive's folder of each layer read -> its diff id. The engine names the folder by a
    # digest of the layer's chain (its parents and itself), so a name seen once means the same
    # layer in every later `docker save` of an image built on it (`known` of save_layers)
    folders: dict[str, str] = field(default_factory=dict)


class LayerSink(Protocol):
    """Where one layer's bytes go while `docker save` streams them (its diff id is known only at
    the end): kept (`close`, the path of what was written) or dropped (`discard`)."""

    def write(self, chunk: bytes) -> None: ...

    def close(self) -> str: ...

    def discard(self) -> None: ...


class PlainSink:
    """The layer tar as it comes, in a file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._out = open(path, "wb")

    def write(self, chunk: bytes) -> None:
        self._out.write(chunk)

    def close(self) -> str:
        self._out.close()
        return self._path

    def discard(self) -> None:
        self._out.close()
        os.unlink(self._path)


def save_layers(
    client: DockerClient,
    image_id: str,
    wanted: set[str],
    folder: str | os.PathLike[str],
    on_layer: Callable[[str, str], None] | None = None,
    sink: Callable[[str], LayerSink] = PlainSink,
    known: Callable[[str], str | None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> SavedLayers:
    """The `wanted` layers of an image (by diff id) as files in `folder`, read from `docker save`.

    The engine writes every layer uncompressed (no gzip: that is what makes its push slow); a
    layer's sha256 is its diff id, so the ones not wanted are hashed and dropped as they stream
    by. `on_layer(diff_id, path)` is called as soon as each wanted layer is complete. `sink`
    makes what each layer is written to (a file of the plain tar by default; a push's gzips it
    as it streams).

    `known(folder)` names the diff id of an archive folder an earlier save recorded
    (`SavedLayers.folders`): such a layer, when not wanted, is skipped unread (a base layer of
    hundreds of megabytes is then neither hashed nor compressed), and the stream is closed as
    soon as every wanted layer and the config are in. A wrong record cannot pass: a wanted
    layer still has to hash to its diff id, or the save fails with "lacks layer".

    `on_read(count)`: the bytes of the stream read so far, after each chunk. The first call comes
    only once the engine has written the whole image to a folder of its own (engine 20.10).
    """
    config: bytes | None = None
    saved = SavedLayers(b"")
    chunks = client.api.get_image(image_id, chunk_size=1 << 20)
    try:
        with tarfile.open(fileobj=_StreamReader(chunks, on_read), mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                if config is not None and wanted <= set(saved.files):
                    break  # the rest of the stream holds nothing this save needs
                layer_folder = member.name[: -len("/layer.tar")] if member.name.endswith("/layer.tar") else ""
                recorded = known(layer_folder) if known is not None and layer_folder else None
                if recorded is not None and (recorded not in wanted or recorded in saved.files):
                    continue  # a layer an earlier save named, not wanted: skipped, not read
                source = archive.extractfile(member) if member.isfile() else None
                if source is None:
                    continue
                if layer_folder:
                    diff_id = _read_layer(source, saved, folder, sink, wanted, on_layer)
                    saved.folders[layer_folder] = diff_id
                elif (
                    member.name.endswith(".json")
                    and "/" not in member.name
                    and member.name != "manifest.json"
                ):
                    config = source.read()
    except OSError as error:
        raise EngineError(
            f"reading the layers of {image_id[:19]} failed: {error.strerror or error}"
        ) from None
    except Exception as error:
        raise EngineError(
            f"reading the layers of {image_id[:19]} from the engine failed: {_short(error)}"
        ) from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # an unread rest of the stream: the engine stops sending it
    if config is None or f"sha256:{hashlib.sha256(config).hexdigest()}" != image_id:
        raise EngineError(f"the engine's copy of {image_id[:19]} has no matching image config")
    missing = wanted - set(saved.files)
    if missing:
        raise EngineError(f"the engine's copy of {image_id[:19]} lacks layer {sorted(missing)[0][:19]}")
    saved.config = config
    return saved


def _read_layer(
    source: IO[bytes],
    saved: SavedLayers,
    folder: str | os.PathLike[str],
    sink: Callable[[str], LayerSink],
    wanted: set[str],
    on_layer: Callable[[str, str], None] | None,
) -> str:
    """One layer tar of the stream into a sink, kept when wanted (and new): its diff id."""
    out = sink(os.path.join(folder, f"layer-{len(saved.folders)}-{os.getpid()}.tar"))
    digest = hashlib.sha256()
    try:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    except BaseException:
        out.discard()
        raise
    diff_id = f"sha256:{digest.hexdigest()}"
    if diff_id in wanted and diff_id not in saved.files:
        path = out.close()
        saved.files[diff_id] = path
        if on_layer:
            on_layer(diff_id, path)
    else:
        out.discard()
    return diff_id


class _StreamReader:
    """A file object over an iterator of byte chunks (the engine's `docker save` stream)."""

    def __init__(self, chunks: Iterable[bytes], on_read: Callable[[int], None] | None = None) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self._offset = 0  # read position in _buffer (slicing a megabyte per small read is slow)
        self._on_read = on_read
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted != 0:
            if self._offset >= len(self._buffer):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer, self._offset = chunk, 0
                if self._on_read is not None:
                    self._count += len(chunk)
                    self._on_read(self._count)
            end = len(self._buffer) if wanted < 0 else min(len(self._buffer), self._offset + wanted)
            parts.append(self._buffer[self._offset : end])
            if wanted > 0:
                wanted -= end - self._offset
            self._offset = end
        return b"".join(parts)


def pull_image(
    client: DockerClient, repository: str, tag: str, *, auth_config: dict[str, str] | None = None
) -> None:
    """Pull `repository:tag` into the engine; raises RegistryError."""
    try:
        events = client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
        failure = _first_error(events)
    except Exception as error:
        raise RegistryError(f"pulling {repository}:{tag} failed: {_short(error)}") from error
    if failure is not None:
        raise RegistryError(f"pulling {repository}:{tag} failed: {failure}")


def _first_error(events: Iterable[object] | None) -> str | None:
    """The message of the first error in an engine progress stream (read to its end otherwise)."""
    for event in events or ():
        if isinstance(event, dict) and ("error" in event or "errorDetail" in event):
            detail = event.get("errorDetail") or {}
            return str(detail.get("message") or event.get("error"))
    return None


def tag_image(client: DockerClient, image_id: str, repository: str, tag: str) -> None:
    try:
        client.api.tag(image_id, repository, tag=tag, force=True)
    except Exception as error:
        raise EngineError(f"tagging {repository}:{tag} failed: {_short(error)}") from error


def untag(client: DockerClient, reference: str) -> None:
    """Remove a local tag we created; the image itself stays if other tags use it."""
    try:
        client.api.remove_image(reference, noprune=True)
    except Exception:
        pass


def inspect_image(client: DockerClient, reference: str) -> dict[str, Any] | None:
    docker = _docker()
    try:
        return dict(client.api.inspect_image(reference))
    except docker.errors.ImageNotFound:
        return None
    except Exception as error:
        raise EngineError(f"inspecting {reference} failed: {_short(error)}") from error


def image_digest(client: DockerClient, reference: str) -> str | None:
    """The image's digest as the engine knows it: a repo digest, else the local image id (None: no image).

    The supply-chain record names the base image by it.
    """
    image = inspect_image(client, reference)
    return digest_of(image) if image else None


def digest_of(image: Mapping[str, Any]) -> str | None:
    """`image_digest` of an image the engine inspected already."""
    for entry in image.get("RepoDigests") or []:
        if "@" in str(entry):
            return str(entry).rsplit("@", 1)[1]
    found = image.get("Id")
    return str(found) if found else None


@dataclass(frozen=True)
class LocalImage:
    """An image the engine had when the build looked (the base, inspected once per build)."""

    reference: str
    image_id: str
    digest: str | None  # `image_digest`: what the supply-chain record names it by

    @classmethod
    def of(cls, reference: str, image: Mapping[str, Any]) -> LocalImage:
        return cls(reference, str(image.get("Id") or ""), digest_of(image))


def local_tags(client: DockerClient, repository: str) -> list[str]:
    """Tags of `repository` in the local engine."""
    try:  # the low-level call: images.list() asks the engine once more for every image
        images = client.api.images(name=repository)
    except Exception as error:
        raise EngineError(f"listing local images failed: {_short(error)}") from error
    tags: list[str] = []
    for image in images:
        for reference in image.get("RepoTags") or []:
            repo, _, tag = reference.rpartition(":")
            if repo == repository:
                tags.append(tag)
    return tags


def _short(error: BaseException) -> str:
    """A docker-py/requests exception as one readable line."""
    explanation = getattr(error, "explanation", None)
    text = str(explanation or error).strip() or type(error).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 300 else first[:297] + "..."
