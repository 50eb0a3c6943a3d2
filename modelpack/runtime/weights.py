"""Checkpoints fetched when the model starts (``checkpoints.when: runtime``).

The runner fetches before ``load_model``; model code written for the Clarifai SDK asks
again through ``ModelBuilder(...).download_checkpoints(stage="runtime")`` (the compat
shim) and gets the same folder without a second download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from modelpack.project import checkpoints
from modelpack.project.model_dir import CheckpointSpec

log = logging.getLogger("modelpack.runtime")
_fetched: dict[tuple[Path, str], Path] = {}  # (model dir, config.yaml text) -> folder


def fetch_runtime_checkpoint(model_dir: Path) -> Path | None:
    """``checkpoints.when: runtime``: download the checkpoint before the model loads.

    Files go to the cache ``$MODELPACK_CHECKPOINT_CACHE`` (a volume: a restart downloads
    nothing) and are placed in ``$MODELPACK_CHECKPOINTS`` (set in the image), where model.py
    reads them; without it (a local run) that variable is pointed at the cache snapshot.
    The token comes from the container's ``HF_TOKEN``.
    """
    import yaml

    model_dir = Path(model_dir).resolve()
    path = model_dir / "config.yaml"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if (model_dir, text) in _fetched:
        return _fetched[(model_dir, text)]
    data = yaml.safe_load(text) or {}
    section = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(section, dict) or section.get("when", "runtime") != "runtime":
        return None
    if not isinstance(section.get("repo_id"), str):
        return None

    def patterns(value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    token = section.get("hf_token")
    spec = CheckpointSpec(
        type=str(section.get("type", "huggingface")),
        repo_id=section["repo_id"],
        revision=str(section.get("revision") or "main"),
        when="runtime",
        allowed_file_patterns=patterns(section.get("allowed_file_patterns")),
        ignore_file_patterns=patterns(section.get("ignore_file_patterns")),
        hf_token=token.strip() if isinstance(token, str) and token.strip() else None,
    )
    dest = os.environ.get("MODELPACK_CHECKPOINTS")
    result = checkpoints.fetch_at_startup(spec, dest=dest or None, log=log)
    if not dest:  # a local run: leave the model directory alone (a build would copy the weights)
        os.environ["MODELPACK_CHECKPOINTS"] = str(result.local_dir)
    _fetched[(model_dir, text)] = result.local_dir
    return result.local_dir


class ModelBuilder:
    """The part of the SDK's ``ModelBuilder`` model code calls at run time: checkpoint downloads."""

    def __init__(self, folder: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        self.folder = Path(folder)

    def download_checkpoints(
        self, stage: str = "runtime", checkpoint_path_override: str | None = None
    ) -> str:
        """The folder holding the checkpoint: fetched now for ``runtime``, else the image's copy."""
        if stage == "runtime":
            fetched = fetch_runtime_checkpoint(self.folder)
            if fetched is not None:
                return str(fetched)
        default = self.folder / "1" / "checkpoints"
        return checkpoint_path_override or os.environ.get("MODELPACK_CHECKPOINTS") or str(default)
