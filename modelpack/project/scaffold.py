"""Create a new model directory from a scaffold (`modelpack init`).

Each scaffold is a folder of Jinja templates under ``templates/init/<type>/``;
files ending in ``.j2`` are rendered (StrictUndefined, so a missing variable is
a bug, not an empty string) and the rest copied. Everything is rendered in
memory first, so a template error never leaves a half-written directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from modelpack.errors import InvalidInputError, RenderError
from modelpack.resources import data_dir, write_text_atomic


@dataclass(frozen=True)
class ScaffoldType:
    model_type_id: str
    summary: str
    concepts: tuple[str, ...] = ()


SCAFFOLDS: dict[str, ScaffoldType] = {
    "generic": ScaffoldType("text-to-text", "text in, text out: unary, streaming and stream-stream methods"),
    "openai": ScaffoldType("text-to-text", "OpenAI-compatible chat model (echo; can forward to vLLM/Ollama)"),
    "visual-classifier": ScaffoldType("visual-classifier", "image classifier", ("cat", "dog")),
    "visual-detector": ScaffoldType("visual-detector", "object detector", ("person", "car")),
    "text-classifier": ScaffoldType("text-classifier", "text classifier", ("positive", "negative")),
    "text-embedder": ScaffoldType("text-embedder", "text embedder"),
}

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class InitResult:
    directory: Path
    type: str
    files: tuple[str, ...]  # relative paths, in creation order

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "type": self.type, "files": list(self.files)}


def default_model_id(path: Path) -> str:
    """A valid model id from the directory name: ``My Model.v2`` -> ``my-model-v2``."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", path.resolve().name.lower()).strip("-_")
    return text or "my-model"


def class_name_for(model_id: str) -> str:
    """``my-model`` -> ``MyModel``; always a valid Python class name."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", model_id) if part)
    if not name or not name[0].isalpha():
        name = "Model" + name
    return name


def _template_files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    files: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        relative = f"{prefix}{entry.name}"
        if entry.is_dir():
            files += _template_files(entry, relative + "/")
        else:
            files.append((relative, entry))
    return files


def render_scaffold(model_type: str, model_id: str) -> dict[str, str]:
    """The files of a scaffold (relative path -> text), rendered in memory."""
    import jinja2

    spec = SCAFFOLDS[model_type]
    folder = data_dir("templates").joinpath("init", model_type)
    if not folder.is_dir():
        raise RenderError(f"scaffold templates for {model_type!r} are missing from this installation")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    context = {
        "scaffold_type": model_type,
        "model_id": model_id,
        "model_type_id": spec.model_type_id,
        "class_name": class_name_for(model_id),
        "concepts": list(spec.concepts),
    }
    rendered: dict[str, str] = {}
    for relative, entry in _template_files(folder):
        text = entry.read_text(encoding="utf-8")
        if relative.endswith(".j2"):
            try:
                text = env.from_string(text).render(**context)
            except jinja2.TemplateError as error:
                raise RenderError(f"scaffold template {model_type}/{relative}: {error}") from None
            relative = relative[: -len(".j2")]
        rendered[relative] = text
    return rendered


def init_model_dir(
    path: str | os.PathLike[str], model_type: str, *, model_id: str | None = None, force: bool = False
) -> InitResult:
    """Create the model directory ``path`` from the ``model_type`` scaffold.

    Refuses a non-empty directory unless ``force`` (then only the scaffold's own
    files are overwritten; other files are left alone).
    """
    directory = Path(path)
    if model_type not in SCAFFOLDS:
        raise InvalidInputError(f"unknown scaffold type {model_type!r}; choose one of {', '.join(SCAFFOLDS)}")
    if model_id is None:
        model_id = default_model_id(directory)
    elif not _MODEL_ID.match(model_id):
        raise InvalidInputError(
            f"invalid model id {model_id!r}: use letters, digits, '-' and '_', starting with a letter or digit"
        )
    if directory.exists() and not directory.is_dir():
        raise InvalidInputError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InvalidInputError(f"{directory} is not empty; use --force to write the scaffold into it anyway")

    files = render_scaffold(model_type, model_id)

    created_root = not directory.exists()
    written: list[Path] = []
    try:
        for relative, text in files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            existed = target.exists()
            write_text_atomic(target, text, mode=None)  # a new file's usual mode, not 0600
            if not existed:
                written.append(target)
    except OSError as error:
        for target in reversed(written):  # leave nothing half-written behind
            target.unlink(missing_ok=True)
        if created_root:
            for folder in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
                _rmdir_quietly(folder)
            _rmdir_quietly(directory)
        raise InvalidInputError(
            f"cannot write the scaffold into {directory}: {error.strerror or error}"
        ) from None
    return InitResult(directory=directory, type=model_type, files=tuple(files))


def _rmdir_quietly(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
