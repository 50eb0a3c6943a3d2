"""Typed view of a loaded model directory: what every later pipeline stage receives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from modelpack.errors import Diagnostic

Accelerator = Literal["cpu", "gpu"]
CheckpointWhen = Literal["runtime", "build", "upload"]

DEFAULT_PYTHON_VERSION = "3.12"
DEFAULT_APP_ID = "main"
DEFAULT_MODEL_TYPE = "any-to-any"


# model types whose outputs are concepts (labels): they need them, from config.yaml or a checkpoint
CONCEPT_MODEL_TYPES = frozenset(
    {"visual-classifier", "visual-detector", "visual-segmenter", "visual-keypointer", "text-classifier"}
)

@dataclass(frozen=True)
class ModelInfo:
    id: str
    user_id: str | None = None
    app_id: str = DEFAULT_APP_ID
    model_type_id: str = DEFAULT_MODEL_TYPE


@dataclass(frozen=True)
class BuildInfo:
    python_version: str = DEFAULT_PYTHON_VERSION
    image: str | None = None  # `build_info.image` or `build_info.base_image`: a ready base image
    cuda_version: str | None = None
    node_version: str | None = None  # Node.js in the image (for an npx mcp_server)
    extra: dict[str, Any] = field(default_factory=dict)  # other keys, reported


@dataclass(frozen=True)
class ComputeRequirements:
    """The hardware a model needs, from `inference_compute_info` or the `compute` block."""

    accelerator: Accelerator = "cpu"
    num_accelerators: int = 0
    accelerator_types: tuple[str, ...] = ()  # patterns such as "NVIDIA-*"
    accelerator_memory: str | None = None
    cpu_limit: str | None = None
    cpu_requests: str = "500m"
    cpu_memory: str | None = None
    cpu_memory_requests: str = "500Mi"
    instance: str | None = None
    cloud: str | None = None


@dataclass(frozen=True)
class CheckpointSpec:
    type: str
    repo_id: str
    revision: str = "main"
    when: CheckpointWhen = "runtime"
    allowed_file_patterns: tuple[str, ...] = ()
    ignore_file_patterns: tuple[str, ...] = ()
    hf_token: str | None = field(default=None, repr=False)  # never printed or stored


@dataclass(frozen=True)
class Concept:
    id: str
    name: str


@dataclass(frozen=True)
class SecretSpec:
    id: str
    env_var: str
    type: str = "env"
    description: str = ""


@dataclass(frozen=True)
class MCPServerSpec:
    """``mcp_server``: the stdio MCP server a StdioMCPModelClass starts."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def npx_package(self) -> str | None:
        """The package ``npx [-y] PACKAGE ...`` runs (installed at build time), or None."""
        if self.command.rsplit("/", 1)[-1] != "npx":
            return None
        return next((a for a in self.args if not a.startswith("-")), None)


@dataclass(frozen=True)
class ModelConfig:
    model: ModelInfo
    build_info: BuildInfo
    compute: ComputeRequirements
    checkpoints: CheckpointSpec | None = None
    concepts: tuple[Concept, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    num_threads: int | None = None
    mcp_server: MCPServerSpec | None = None
    extra_sections: tuple[str, ...] = ()  # unknown top-level sections, accepted with a warning
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RequirementLine:
    """One logical line of requirements.txt (continuations joined)."""

    line: int  # 1-based line where it starts
    text: str  # the line without comment
    name: str | None  # canonical project name; None for option lines (-r, --index-url, ...)
    specifier: str = ""  # e.g. ">=2.6,<2.8"
    extras: tuple[str, ...] = ()
    marker: str | None = None
    url: str | None = None
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelDir:
    """A validated model directory. Built by `modelpack.load`."""

    root: Path
    config: ModelConfig
    requirements: tuple[RequirementLine, ...]
    warnings: tuple[Diagnostic, ...] = ()

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def requirements_path(self) -> Path:
        return self.root / "requirements.txt"


# What every library function that takes a model directory accepts: its path, or the loaded view.
ModelDirLike: TypeAlias = "str | os.PathLike[str] | ModelDir"


def model_dir_root(model_dir: ModelDirLike) -> Path:
    """The directory a path or a loaded ModelDir names; a TypeError names the accepted types."""
    if isinstance(model_dir, ModelDir):
        return model_dir.root
    if isinstance(model_dir, (str, os.PathLike)):
        return Path(model_dir)
    raise TypeError(
        "expected a model directory: a path (str or os.PathLike) or a loaded modelpack ModelDir, "
        f"not {type(model_dir).__name__}"
    )


@dataclass(frozen=True)
class ValidationReport:
    """Result of `modelpack.validate`: same shape as `modelpack validate --json`."""

    valid: bool
    errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [d.to_dict() for d in self.errors],
            "warnings": [d.to_dict() for d in self.warnings],
        }
