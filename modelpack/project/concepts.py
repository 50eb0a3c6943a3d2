"""Which concepts (labels) a classifier-like model uses, and where they come from.

Concepts in config.yaml win. Otherwise, for the model types that need them, they are
read from the checkpoint's ``config.json`` ``id2label`` (ids and names in numeric id
order): from the fetched files when they are at hand, else by downloading only
``config.json`` from the hub. When neither works, the error asks for concepts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelpack.errors import ConfigError, Diagnostic, HubError
from modelpack.project.checkpoints import hub_cache_dir, hub_endpoint, hub_failure, resolve_token
from modelpack.project.config import as_model_dir
from modelpack.project.model_dir import CONCEPT_MODEL_TYPES, Concept, ModelConfig, ModelDirLike

ConceptSource = Literal["config", "checkpoint", "none"]
_ASK = "add a `concepts:` section to config.yaml (e.g. `concepts: [{id: cat, name: cat}]`)"


@dataclass(frozen=True)
class ConceptsResult:
    source: ConceptSource
    concepts: tuple[Concept, ...]
    origin: str | None = None  # "config.yaml", or "repo@commit:config.json" for the checkpoint
    diagnostics: tuple[Diagnostic, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "origin": self.origin,
            "concepts": [{"id": c.id, "name": c.name} for c in self.concepts],
            "warnings": [d.format() for d in self.diagnostics if d.severity == "warning"],
        }


def normalize_concepts(
    pairs: Sequence[tuple[Any, Any]], file: str, path: str = "id2label"
) -> tuple[tuple[Concept, ...], list[Diagnostic]]:
    """Normalize (id, name) pairs and report problems.

    Ids become trimmed strings and names have their whitespace collapsed. Duplicate ids
    and empty names are errors; names that differ only by spacing or case are warnings
    (real label sets, e.g. ImageNet's, contain such repeats; config concepts can override).
    """
    concepts: list[Concept] = []
    problems: list[Diagnostic] = []
    seen_ids: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    for raw_id, raw_name in pairs:
        concept_id = str(raw_id).strip()
        where = f"{path}.{concept_id or repr(raw_id)}"
        if not concept_id:
            problems.append(Diagnostic(file, None, None, where, "concept id is empty"))
            continue
        if concept_id in seen_ids:
            problems.append(
                Diagnostic(
                    file,
                    None,
                    None,
                    where,
                    f"duplicate concept id {concept_id!r} (also {seen_ids[concept_id]})",
                )
            )
            continue
        name = " ".join(str(raw_name).split()) if raw_name is not None else ""
        if not name:
            problems.append(Diagnostic(file, None, None, where, f"concept {concept_id!r} has an empty name"))
            continue
        folded = name.lower()
        if folded in seen_names:
            problems.append(
                Diagnostic(
                    file,
                    None,
                    None,
                    where,
                    f"concept name {raw_name!r} differs from {seen_names[folded]} only by spacing or case",
                    "warning",
                )
            )
        seen_ids[concept_id] = where
        seen_names.setdefault(folded, where)
        concepts.append(Concept(id=concept_id, name=name))
    return tuple(concepts), problems


def concepts_from_id2label(
    config_json: Mapping[str, Any], file: str = "config.json"
) -> tuple[tuple[Concept, ...], list[Diagnostic]]:
    """Concepts from a transformers ``config.json``: ``id2label`` in numeric id order."""
    id2label = config_json.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        raise ConfigError(f"{file} has no id2label to infer concepts from; {_ASK}")
    keyed: list[tuple[int, Any, Any]] = []
    for key, name in id2label.items():
        try:
            keyed.append((int(str(key).strip()), key, name))
        except ValueError:
            raise ConfigError(
                f"{file}: id2label key {key!r} is not a number; cannot order concepts; {_ASK}"
            ) from None
    keyed.sort(key=lambda item: item[0])
    concepts, problems = normalize_concepts([(str(n), name) for n, _, name in keyed], file)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(f"{file}: the checkpoint's id2label is not usable as concepts; {_ASK}", errors)
    return concepts, problems


def _read_config_json(path: Path, origin: str) -> tuple[tuple[Concept, ...], list[Diagnostic]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{origin}: cannot read it as JSON ({error}); {_ASK}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} is not a JSON object; {_ASK}")
    return concepts_from_id2label(data, origin)


def infer_concepts(
    config: ModelConfig | ModelDirLike,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    online: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ConceptsResult:
    """The concepts a model will use and their source.

    ``checkpoint_dir``: the fetched checkpoint (upload/build time); its ``config.json``
    is read. Without it (or when it lacks config.json) and ``online``, only
    ``config.json`` is downloaded from the hub at the configured revision. ``config`` is the
    model directory (a path or a loaded ModelDir) or its loaded config.
    """
    if not isinstance(config, ModelConfig):
        config = as_model_dir(config).config
    if config.concepts:
        return ConceptsResult("config", tuple(config.concepts), "config.yaml")
    model_type = config.model.model_type_id
    spec = config.checkpoints
    if model_type not in CONCEPT_MODEL_TYPES or spec is None:
        return ConceptsResult("none", ())
    if checkpoint_dir is not None:
        local = Path(checkpoint_dir) / "config.json"
        if local.is_file():
            concepts, problems = _read_config_json(local, f"{spec.repo_id}:config.json")
            return ConceptsResult("checkpoint", concepts, f"{spec.repo_id}:config.json", tuple(problems))
    if not online:
        raise ConfigError(f"a {model_type} needs concepts and the hub is not to be contacted; {_ASK}")
    path, commit = _download_config_json(config, token=token, endpoint=endpoint, cache_dir=cache_dir)
    origin = f"{spec.repo_id}@{commit}:config.json" if commit else f"{spec.repo_id}:config.json"
    concepts, problems = _read_config_json(path, origin)
    return ConceptsResult("checkpoint", concepts, origin, tuple(problems))


def _download_config_json(
    config: ModelConfig,
    *,
    token: str | None,
    endpoint: str | None,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[Path, str | None]:
    """Fetch only config.json (into the HF cache); returns its path and the commit it came from."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as hf

    spec = config.checkpoints
    assert spec is not None
    url = hub_endpoint(endpoint)
    token = token or resolve_token(spec)
    auth: str | bool = token or False
    try:
        # model info first: resolves the commit and fails fast (no retries) when the hub is down
        commit = HfApi(endpoint=url, token=auth).model_info(spec.repo_id, revision=spec.revision).sha
        local = hf_hub_download(
            spec.repo_id,
            "config.json",
            revision=commit or spec.revision,
            cache_dir=str(cache_dir or hub_cache_dir()),
            token=auth,
            endpoint=url,
        )
    except hf.RemoteEntryNotFoundError:
        raise ConfigError(
            f"{spec.repo_id}@{spec.revision} has no config.json to infer concepts from; {_ASK}"
        ) from None
    except Exception as error:
        translated = hub_failure(error, spec, url, token)
        if isinstance(translated, HubError):
            raise HubError(
                f"cannot infer concepts for this {config.model.model_type_id}: {translated.message}; "
                f"{_ASK} or retry when the hub is reachable"
            ) from None
        raise translated from None
    return Path(local), commit
