"""Semantic checks of config.yaml: what its JSON Schema cannot say.

Concept rules, Kubernetes quantities, accelerator consistency between the two compute
sections, YAML's float reading of 3.10: each finding is located (line, column, field path)
and says how to fix it. Only the model directory is consulted; checks that need later
stages (resolve, lock, the hub) live in `modelpack.pipeline.validate`.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from modelpack.errors import Diagnostic
from modelpack.project import compute as compute_table
from modelpack.project.model_dir import (
    CONCEPT_MODEL_TYPES,
    DEFAULT_APP_ID,
    DEFAULT_MODEL_TYPE,
    DEFAULT_PYTHON_VERSION,
    BuildInfo,
    CheckpointSpec,
    ComputeRequirements,
    Concept,
    MCPServerSpec,
    ModelConfig,
    ModelInfo,
    SecretSpec,
)
from modelpack.project.yamlloc import PathKey, YamlDocument, format_path

KNOWN_MODEL_TYPES = (
    "any-to-any",
    "text-to-text",
    "multimodal-to-text",
    "text-to-image",
    "image-to-text",
    "image-to-image",
    "text-to-audio",
    "audio-to-text",
    "text-embedder",
    "multimodal-embedder",
    "visual-embedder",
    "visual-classifier",
    "visual-detector",
    "visual-segmenter",
    "visual-keypointer",
    "text-classifier",
    "mcp",
)
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_QUANTITY_FACTORS = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
_CUDA_VERSION = re.compile(r"^\d{2}\.\d{1,2}$")
_NODE_VERSION = re.compile(r"^\d{1,2}(\.\d+){0,2}$")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def parse_quantity(value: Any) -> float | None:
    """A Kubernetes quantity ("500m", "2Gi", 1) as a number, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(3) or ""
    if suffix[:1] in ("e", "E") and suffix not in _QUANTITY_FACTORS:
        return float(number + suffix)
    return float(number) * _QUANTITY_FACTORS[suffix]


@dataclass
class Checker:
    """Collects located findings for one config.yaml."""

    file: str
    doc: YamlDocument
    findings: list[Diagnostic]

    def _add(self, path: PathKey, message: str, severity: str, *, key: bool) -> None:
        position = self.doc.locate(path, key=key)
        self.findings.append(
            Diagnostic(
                self.file,
                position.line if position else 1,
                position.column if position else 1,
                format_path(path),
                message,
                "error" if severity == "error" else "warning",
            )
        )

    def error(self, path: PathKey, message: str, *, key: bool = False) -> None:
        self._add(path, message, "error", key=key)

    def warning(self, path: PathKey, message: str, *, key: bool = False) -> None:
        self._add(path, message, "warning", key=key)


def short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------
# semantics
# ---------------------------------------------------------------------------


def _version_text(
    checker: Checker, path: PathKey, value: Any, pattern: re.Pattern[str], example: str
) -> str | None:
    """Read a version written as a string or an unquoted YAML number; catch 3.10 read as 3.1."""
    raw = checker.doc.raw_scalars.get(path)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        written = raw.text if raw else str(value)
        if written != str(value) and written.rstrip("0") != written:
            checker.error(
                path,
                f'{written} is read by YAML as the number {value}; quote it: {path[-1]}: "{written}"',
            )
            return None
        text = written
    else:
        text = str(value).strip()
    if not pattern.match(text):
        checker.error(
            path, f'{short(value)} is not a version like {example}; write it as {path[-1]}: "{example}"'
        )
        return None
    return text


def _check_model(section: Any, checker: Checker) -> ModelInfo | None:
    if not isinstance(section, dict) or not isinstance(section.get("id"), str):
        return None
    type_id = section.get("model_type_id", DEFAULT_MODEL_TYPE)
    if isinstance(type_id, str) and type_id not in KNOWN_MODEL_TYPES:
        checker.warning(
            ("model", "model_type_id"),
            f"unknown model type {type_id!r}{did_you_mean(type_id, KNOWN_MODEL_TYPES)} "
            f"(known: {', '.join(KNOWN_MODEL_TYPES)})",
        )
    return ModelInfo(
        id=section["id"],
        user_id=section.get("user_id") if isinstance(section.get("user_id"), str) else None,
        app_id=str(section["app_id"]) if isinstance(section.get("app_id"), str) else DEFAULT_APP_ID,
        model_type_id=type_id if isinstance(type_id, str) else DEFAULT_MODEL_TYPE,
    )


def _check_build_info(section: Any, checker: Checker) -> BuildInfo:
    if not isinstance(section, dict):
        return BuildInfo()
    python_version = DEFAULT_PYTHON_VERSION
    if "python_version" in section:
        text = _version_text(
            checker, ("build_info", "python_version"), section["python_version"], _PYTHON_VERSION, "3.11"
        )
        python_version = text or DEFAULT_PYTHON_VERSION
    cuda_version = None
    if section.get("cuda_version") is not None:
        cuda_version = _version_text(
            checker, ("build_info", "cuda_version"), section["cuda_version"], _CUDA_VERSION, "12.4"
        )
    image = section.get("image")
    base_image = section.get("base_image")
    if isinstance(image, str) and isinstance(base_image, str) and image != base_image:
        checker.error(
            ("build_info", "base_image"),
            "image and base_image name different images; keep one of them",
            key=True,
        )
    chosen = image if isinstance(image, str) else base_image if isinstance(base_image, str) else None
    if chosen and "python_version" in section:
        checker.warning(
            ("build_info", "python_version"),
            "build_info.image names a ready base image: python_version must be that image's Python; "
            "modelpack cannot check it, and locks requirements.txt for this version",
            key=True,
        )
    node_version = None
    if section.get("node_version") is not None:
        node_version = _version_text(
            checker, ("build_info", "node_version"), section["node_version"], _NODE_VERSION, "20"
        )
    known = {"python_version", "image", "base_image", "cuda_version", "node_version"}
    extra = {k: v for k, v in section.items() if k not in known}
    for key in sorted(extra, key=str):
        checker.warning(
            ("build_info", key),
            f"build_info.{key} = {short(extra[key])} is recorded but not used by modelpack",
            key=True,
        )
    return BuildInfo(
        python_version=python_version,
        image=chosen,
        cuda_version=cuda_version,
        node_version=node_version,
        extra=extra,
    )


def _quantity(
    checker: Checker, section: dict[str, Any], key: str, example: str
) -> tuple[str | None, float | None]:
    if key not in section:
        return None, None
    value = section[key]
    number = parse_quantity(value)
    if number is None:
        if not isinstance(value, (dict, list)):
            checker.error(
                ("inference_compute_info", key),
                f'{short(value)} is not a Kubernetes quantity; write e.g. {key}: "{example}"',
            )
        return None, None
    return (str(value) if not isinstance(value, float) else repr(value)), number


def _check_compute(ici: Any, block: Any, checker: Checker) -> ComputeRequirements:
    fields: dict[str, Any] = {}
    if isinstance(ici, dict):
        cpu_limit, cpu_limit_n = _quantity(checker, ici, "cpu_limit", "1")
        cpu_req, cpu_req_n = _quantity(checker, ici, "cpu_requests", "500m")
        mem, mem_n = _quantity(checker, ici, "cpu_memory", "2Gi")
        mem_req, mem_req_n = _quantity(checker, ici, "cpu_memory_requests", "500Mi")
        acc_mem, _ = _quantity(checker, ici, "accelerator_memory", "16Gi")
        if cpu_limit_n is not None and cpu_req_n is not None and cpu_req_n > cpu_limit_n:
            checker.error(
                ("inference_compute_info", "cpu_requests"),
                f"cpu_requests ({cpu_req}) is more than cpu_limit ({cpu_limit}); lower the request or raise the limit",
            )
        if mem_n is not None and mem_req_n is not None and mem_req_n > mem_n:
            checker.error(
                ("inference_compute_info", "cpu_memory_requests"),
                f"cpu_memory_requests ({mem_req}) is more than cpu_memory ({mem}); lower the request or raise the limit",
            )
        types = ici.get("accelerator_type", [])
        types = (
            [types]
            if isinstance(types, str)
            else [t for t in types if isinstance(t, str)]
            if isinstance(types, list)
            else []
        )
        count = ici.get("num_accelerators", 0)
        count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0
        if types and count == 0:
            checker.warning(
                ("inference_compute_info", "accelerator_type"),
                "accelerator_type is ignored while num_accelerators is 0; set num_accelerators to use a GPU",
                key=True,
            )
        if acc_mem and count == 0:
            checker.warning(
                ("inference_compute_info", "accelerator_memory"),
                "accelerator_memory is ignored while num_accelerators is 0",
                key=True,
            )
        fields.update(
            accelerator="gpu" if count > 0 else "cpu",
            num_accelerators=count,
            accelerator_types=tuple(types) if count > 0 else (),
            accelerator_memory=acc_mem if count > 0 else None,
            cpu_limit=cpu_limit,
            cpu_memory=mem,
        )
        if cpu_req:
            fields["cpu_requests"] = cpu_req
        if mem_req:
            fields["cpu_memory_requests"] = mem_req
    if isinstance(block, dict):
        fields.update(_check_compute_block(block, checker, fields))
    return ComputeRequirements(**fields)


def _check_compute_block(block: dict[str, Any], checker: Checker, from_ici: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gpu_type: str | None = None
    gpu_memory: str | None = None
    count = 0
    instance_name = block.get("instance")
    if isinstance(instance_name, str):
        instance = compute_table.lookup_instance(instance_name)
        if instance is None:
            hint = compute_table.suggest(instance_name, compute_table.instance_names())
            checker.error(
                ("compute", "instance"),
                f"unknown instance {instance_name!r}"
                + (
                    f"; did you mean {hint!r}?"
                    if hint
                    else f"; known: {', '.join(compute_table.instance_names())}"
                ),
            )
            return out
        out.update(instance=instance.name, cloud=instance.cloud)
        gpu_type, gpu_memory, count = instance.gpu_type, instance.gpu_memory, instance.num_gpus
        cloud = block.get("cloud")
        if isinstance(cloud, str) and instance.cloud and cloud.lower() != instance.cloud:
            checker.error(
                ("compute", "cloud"), f"instance {instance.name!r} is on {instance.cloud}, not {cloud!r}"
            )
        elif isinstance(cloud, str):
            out["cloud"] = cloud.lower()
    gpu_name = block.get("gpu")
    if isinstance(gpu_name, str):
        gpu = compute_table.lookup_gpu(gpu_name)
        if gpu is None:
            hint = compute_table.suggest(gpu_name.lower().removeprefix("nvidia-"), compute_table.gpu_names())
            checker.error(
                ("compute", "gpu"),
                f"unknown GPU {gpu_name!r}"
                + (
                    f"; did you mean {hint!r}?"
                    if hint
                    else f"; known: {', '.join(compute_table.gpu_names())}"
                ),
            )
            return out
        if gpu_type and gpu[0] != gpu_type:
            checker.error(
                ("compute", "gpu"),
                f"instance {instance_name!r} has {gpu_type}, not {gpu[0]}; remove one of them",
            )
            return out
        gpu_type, gpu_memory = gpu
        count = max(count, 1)
    num_gpus = block.get("num_gpus")
    if isinstance(num_gpus, int) and not isinstance(num_gpus, bool) and num_gpus >= 0:
        if num_gpus > 0 and gpu_type is None:
            checker.error(
                ("compute", "num_gpus"),
                f"instance {instance_name!r} has no GPU; choose a GPU instance (e.g. a10g, l40s) or set num_gpus: 0",
            )
            return out
        count = num_gpus if gpu_type else 0
        if num_gpus == 0:
            gpu_type = gpu_memory = None
    if (
        from_ici.get("num_accelerators", 0) > 0
        and count == 0
        and ("instance" in block or "num_gpus" in block)
    ):
        checker.error(
            ("compute",),
            "inference_compute_info asks for GPUs but the compute block names a CPU instance; make them agree",
            key=True,
        )
        return out
    if from_ici:
        checker.warning(
            ("compute",),
            "both inference_compute_info and compute are set; the compute block decides the hardware",
            key=True,
        )
    out.update(
        accelerator="gpu" if count > 0 else "cpu",
        num_accelerators=count,
        accelerator_types=(gpu_type,) if gpu_type and count > 0 else (),
        accelerator_memory=gpu_memory if count > 0 else None,
    )
    return out


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _check_checkpoints(section: Any, checker: Checker) -> CheckpointSpec | None:
    if not isinstance(section, dict) or not isinstance(section.get("repo_id"), str):
        return None
    token = section.get("hf_token")
    if isinstance(token, str) and token.strip():
        checker.warning(
            ("checkpoints", "hf_token"),
            "a token in config.yaml ends up in version control; remove hf_token and set the HF_TOKEN "
            "environment variable instead",
            key=True,
        )
    when = section.get("when", "runtime")
    return CheckpointSpec(
        type=str(section.get("type", "huggingface")),
        repo_id=section["repo_id"],
        revision=str(section["revision"]) if isinstance(section.get("revision"), str) else "main",
        when=when if when in ("runtime", "build", "upload") else "runtime",
        allowed_file_patterns=_patterns(section.get("allowed_file_patterns")),
        ignore_file_patterns=_patterns(section.get("ignore_file_patterns")),
        hf_token=token.strip() if isinstance(token, str) and token.strip() else None,
    )


def _check_concepts(
    section: Any, model: ModelInfo | None, has_checkpoint: bool, present: bool, checker: Checker
) -> tuple[Concept, ...]:
    concepts: list[Concept] = []
    model_type = model.model_type_id if model else DEFAULT_MODEL_TYPE
    if present and model_type not in CONCEPT_MODEL_TYPES and model:
        checker.error(
            ("concepts",),
            f"concepts are only for {', '.join(sorted(CONCEPT_MODEL_TYPES))} models, not {model_type!r}; "
            "remove the concepts section or change model.model_type_id",
            key=True,
        )
        return ()
    if model and model_type in CONCEPT_MODEL_TYPES and not present and not has_checkpoint:
        checker.error(
            ("model", "model_type_id"),
            f"a {model_type} needs concepts; add `concepts: [{{id: cat, name: cat}}, ...]` or a checkpoints "
            "section whose config.json has id2label",
        )
    if not isinstance(section, list):
        return ()
    ids: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, item in enumerate(section):
        if (
            not isinstance(item, dict)
            or "id" not in item
            or isinstance(item.get("id"), (bool, float, list, dict))
        ):
            continue
        concept_id = str(item["id"]).strip()
        name = item.get("name", concept_id)
        if not isinstance(name, str):
            continue
        if not concept_id:
            checker.error(("concepts", index, "id"), "concept id is empty; give every concept an id")
            continue
        if not name.strip():
            checker.error(
                ("concepts", index, "name"), "concept name is empty; give it a name or drop the name key"
            )
            continue
        if concept_id in ids:
            checker.error(
                ("concepts", index, "id"),
                f"duplicate concept id {concept_id!r} (also concepts[{ids[concept_id]}]); ids must be unique",
            )
            continue
        folded = " ".join(name.split()).lower()
        if folded in names:
            checker.error(
                ("concepts", index, "name"),
                f"concept name {name!r} differs from concepts[{names[folded]}] only by spacing or case; make names distinct",
            )
            continue
        ids[concept_id] = index
        names[folded] = index
        concepts.append(Concept(id=concept_id, name=" ".join(name.split())))
    return tuple(concepts)


def _check_secrets(section: Any, checker: Checker) -> tuple[SecretSpec, ...]:
    if not isinstance(section, list):
        return ()
    secrets: list[SecretSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(section):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("env_var"), str)
        ):
            continue
        env_var = item["env_var"]
        if not _ENV_VAR.match(env_var):
            checker.error(
                ("secrets", index, "env_var"),
                f"{env_var!r} is not a valid environment variable name; use letters, digits and _, e.g. API_KEY",
            )
            continue
        if item["id"] in seen:
            checker.error(
                ("secrets", index, "id"),
                f"duplicate secret id {item['id']!r} (also secrets[{seen[item['id']]}])",
            )
            continue
        seen[item["id"]] = index
        description = item.get("description", "")
        secrets.append(
            SecretSpec(
                id=item["id"],
                env_var=env_var,
                description=description if isinstance(description, str) else "",
            )
        )
    return tuple(secrets)


_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)


def _check_mcp_server(section: Any, secrets: tuple[SecretSpec, ...], checker: Checker) -> MCPServerSpec | None:
    if not isinstance(section, dict) or not isinstance(section.get("command"), str):
        return None
    args = section.get("args") or []
    args = [args] if isinstance(args, str) else [str(a) for a in args if isinstance(a, str)]
    raw_env = section.get("env")
    env: dict[Any, Any] = raw_env if isinstance(raw_env, dict) else {}
    secret_vars = {s.env_var for s in secrets}
    for key, value in env.items():
        if _SECRET_NAME.search(str(key)) and str(value).strip():
            hint = "" if key in secret_vars else f" and list it under secrets (env_var: {key})"
            checker.error(
                ("mcp_server", "env", str(key)),
                f"{key} looks like a secret: config.yaml is copied into the image; remove its value{hint}, "
                f"then set ${key} when the container runs",
            )
    spec = MCPServerSpec(
        command=section["command"],
        args=tuple(args),
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
    )
    return spec


def check_sections(
    data: dict[str, Any], checker: Checker, extra_sections: tuple[str, ...]
) -> ModelConfig | None:
    """The typed config, or None when the model section is unusable or a finding is an error."""
    model = _check_model(data.get("model"), checker)
    build_info = _check_build_info(data.get("build_info"), checker)
    compute = _check_compute(data.get("inference_compute_info"), data.get("compute"), checker)
    checkpoint = _check_checkpoints(data.get("checkpoints"), checker)
    concepts = _check_concepts(
        data.get("concepts"), model, checkpoint is not None, "concepts" in data, checker
    )
    secrets = _check_secrets(data.get("secrets"), checker)
    mcp_server = _check_mcp_server(data.get("mcp_server"), secrets, checker)
    if mcp_server is not None and mcp_server.npx_package and build_info.node_version is None:
        checker.error(
            ("mcp_server", "command"),
            "npx needs Node.js in the image: set build_info.node_version, e.g. \"20\"",
        )
    num_threads = data.get("num_threads")
    if model is None or any(f.severity == "error" for f in checker.findings):
        return None
    return ModelConfig(
        model=model,
        build_info=build_info,
        compute=compute,
        checkpoints=checkpoint,
        concepts=concepts,
        secrets=secrets,
        num_threads=num_threads if isinstance(num_threads, int) else None,
        mcp_server=mcp_server,
        extra_sections=extra_sections,
        raw=data,
    )
