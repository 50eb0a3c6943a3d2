"""`modelpack deploy-manifest`: Deployment + Service from a model directory, checked against the
Kubernetes OpenAPI schemas shipped by `kubernetes-validate` (no cluster needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from modelpack.cli import cli
from modelpack.deploy.kubernetes import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    deploy_manifest,
    gpu_products,
    resource_name,
    to_list,
    to_yaml,
)
from modelpack.errors import InvalidInputError
from modelpack.project.config import load

IMAGE = "127.0.0.1:5000/acme/model:v3"

CPU_CONFIG = """
model: {id: Text_Summarizer, user_id: acme, app_id: main, model_type_id: text-to-text}
build_info: {python_version: "3.11"}
inference_compute_info:
  cpu_limit: "2"
  cpu_requests: "1"
  cpu_memory: 4Gi
  cpu_memory_requests: 2Gi
  num_accelerators: 0
"""

GPU_WILDCARD_CONFIG = """
model: {id: llm, model_type_id: text-to-text}
inference_compute_info:
  cpu_limit: "8"
  cpu_memory: 32Gi
  num_accelerators: 2
  accelerator_type: ["NVIDIA-A10*", "NVIDIA-L4", "AMD-*"]
  accelerator_memory: 24Gi
"""

COMPUTE_BLOCK_CONFIG = """
model: {id: 9-detector, model_type_id: visual-detector}
concepts: [{id: cat, name: cat}]
compute:
  instance: g5.xlarge
"""

RUNTIME_CHECKPOINT_CONFIG = """
model: {id: embedder, model_type_id: text-embedder}
inference_compute_info: {cpu_limit: "1", cpu_memory: 2Gi}
checkpoints:
  type: huggingface
  repo_id: acme/tiny-embedder
  revision: main
  when: runtime
secrets:
  - {id: OpenAI_Key, env_var: OPENAI_API_KEY, description: for the fallback}
  - {id: search.token, env_var: SEARCH_TOKEN}
"""


def make_model(root: Path, config: str) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text(textwrap.dedent(config))
    (root / "requirements.txt").write_text("")
    (root / "1" / "model.py").write_text(
        "from clarifai.runners.models.model_class import ModelClass\n\n\n"
        "class M(ModelClass):\n    @ModelClass.method\n    def predict(self, text: str) -> str:\n        return text\n"
    )
    return root


def manifest(tmp_path: Path, config: str, **kwargs: Any) -> list[dict[str, Any]]:
    return deploy_manifest(load(make_model(tmp_path / "m", config)), IMAGE, **kwargs)


def _validator() -> Any:
    """kubernetes-validate ships the official schemas; a test tool, required under CI."""
    try:
        import kubernetes_validate
    except ImportError:
        message = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return kubernetes_validate


def k8s_validate(objects: list[dict[str, Any]]) -> None:
    kubernetes_validate = _validator()
    version = kubernetes_validate.latest_version()
    for obj in objects:
        # strict: unknown fields are errors too; raises ValidationError on any schema violation
        kubernetes_validate.validate(json.loads(json.dumps(obj)), version, strict=True)


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = objects[0]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_of(objects)["env"]}


@pytest.mark.parametrize(
    "config", [CPU_CONFIG, GPU_WILDCARD_CONFIG, COMPUTE_BLOCK_CONFIG, RUNTIME_CHECKPOINT_CONFIG]
)
def test_output_validates_against_kubernetes_schemas(tmp_path: Path, config: str) -> None:
    objects = manifest(tmp_path, config, replicas=3, port=9000)
    assert [o["kind"] for o in objects] == ["Deployment", "Service"]
    k8s_validate(objects)
    assert to_list(objects) == {"apiVersion": "v1", "kind": "List", "items": objects}
    deployment, service = objects
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["replicas"] == 3


def test_schema_check_is_real(tmp_path: Path) -> None:
    kubernetes_validate = _validator()
    objects = manifest(tmp_path, CPU_CONFIG)
    objects[0]["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(objects[:1])
    objects = manifest(tmp_path / "again", CPU_CONFIG)
    objects[1]["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(objects[1:])


def test_cpu_config_requests_limits_probes_and_port(tmp_path: Path) -> None:
    objects = manifest(tmp_path, CPU_CONFIG, port=9000)
    container = container_of(objects)
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert env_of(objects) == {"PORT": "9000"}
    pod = objects[0]["spec"]["template"]["spec"]
    assert "affinity" not in pod and "tolerations" not in pod and "volumes" not in pod
    assert objects[0]["metadata"]["name"] == objects[1]["metadata"]["name"] == "text-summarizer"
    assert objects[0]["metadata"]["labels"]["app.kubernetes.io/version"] == "v3"
    assert objects[1]["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_gpu_wildcards_become_node_affinity_on_known_products(tmp_path: Path) -> None:
    objects = manifest(tmp_path, GPU_WILDCARD_CONFIG)
    container = container_of(objects)
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", GPU_RESOURCE: 2}
    pod = objects[0]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": GPU_PRODUCT_LABEL,
                    "operator": "In",
                    "values": ["NVIDIA-A100", "NVIDIA-A10G", "NVIDIA-L4"],
                }
            ]
        }
    ]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert objects[0]["metadata"]["annotations"]["modelpack.dev/accelerator-memory"] == "24Gi"


def test_gpu_products_expansion() -> None:
    assert gpu_products(["nvidia-h*"]) == ["NVIDIA-H100", "NVIDIA-H200"]
    assert gpu_products(["NVIDIA-*"])[:2] == ["NVIDIA-A100", "NVIDIA-A10G"]
    assert gpu_products(["NVIDIA-RTX-4090", "NVIDIA-L4", "NVIDIA-L4*"]) == [
        "NVIDIA-RTX-4090",
        "NVIDIA-L4",
        "NVIDIA-L40S",
    ]
    assert gpu_products(["Intel-*"]) == []


def test_gpu_without_known_product_has_no_affinity(tmp_path: Path) -> None:
    config = GPU_WILDCARD_CONFIG.replace('["NVIDIA-A10*", "NVIDIA-L4", "AMD-*"]', '["AMD-*"]')
    objects = manifest(tmp_path, config)
    pod = objects[0]["spec"]["template"]["spec"]
    assert "affinity" not in pod
    assert container_of(objects)["resources"]["limits"][GPU_RESOURCE] == 2


def test_compute_block_instance_fills_limits_and_gpu(tmp_path: Path) -> None:
    objects = manifest(tmp_path, COMPUTE_BLOCK_CONFIG)
    assert container_of(objects)["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: 1}
    values = objects[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    assert values == ["NVIDIA-A10G"]
    assert objects[0]["metadata"]["name"] == "m-9-detector"  # Service names must start with a letter


def test_requests_never_exceed_limits(tmp_path: Path) -> None:
    config = """
    model: {id: small}
    inference_compute_info: {cpu_limit: 250m, cpu_memory: 256Mi}
    """
    resources = container_of(manifest(tmp_path, config))["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "256Mi"}


def test_runtime_checkpoint_and_secrets_are_references(tmp_path: Path) -> None:
    objects = manifest(tmp_path, RUNTIME_CHECKPOINT_CONFIG)
    env = env_of(objects)
    assert env["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "openai-key", "key": "OPENAI_API_KEY"}}
    assert env["SEARCH_TOKEN"] == {"secretKeyRef": {"name": "search-token", "key": "SEARCH_TOKEN"}}
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}}
    from modelpack.project.checkpoints import RUNTIME_CACHE_ENV

    cache = env[RUNTIME_CACHE_ENV]  # the variable fetch_at_startup reads
    container = container_of(objects)
    assert container["volumeMounts"] == [{"name": "checkpoint-cache", "mountPath": cache}]
    pod = objects[0]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "checkpoint-cache", "emptyDir": {}}]
    assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsUser"]


def test_checkpoint_token_from_config_never_lands_in_the_manifest(tmp_path: Path) -> None:
    config = RUNTIME_CHECKPOINT_CONFIG.replace(
        "when: runtime", "when: runtime\n  hf_token: hf_SUPERSECRET123"
    )
    objects = manifest(tmp_path, config)
    assert "hf_SUPERSECRET123" not in json.dumps(objects)
    assert env_of(objects)["HF_TOKEN"]["secretKeyRef"]["name"] == "hf-token"


def test_build_time_checkpoint_needs_no_token_or_cache(tmp_path: Path) -> None:
    objects = manifest(tmp_path, RUNTIME_CHECKPOINT_CONFIG.replace("when: runtime", "when: build"))
    assert "HF_TOKEN" not in env_of(objects)
    assert "volumes" not in objects[0]["spec"]["template"]["spec"]


def test_bad_arguments_are_input_errors(tmp_path: Path) -> None:
    model_dir = load(make_model(tmp_path / "m", CPU_CONFIG))
    for kwargs, cause in (({"replicas": -1}, "--replicas"), ({"port": 0}, "--port"), ({"port": 70000}, "--port")):
        with pytest.raises(InvalidInputError, match=f"^{cause} must be"):
            deploy_manifest(model_dir, IMAGE, **kwargs)
    with pytest.raises(InvalidInputError, match="invalid image reference 'bad image'"):
        deploy_manifest(model_dir, "bad image")


def test_resource_names() -> None:
    assert resource_name("My_Model.v2") == "my-model-v2"
    assert resource_name("___") == "model"
    assert len(resource_name("x" * 100)) == 63


def test_yaml_stream_has_no_anchors(tmp_path: Path) -> None:
    text = to_yaml(manifest(tmp_path, CPU_CONFIG))
    assert "&id" not in text and "*id" not in text
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["Deployment", "Service"]


# --------------------------------------------------------------------------- CLI


def test_cli_yaml_and_json(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m", GPU_WILDCARD_CONFIG)
    runner = CliRunner()
    result = runner.invoke(cli, ["deploy-manifest", str(root), "--image", IMAGE, "--replicas", "2"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert [d["kind"] for d in documents] == ["Deployment", "Service"]
    assert documents[0]["spec"]["replicas"] == 2
    k8s_validate(documents)
    result = runner.invoke(cli, ["deploy-manifest", str(root), "--image", IMAGE, "--json", "--port", "8081"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed["kind"] == "List" and [i["kind"] for i in listed["items"]] == ["Deployment", "Service"]
    assert listed["items"][1]["spec"]["ports"][0]["port"] == 8081


@pytest.mark.parametrize(
    "args",
    [
        ["--replicas", "-1"],
        ["--port", "0"],
        ["--format", "nomad"],
        [],  # a directory without --image
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    root = make_model(tmp_path / "m", CPU_CONFIG)
    extra = ["--image", IMAGE] if args else []
    result = CliRunner().invoke(cli, ["deploy-manifest", str(root), *extra, *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_invalid_model_dir_exits_2_with_located_error(tmp_path: Path) -> None:
    root = make_model(tmp_path / "m", CPU_CONFIG.replace('cpu_limit: "2"', "cpu_limit: two"))
    result = CliRunner().invoke(cli, ["deploy-manifest", str(root), "--image", IMAGE])
    assert result.exit_code == 2
    assert "config.yaml:" in result.output and "cpu_limit" in result.output


def test_cli_image_mode_with_unreachable_registry_is_one_line_exit_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelpack", "deploy-manifest", "127.0.0.1:9/acme/none:v1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
