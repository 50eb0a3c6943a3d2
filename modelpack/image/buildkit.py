"""The BuildKit builder, and the choice between it and the classic one.

docker-py's build API has no BuildKit session, so no secret mounts: BuildKit builds go through
a docker CLI that can drive the engine's BuildKit, `DOCKER_BUILDKIT=1 docker build`. A CLI
older than 23.0 has BuildKit built in; a newer one needs the buildx plugin (without it, it
refuses). `find_cli` picks one explicitly, so a newer `docker` without buildx earlier on PATH
(e.g. /usr/local/bin/docker) is passed over for Debian's /usr/bin/docker. The CLI talks to the
engine named by DOCKER_HOST (a remote builder host) or its context, like modelpack's own client.

Output is read in `--progress plain` form: `#N [stage i/n] INSTRUCTION`, `#N CACHED`,
`#N DONE 1.2s`, `#N 0.41 <output>`; steps and their cache hits go to the progress stream.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack import scratch
from modelpack.errors import EngineError, InvalidInputError
from modelpack.image.engine import BuildOutput, EngineBuild, EventSink, build_failure, scrubber, version_info
from modelpack.pipeline.settings import BUILDERS, BUILDKIT, CLASSIC
from modelpack.resources import cache_dir, read_cache, write_cache

if TYPE_CHECKING:
    from docker import DockerClient

CLI_VARIABLE = "MODELPACK_DOCKER_CLI"  # a docker CLI to use for BuildKit builds
_FALLBACK_CLIS = ("/usr/bin/docker",)  # Debian's docker.io: BuildKit built in (20.10)
_MIN_API = (1, 39)  # Docker 18.09: the first engine with BuildKit
_VERTEX = re.compile(r"^#(?P<id>\d+) (?P<rest>.*)$")
_TIMED = re.compile(r"^(?P<time>\d+\.\d+) (?P<text>.*)$")
# a stage's base resolved in a registry: `[deps 1/4] FROM 127.0.0.1:5000/x/base:1@sha256:...`
_PULLED_FROM = re.compile(r"\] FROM (?P<ref>\S+?)@(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class DockerCli:
    """A docker CLI that can run BuildKit builds on the engine."""

    path: str
    version: str
    buildx: bool  # the buildx plugin answers `docker build` (CLI 23+); else the built-in BuildKit


@dataclass(frozen=True)
class BuilderChoice:
    """Which builder a build uses and why (shown in the build output and in --json)."""

    name: str  # "buildkit" or "classic"
    reason: str
    cli: DockerCli | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "cli": self.cli.path if self.cli else None}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _cli_version(path: str) -> str | None:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version (\S+?),?\s", done.stdout + " ")
    return match.group(1) if done.returncode == 0 and match else None


def _has_buildx(path: str) -> bool:
    try:
        done = subprocess.run(
            [path, "buildx", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=4)
def find_cli(explicit: str | None = None, search_path: str | None = None) -> DockerCli | None:
    """The first docker CLI that can run a BuildKit build: `explicit` ($MODELPACK_DOCKER_CLI),
    then each `docker` on PATH, then /usr/bin/docker. None when there is none.

    Asking a CLI its version costs a second or more on a busy machine, so the answer is kept
    (`docker-cli.json` in modelpack's cache) for as long as the candidate files are unchanged.
    """
    candidates: list[str] = [explicit] if explicit else []
    for folder in (search_path if search_path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        found = shutil.which("docker", path=folder) if folder else None
        if found:
            candidates.append(found)
    candidates.extend(_FALLBACK_CLIS)
    key = _candidates_key(candidates)
    record = read_cache(cache_dir("docker-cli.json"))
    if isinstance(record, dict) and record.get("key") == key:
        found_cli = record.get("cli")
        if found_cli is None:
            return None
        if isinstance(found_cli, dict):
            return DockerCli(str(found_cli["path"]), str(found_cli["version"]), bool(found_cli["buildx"]))
    chosen = _probe(candidates)
    write_cache(cache_dir("docker-cli.json"), {"key": key, "cli": chosen.__dict__ if chosen else None})
    return chosen


def configured_cli() -> DockerCli | None:
    """`find_cli` for the client $MODELPACK_DOCKER_CLI names, else the ones found on PATH."""
    return find_cli(os.environ.get(CLI_VARIABLE, "").strip() or None)


def _candidates_key(candidates: list[str]) -> list[list[object]]:
    """What the answer depends on: each candidate file, and the buildx plugin folders."""
    plugins = [os.path.expanduser("~/.docker/cli-plugins"), "/usr/local/lib/docker/cli-plugins",
               "/usr/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins"]  # fmt: skip
    key: list[list[object]] = []
    for path in [*candidates, *plugins]:
        try:
            info = os.stat(path)
            key.append([path, os.path.realpath(path), info.st_size, info.st_mtime_ns])
        except OSError:
            key.append([path, None])
    return key


def _probe(candidates: list[str]) -> DockerCli | None:
    seen: set[str] = set()
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen or not os.access(path, os.X_OK):
            continue
        seen.add(real)
        version = _cli_version(path)
        if version is None:
            continue
        if _version_tuple(version) < (23,):
            return DockerCli(path, version, buildx=False)
        if _has_buildx(path):
            return DockerCli(path, version, buildx=True)
    return None


def check_builder(requested: str | None) -> str | None:
    """`--builder` checked: auto (None), buildkit or classic."""
    if requested in (None, "", "auto"):
        return None
    if requested not in BUILDERS:
        raise InvalidInputError(f"--builder must be auto, {BUILDKIT} or {CLASSIC}, not {requested!r}")
    return requested


def choose_builder(requested: str | None, client: DockerClient) -> BuilderChoice:
    """BuildKit where the engine and a CLI support it, else the classic builder; `requested`
    (buildkit or classic) overrides, and a BuildKit request that cannot be met fails."""
    requested = check_builder(requested)
    if requested == CLASSIC:
        return BuilderChoice(CLASSIC, "--builder classic")
    remote = _remote_builder_problem()
    if remote:
        raise EngineError(remote)
    if requested is None and os.environ.get("DOCKER_BUILDKIT", "").strip() == "0":
        return BuilderChoice(CLASSIC, "DOCKER_BUILDKIT=0")
    problem = _engine_problem(client)
    cli = None if problem else configured_cli()
    if cli is None and not problem:
        problem = "no docker CLI that runs BuildKit builds (Debian's docker.io, or docker with buildx)"
    if problem:
        if requested == BUILDKIT:
            raise EngineError(f"--builder buildkit: {problem}")
        return BuilderChoice(CLASSIC, f"BuildKit unavailable: {problem}")
    assert cli is not None
    how = "buildx" if cli.buildx else "built-in BuildKit"
    why = "--builder buildkit" if requested == BUILDKIT else "default"
    return BuilderChoice(BUILDKIT, f"{why}: the engine runs BuildKit ({cli.path} {cli.version}, {how})", cli)


def _remote_builder_problem() -> str | None:
    """Why a remote BuildKit the environment asks for cannot be used, in one line (None: it can,
    or none is asked for). Building on the local engine instead would surprise whoever set it.

    Builds go through the docker CLI: BUILDKIT_HOST (a bare buildkitd, driven by `buildctl`) is
    reached through a buildx builder for it, which BUILDX_BUILDER names; both need buildx.
    """
    host = os.environ.get("BUILDKIT_HOST", "").strip()
    named = os.environ.get("BUILDX_BUILDER", "").strip()
    if not host and not named:
        return None
    cli = configured_cli()
    has_buildx = cli is not None and cli.buildx
    if host:
        missing = "" if has_buildx else " (this machine's docker CLI has no buildx plugin: install docker-buildx)"
        return (
            "BUILDKIT_HOST is set, but modelpack builds through the docker CLI: create a buildx builder "
            f"for that daemon (docker buildx create --driver remote ...) and name it in BUILDX_BUILDER{missing}"
        )
    if not has_buildx:
        where = cli.path if cli else "no docker CLI found"
        return (
            f"BUILDX_BUILDER names a buildx builder, but {where} has no buildx plugin "
            "(install docker-buildx, or unset BUILDX_BUILDER to build on the engine DOCKER_HOST names)"
        )
    return None


def _engine_problem(client: DockerClient) -> str | None:
    try:
        info = version_info(client)
    except Exception as error:
        return f"the engine did not tell its version ({type(error).__name__})"
    if str(info.get("Os", "linux")).lower() != "linux":
        return f"the engine runs {info.get('Os')} containers"
    if _version_tuple(str(info.get("ApiVersion", "0"))) < _MIN_API:
        return f"engine API {info.get('ApiVersion')} is older than 1.39 (Docker 18.09)"
    return None


class BuildKitBuilder:
    """Builds with the engine's BuildKit through `cli`: secrets as secret mounts, cache mounts,
    inline cache export and import."""

    name = BUILDKIT

    def __init__(self, cli: DockerCli) -> None:
        self.cli = cli

    def build(self, job: EngineBuild, on_event: EventSink | None = None) -> BuildOutput:
        values = {secret.id: secret.value for secret in job.secrets if secret.value}
        scrub = scrubber({**job.build_args, **{_as_secret_name(k): v for k, v in values.items()}})
        with scratch.folder("modelpack-buildkit-", _private_tmp()) as tmp:
            work = Path(tmp)
            os.chmod(work, 0o700)
            command = self.command(job, work)
            env = {**os.environ, "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}
            env.update(job.build_args)  # `--build-arg NAME` takes the value from here, not argv
            reader = _ProgressReader(scrub, on_event)
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                    text=True,
                    errors="replace",
                )
            except OSError as error:
                raise EngineError(f"cannot run {self.cli.path}: {error.strerror or error}") from None
            try:
                assert process.stderr is not None
                for line in process.stderr:
                    reader.feed(line.rstrip("\n"))
                code = process.wait()
            except BaseException:
                process.kill()
                process.wait()
                raise
            if code != 0:
                raise EngineError(reader.failure())
            try:
                image_id = (work / "iid").read_text(encoding="utf-8").strip()
            except OSError:
                image_id = ""
        if not image_id:
            raise EngineError(f"the build finished but wrote no image id for {job.tag}")
        return BuildOutput(image_id=image_id, log_tail=reader.output, pulled=dict(reader.pulled))

    def command(self, job: EngineBuild, work: Path) -> list[str]:
        """The CLI's argument list; secret values go to files in `work` (mode 0600), never argv."""
        command = [self.cli.path, "build", "--progress", "plain", "--tag", job.tag]
        command += ["--iidfile", str(work / "iid")]
        if job.dockerfile:
            command += ["--file", str(Path(job.context_dir) / job.dockerfile)]
        if job.target:
            command += ["--target", job.target]
        if job.network_mode:
            command += ["--network", job.network_mode]
        for name in sorted(job.build_args):
            command += ["--build-arg", name]
        for index, secret in enumerate(job.secrets):
            source = secret.path
            if source is None:
                if not secret.value:
                    continue
                source = work / f"secret-{index}"
                descriptor = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(secret.value)
            command += ["--secret", f"id={secret.id},src={source}"]
        if job.inline_cache:
            command += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        for reference in job.cache_from:
            command += ["--cache-from", reference]
        command.append(str(job.context_dir))
        return command


def _as_secret_name(secret_id: str) -> str:
    """The scrubber hides values whose names look secret; a secret's id always is one."""
    return secret_id if "SECRET" in secret_id.upper() else f"{secret_id}_SECRET"


def _private_tmp() -> str | None:
    """Secret files go to memory (/dev/shm) when it is there, never to a disk if avoidable."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class _ProgressReader:
    """Turns `--progress plain` lines into step/log events and keeps what a failure needs."""

    def __init__(self, scrub: Callable[[str], str], on_event: EventSink | None) -> None:
        self.scrub, self.on_event = scrub, on_event
        self.names: dict[str, str] = {}
        self.output: list[str] = []  # step output without the "#N 0.41" prefix, for error patterns
        self.errors: list[str] = []
        self.pulled: dict[str, str] = {}  # base references BuildKit resolved in a registry -> digest

    def _emit(self, kind: str, message: str) -> None:
        if self.on_event:
            self.on_event(kind, message)

    def feed(self, raw: str) -> None:
        line = self.scrub(raw).rstrip()
        if not line:
            return
        match = _VERTEX.match(line)
        if not match:
            self.errors.append(line)
            self._emit("log", line)
            return
        vertex, rest = match.group("id"), match.group("rest")
        name = self.names.get(vertex)
        if name is None:
            if rest.startswith("sha256:"):
                return
            self.names[vertex] = rest
            pulled = _PULLED_FROM.search(rest)
            if pulled:
                self.pulled[pulled.group("ref")] = pulled.group("digest")
            if rest.startswith("[") and not rest.startswith("[internal]"):
                self._emit("step", rest)
            return
        if rest.startswith("sha256:"):
            return
        step = name.startswith("[") and not name.startswith("[internal]")
        if rest == "CACHED":
            if step:
                self._emit("step", f"{name} CACHED")
            return
        if rest.startswith("DONE ") or rest.startswith("ERROR"):
            if rest.startswith("ERROR"):
                self.errors.append(f"{name}: {rest}")
            if step:
                self._emit("step", f"{name} {rest}")
            return
        timed = _TIMED.match(rest)
        text = timed.group("text") if timed else rest
        self.output.append(text)
        del self.output[:-200]
        self._emit("log", text)

    def failure(self) -> str:
        """One line: the failing requirement or step, in the classic builder's words where they apply."""
        message = next(
            (e for e in reversed(self.errors) if "failed to solve" in e or "error" in e.lower()), ""
        )
        message = message or (self.errors[-1] if self.errors else "build failed")
        loading = [n for n in self.names.values() if n.startswith("[internal] load metadata for ")]
        if "failed to create LLB definition" in message or "pull access denied" in message:
            if loading:
                base = loading[-1].rsplit(" ", 1)[-1]
                return (
                    f"base image {base} is not in the engine and could not be pulled: {_last_part(message)}"
                )
        return build_failure(_last_part(message), self.output)


def _last_part(message: str) -> str:
    """BuildKit nests its errors (`failed to solve with frontend ...: failed to ...: <reason>`)."""
    text = message.removeprefix("error: ").strip()
    return text if len(text) <= 300 else text[:297] + "..."


__all__ = [
    "CLI_VARIABLE",
    "BuildKitBuilder",
    "BuilderChoice",
    "DockerCli",
    "check_builder",
    "choose_builder",
    "configured_cli",
    "find_cli",
]
