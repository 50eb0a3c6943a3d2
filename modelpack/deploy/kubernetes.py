"""Kubernetes objects for a built model image: a `Deployment` plus a `Service`.

`deploy_manifest()` is a pure function of the loaded model directory and the image
reference, so the output can be checked against the Kubernetes schemas without a
cluster. What it maps:

- requests/limits from the config's compute requirements (the compute block's
  instance fills in CPU and memory limits the config leaves open);
- GPUs as `nvidia.com/gpu` limits, plus a toleration for the usual GPU-node taint;
- `accelerator_type` patterns (`NVIDIA-*`, `NVIDIA-A10G`) as a required node affinity
  on the node label `nvidia.com/gpu.product` (set by NVIDIA GPU Feature Discovery),
  wildcards expanded against the known GPUs of `compute_instances.json`;
- readiness on the runtime's `/ready`, liveness on `/health`, `PORT` in the env;
- each `secrets:` entry as an env var from a Secret (`secretKeyRef`), never a value;
- for `checkpoints.when: runtime`, `HF_TOKEN` from the Secret `hf-token` (optional:
  public repositories need none) and an `emptyDir` checkpoint cache (swap it for a
  PersistentVolumeClaim to keep downloads across restarts).
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from modelpack import scratch
from modelpack.errors import InvalidInputError
from modelpack.image.versions import image_config, image_manifest, inspect
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import RegistryClient
from modelpack.project import config as config_stage
from modelpack.project.compute import gpu_names, lookup_gpu, lookup_instance
from modelpack.project.config_checks import parse_quantity
from modelpack.project.model_dir import ComputeRequirements, ModelDir, ModelDirLike

DEFAULT_PORT = 8080
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # node label from NVIDIA GPU Feature Discovery
HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_KEY = "HF_TOKEN"
CHECKPOINT_CACHE_DIR = "/var/cache/modelpack/checkpoints"
CHECKPOINT_CACHE_ENV = "MODELPACK_CHECKPOINT_CACHE"  # checkpoints.RUNTIME_CACHE_ENV, read by fetch_at_startup
RUNTIME_UID = 10001  # the image's unprivileged user (see templates/Dockerfile.j2)
ANNOTATION_PREFIX = "modelpack.dev/"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def resource_name(text: str, *, fallback: str = "model") -> str:
    """A DNS-1035 label (what Service names need): lowercase, `-`, starts with a letter, <= 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name:
        name = fallback
    if not name[0].isalpha():
        name = f"m-{name}"
    return name[:63].rstrip("-")


def secret_name(secret_id: str) -> str:
    """The Kubernetes Secret that holds config secret `secret_id` (a DNS-1123 subdomain)."""
    return resource_name(secret_id, fallback="secret")


def gpu_products(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Values for the `nvidia.com/gpu.product` node affinity.

    A wildcard pattern becomes every known GPU type it matches (case-insensitive);
    a plain name is kept as written. Wildcards that match no known GPU are dropped,
    since a label value cannot hold `*`.
    """
    known = sorted({found[0] for name in gpu_names() if (found := lookup_gpu(name))})
    values: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matched = [t for t in known if fnmatch.fnmatchcase(t.upper(), pattern.upper())]
        else:
            matched = [pattern] if _LABEL_VALUE.match(pattern) else []
        values.extend(m for m in matched if m not in values)
    return values


def _quantity(value: str | None) -> float | None:
    return parse_quantity(value) if value is not None else None


def container_resources(compute: ComputeRequirements) -> dict[str, Any]:
    """requests/limits; a request never exceeds its limit (the API server would refuse it)."""
    instance = lookup_instance(compute.instance) if compute.instance else None
    cpu_limit = compute.cpu_limit or (instance.cpus if instance else None)
    memory_limit = compute.cpu_memory or (instance.memory if instance else None)
    requests: dict[str, Any] = {"cpu": compute.cpu_requests, "memory": compute.cpu_memory_requests}
    limits: dict[str, Any] = {}
    for key, limit in (("cpu", cpu_limit), ("memory", memory_limit)):
        if limit is None:
            continue
        limits[key] = limit
        wanted, allowed = _quantity(requests[key]), _quantity(limit)
        if wanted is not None and allowed is not None and wanted > allowed:
            requests[key] = limit
    if compute.num_accelerators > 0:
        limits[GPU_RESOURCE] = compute.num_accelerators
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return resources


def _image_version(image: str) -> str | None:
    """The tag of `image` (e.g. `v3`) when it is usable as a label value."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[1]
    return tag if _LABEL_VALUE.match(tag) else None


def deploy_manifest(
    model_dir: ModelDirLike, image: str, *, replicas: int = 1, port: int = DEFAULT_PORT
) -> list[dict[str, Any]]:
    """A `Deployment` and a `Service` serving `image` with `model_dir`'s compute needs.

    `model_dir` is a path (loaded here) or a loaded ModelDir.
    """
    if not image or any(c.isspace() for c in image):
        raise InvalidInputError(f"invalid image reference {image!r}")
    if replicas < 0:
        raise InvalidInputError(f"--replicas must be 0 or more, not {replicas}")
    if not 1 <= port <= 65535:
        raise InvalidInputError(f"--port must be between 1 and 65535, not {port}")
    config = config_stage.as_model_dir(model_dir).config
    compute = config.compute
    name = resource_name(config.model.id)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    labels = {**selector, "app.kubernetes.io/component": "model", "app.kubernetes.io/managed-by": "modelpack"}
    version = _image_version(image)
    if version:
        labels["app.kubernetes.io/version"] = version
    annotations = {f"{ANNOTATION_PREFIX}model-id": config.model.id, f"{ANNOTATION_PREFIX}image": image}

    env: list[dict[str, Any]] = [{"name": "PORT", "value": str(port)}]
    for secret in config.secrets:
        env.append(
            {
                "name": secret.env_var,
                "valueFrom": {"secretKeyRef": {"name": secret_name(secret.id), "key": secret.env_var}},
            }
        )
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    runtime_checkpoint = config.checkpoints is not None and config.checkpoints.when == "runtime"
    if runtime_checkpoint:
        assert config.checkpoints is not None
        if not any(e["name"] == HF_TOKEN_KEY for e in env):
            env.append(
                {
                    "name": HF_TOKEN_KEY,
                    "valueFrom": {
                        "secretKeyRef": {"name": HF_TOKEN_SECRET, "key": HF_TOKEN_KEY, "optional": True}
                    },
                }
            )
        env.append({"name": CHECKPOINT_CACHE_ENV, "value": CHECKPOINT_CACHE_DIR})
        volumes.append({"name": "checkpoint-cache", "emptyDir": {}})
        mounts.append({"name": "checkpoint-cache", "mountPath": CHECKPOINT_CACHE_DIR})
        annotations[f"{ANNOTATION_PREFIX}checkpoint"] = (
            f"{config.checkpoints.repo_id}@{config.checkpoints.revision}"
        )
    if config.num_threads:
        env.append({"name": "OMP_NUM_THREADS", "value": str(config.num_threads)})

    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": container_resources(compute),
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 4,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if mounts:
        container["volumeMounts"] = mounts

    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"fsGroup": RUNTIME_UID, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if compute.num_accelerators > 0:
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        products = gpu_products(compute.accelerator_types)
        if products:
            pod_spec["affinity"] = {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": products}
                                ]
                            }
                        ]
                    }
                }
            }
        if compute.accelerator_types:
            annotations[f"{ANNOTATION_PREFIX}accelerator-types"] = ",".join(compute.accelerator_types)
        if compute.accelerator_memory:
            annotations[f"{ANNOTATION_PREFIX}accelerator-memory"] = compute.accelerator_memory

    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """A YAML stream, one document per object, keys in the order Kubernetes users expect."""
    import yaml

    plain = json.loads(json.dumps(objects))  # no shared sub-objects: no YAML anchors
    return yaml.safe_dump_all(plain, sort_keys=False, default_flow_style=False)


def to_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The objects as one `v1` `List` (what `kubectl get -o json` prints for several)."""
    return {"apiVersion": "v1", "kind": "List", "items": objects}


# --------------------------------------------------------------------------- IMAGE mode

_MODEL_FILES = ("config.yaml", "requirements.txt", "1/model.py")
_MAX_LAYER_BYTES = 64 * 1024 * 1024
_LAYERS_TO_SCAN = 4  # config and model code are the image's top layers


def _extract_model_files(blob: bytes, found: dict[str, bytes]) -> None:
    """Copy `app/config.yaml`, `app/requirements.txt`, `app/1/model.py` out of one layer."""
    data = blob
    if blob[:2] == b"\x1f\x8b":
        data = zlib.decompress(blob, 16 + zlib.MAX_WBITS)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            path = PurePosixPath(member.name.removeprefix("./").lstrip("/"))
            if not member.isfile() or len(path.parts) < 2 or path.parts[0] != "app":
                continue
            relative = "/".join(path.parts[1:])
            if relative in _MODEL_FILES and relative not in found:
                handle = archive.extractfile(member)
                if handle is not None:
                    found[relative] = handle.read()


def model_dir_from_image(image: str, workdir: Path) -> tuple[ModelDir, dict[str, str]]:
    """Read the model's config back out of a pushed modelpack image (registry only).

    Checks the `dev.modelpack.*` labels first, then pulls the top layers (config
    and model code, small) and loads them like a model directory under `workdir`.
    """
    info = inspect(image, prefer="registry")
    if "dev.modelpack.model-id" not in info.labels:
        raise InvalidInputError(f"{image} has no dev.modelpack.* labels: not built by modelpack")
    ref = ImageRef.parse(image)
    client = RegistryClient.for_ref(ref)
    manifest = image_manifest(client, ref.repository, ref.reference)
    image_config(client, ref.repository, manifest)  # checks the manifest is an image
    found: dict[str, bytes] = {}
    layers = [layer for layer in manifest.json.get("layers") or [] if isinstance(layer, dict)]
    for layer in reversed(layers[-_LAYERS_TO_SCAN:]):
        if int(layer.get("size") or 0) > _MAX_LAYER_BYTES:
            continue
        try:
            _extract_model_files(client.get_blob(ref.repository, str(layer["digest"])), found)
        except (tarfile.TarError, zlib.error, KeyError):
            continue
        if "config.yaml" in found and "1/model.py" in found:
            break
    if "config.yaml" not in found:
        raise InvalidInputError(
            f"{image}: no /app/config.yaml in its top layers; pass the model directory and --image instead"
        )
    root = workdir / "model"
    (root / "1").mkdir(parents=True, exist_ok=True)
    for relative in _MODEL_FILES:
        (root / relative).write_bytes(found.get(relative, b""))
    return config_stage.load(root), info.labels


def objects_for_image(image: str, *, replicas: int = 1, port: int = DEFAULT_PORT) -> list[dict[str, Any]]:
    """`deploy_manifest` for an image in a registry, with the config read from the image."""
    with scratch.folder("modelpack-deploy-") as tmp:
        model_dir, labels = model_dir_from_image(image, Path(tmp))
        objects = deploy_manifest(model_dir, image, replicas=replicas, port=port)
    resolved = labels.get("dev.modelpack.resolve")
    if resolved:
        try:
            base = json.loads(resolved).get("base_image")
        except ValueError:
            base = None
        if isinstance(base, str):
            objects[0]["metadata"]["annotations"][f"{ANNOTATION_PREFIX}base-image"] = base
    return objects
