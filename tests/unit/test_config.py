"""config.yaml loading and validation: real-world shapes load, bad ones are located exactly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelpack
from modelpack.errors import ConfigError
from modelpack.pipeline.validate import validate
from modelpack.project.config import load
from modelpack.project.config_checks import parse_quantity
from tests.unit.fakes import FORMAT_CHECK_PACKAGES

MODEL_PY = "from modelpack.runtime import ModelClass\n\nclass M(ModelClass):\n    def load_model(self):\n        pass\n"


def make_dir(tmp_path: Path, config: str, requirements: str = "", model_py: str = MODEL_PY) -> Path:
    root = tmp_path / "m"
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text(textwrap.dedent(config))
    (root / "requirements.txt").write_text(requirements)
    (root / "1" / "model.py").write_text(model_py)
    return root


# --------------------------------------------------------------------------- real-world shapes


CLARIFAI_LLM = """
model:
  id: llama-3_2-1b-instruct
  user_id: meta
  app_id: Llama-3
  model_type_id: text-to-text

build_info:
  python_version: "3.11"

inference_compute_info:
  cpu_limit: "1"
  cpu_memory: "13Gi"
  num_accelerators: 1
  accelerator_type: ["NVIDIA-*"]
  accelerator_memory: "18Gi"

checkpoints:
  type: huggingface
  repo_id: unsloth/Llama-3.2-1B-Instruct
  hf_token: ""
  when: runtime
"""

CLARIFAI_COMPUTE = """
model:
  id: qwen
  user_id: me
  app_id: main
  model_type_id: multimodal-to-text
build_info:
  python_version: 3.12
compute:
  instance: g6e.2xlarge
checkpoints:
  type: huggingface
  repo_id: Qwen/Qwen2.5-VL-3B-Instruct
  when: build
  allowed_file_patterns: "*.safetensors"
  ignore_file_patterns: ["original/*", "*.bin"]
"""


def test_clarifai_llm_config_loads(tmp_path: Path) -> None:
    model_dir = load(make_dir(tmp_path, CLARIFAI_LLM, "torch==2.5.1\ntransformers>=4.46\n"))
    config = model_dir.config
    assert config.model.id == "llama-3_2-1b-instruct"
    assert config.model.app_id == "Llama-3"
    assert config.build_info.python_version == "3.11"
    assert config.compute.accelerator == "gpu"
    assert config.compute.num_accelerators == 1
    assert config.compute.accelerator_types == ("NVIDIA-*",)
    assert config.compute.accelerator_memory == "18Gi"
    assert config.compute.cpu_requests == "500m"
    assert config.compute.cpu_memory_requests == "500Mi"
    assert config.checkpoints is not None
    assert config.checkpoints.when == "runtime"
    assert config.checkpoints.revision == "main"
    assert config.checkpoints.hf_token is None
    assert [r.name for r in model_dir.requirements] == ["torch", "transformers"]


def test_compute_block_instance_maps_to_gpu(tmp_path: Path) -> None:
    model_dir = load(make_dir(tmp_path, CLARIFAI_COMPUTE))
    compute = model_dir.config.compute
    assert (compute.accelerator, compute.num_accelerators, compute.accelerator_types) == (
        "gpu",
        1,
        ("NVIDIA-L40S",),
    )
    assert compute.instance == "g6e.2xlarge"
    assert compute.cloud == "aws"
    assert model_dir.config.build_info.python_version == "3.12"
    assert model_dir.config.checkpoints is not None
    assert model_dir.config.checkpoints.allowed_file_patterns == ("*.safetensors",)
    assert model_dir.config.checkpoints.ignore_file_patterns == ("original/*", "*.bin")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("instance: cpu", ("cpu", 0, ())),
        ("instance: t3a.2xlarge\n  cloud: aws", ("cpu", 0, ())),
        ("instance: t4", ("gpu", 1, ("NVIDIA-T4",))),
        ("instance: a10g", ("gpu", 1, ("NVIDIA-A10G",))),
        ("instance: A10G", ("gpu", 1, ("NVIDIA-A10G",))),
        ("instance: l40s", ("gpu", 1, ("NVIDIA-L40S",))),
        ("instance: G6E.2XLARGE", ("gpu", 1, ("NVIDIA-L40S",))),
        ("instance: g5.12xlarge\n  num_gpus: 2", ("gpu", 2, ("NVIDIA-A10G",))),
        ("gpu: A10G", ("gpu", 1, ("NVIDIA-A10G",))),
        ("gpu: nvidia-t4", ("gpu", 1, ("NVIDIA-T4",))),
    ],
)
def test_compute_instances(tmp_path: Path, block: str, expected: tuple[str, int, tuple[str, ...]]) -> None:
    config = f"model:\n  id: m\ncompute:\n  {block}\n"
    compute = load(make_dir(tmp_path, config)).config.compute
    assert (compute.accelerator, compute.num_accelerators, compute.accelerator_types) == expected


def test_defaults_and_minimal_config(tmp_path: Path) -> None:
    model_dir = load(make_dir(tmp_path, "model:\n  id: tiny\n"))
    config = model_dir.config
    assert config.model.app_id == "main"
    assert config.model.model_type_id == "any-to-any"
    assert config.build_info.python_version == "3.12"
    assert config.compute.accelerator == "cpu"
    assert model_dir.warnings == ()


def test_build_info_image_and_extra_keys(tmp_path: Path) -> None:
    config = """
    model: {id: m}
    build_info:
      image: "nvcr.io/nvidia/pytorch:24.05-py3"
      node_version: "20"
      toolkit_version: "1"
    """
    model_dir = load(make_dir(tmp_path, config))
    assert model_dir.config.build_info.image == "nvcr.io/nvidia/pytorch:24.05-py3"
    assert model_dir.config.build_info.node_version == "20"
    assert model_dir.config.build_info.extra == {"toolkit_version": "1"}
    assert [(w.path, w.line) for w in model_dir.warnings] == [("build_info.toolkit_version", 6)]


def test_mcp_server_section(tmp_path: Path) -> None:
    config = """
    model: {id: m}
    build_info: {python_version: "3.11", node_version: 20}
    mcp_server:
      command: npx
      args: ["-y", "@modelcontextprotocol/server-memory"]
      env: {MEMORY_FILE_PATH: /tmp/memory.json}
    secrets:
      - {id: gh, env_var: GITHUB_TOKEN}
    """
    server = load(make_dir(tmp_path, config)).config.mcp_server
    assert server is not None
    assert server.args == ("-y", "@modelcontextprotocol/server-memory")
    assert server.npx_package == "@modelcontextprotocol/server-memory"
    assert server.env == (("MEMORY_FILE_PATH", "/tmp/memory.json"),)


@pytest.mark.parametrize(
    ("section", "path", "line", "needle"),
    [
        ("mcp_server: {args: [x]}", "mcp_server", 2, "command"),
        ("mcp_server: {command: python, argz: [x]}", "mcp_server.argz", 2, "args"),
        ("mcp_server:\n  command: npx\n  args: [-y, some-server]", "mcp_server.command", 3, "node_version"),
        (
            "mcp_server:\n  command: python\n  env:\n    GITHUB_TOKEN: ghp_abc",
            "mcp_server.env.GITHUB_TOKEN",
            5,
            "secrets",
        ),
    ],
)
def test_mcp_server_errors_are_located(tmp_path: Path, section: str, path: str, line: int, needle: str) -> None:
    report = validate(make_dir(tmp_path, "model: {id: m}\n" + section + "\n"))
    assert not report.valid
    found = [(e.path, e.line, e.message) for e in report.errors]
    assert any(p == path and ln == line and needle in m for p, ln, m in found), found
    assert all("ghp_abc" not in m for _, _, m in found)


def test_image_with_python_version_warns_that_the_lock_uses_it(tmp_path: Path) -> None:
    config = "model: {id: m}\nbuild_info:\n  image: python:3.11-slim\n  python_version: '3.11'\n"
    model_dir = load(make_dir(tmp_path, config))
    assert model_dir.config.build_info.python_version == "3.11"  # used: the lock targets it
    (warning,) = model_dir.warnings
    assert (warning.path, warning.line) == ("build_info.python_version", 4)
    assert "must be that image's Python" in warning.message and "ignored" not in warning.message


def test_base_image_alias(tmp_path: Path) -> None:
    model_dir = load(make_dir(tmp_path, "model: {id: m}\nbuild_info: {base_image: 'python:3.11-slim'}\n"))
    assert model_dir.config.build_info.image == "python:3.11-slim"


def test_unquoted_python_version_number_is_accepted(tmp_path: Path) -> None:
    model_dir = load(make_dir(tmp_path, "model: {id: m}\nbuild_info: {python_version: 3.11}\n"))
    assert model_dir.config.build_info.python_version == "3.11"


def test_concepts_secrets_threads_and_unknown_sections(tmp_path: Path) -> None:
    config = """
    model:
      id: clf
      model_type_id: visual-classifier
    concepts:
      - id: cat
        name: Cat
      - id: 7
    secrets:
      - id: api
        env_var: OPENAI_API_KEY
        type: env
        description: Key for the backend
    num_threads: 4
    toolkit: {provider: x}
    agents: {}
    """
    model_dir = load(make_dir(tmp_path, config))
    config_ = model_dir.config
    assert [(c.id, c.name) for c in config_.concepts] == [("cat", "Cat"), ("7", "7")]
    assert config_.secrets[0].env_var == "OPENAI_API_KEY"
    assert config_.num_threads == 4
    assert config_.extra_sections == ("agents", "toolkit")
    assert sorted(w.path for w in model_dir.warnings) == ["agents", "toolkit"]


def test_classifier_concepts_may_come_from_checkpoint(tmp_path: Path) -> None:
    config = """
    model: {id: vit, model_type_id: visual-classifier}
    checkpoints: {type: huggingface, repo_id: google/vit-base-patch16-224, when: upload}
    """
    assert load(make_dir(tmp_path, config)).config.concepts == ()


def test_unknown_model_type_is_a_warning_with_suggestion(tmp_path: Path) -> None:
    report = validate(make_dir(tmp_path, "model:\n  id: m\n  model_type_id: text-to-txt\n"))
    assert report.valid
    (warning,) = report.warnings
    assert (warning.line, warning.column, warning.path) == (3, 18, "model.model_type_id")
    assert "did you mean 'text-to-text'" in warning.message


def test_literal_hf_token_warns_without_echoing_it(tmp_path: Path) -> None:
    config = "model: {id: m}\ncheckpoints:\n  type: huggingface\n  repo_id: a/b\n  hf_token: hf_SECRETVALUE\n"
    report = validate(make_dir(tmp_path, config))
    assert report.valid
    (warning,) = report.warnings
    assert warning.path == "checkpoints.hf_token" and warning.line == 5
    assert "HF_TOKEN" in warning.message
    assert "hf_SECRETVALUE" not in warning.message


@pytest.mark.parametrize(
    "token_yaml",
    ["[hf_LeakMe123456]", "{value: hf_LeakMe123456}", "12345678901234567890"],
)
def test_mistyped_hf_token_is_reported_without_its_value(tmp_path: Path, token_yaml: str) -> None:
    config = (
        f"model: {{id: m}}\ncheckpoints:\n  type: huggingface\n  repo_id: a/b\n  hf_token: {token_yaml}\n"
    )
    report = validate(make_dir(tmp_path, config))
    (error,) = report.errors
    assert (error.line, error.column, error.path) == (5, 13, "checkpoints.hf_token")
    assert error.message.startswith("expected a string or null, got ")
    assert "LeakMe" not in error.format() and "1234567890" not in error.format()


def test_public_api_is_exported() -> None:
    assert modelpack.load is load
    assert modelpack.validate is validate


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", 0.5),
        ("1", 1.0),
        ("2Gi", 2 * 2**30),
        ("500Mi", 500 * 2**20),
        ("1.5", 1.5),
        (2, 2.0),
        ("1e3", 1000.0),
    ],
)
def test_parse_quantity(text: str | int, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["2 cores", "-1", "Gi", "1.2.3", True, None, "500mb"])
def test_parse_quantity_rejects(text: object) -> None:
    assert parse_quantity(text) is None


# --------------------------------------------------------------------------- invalid configs

INVALID = [
    # (id, config, line, column, path, message fragment)
    (
        "missing-model",
        "build_info: {python_version: '3.11'}\n",
        1,
        1,
        "model",
        "missing required section 'model'",
    ),
    ("missing-id", "model:\n  user_id: me\n", 1, 1, "model", "missing required field 'id'"),
    ("dot-in-id", "model:\n  id: my.model\n", 2, 7, "model.id", "invalid format"),
    ("bidi-in-id", 'model:\n  id: "ab\\u202ecd"\n', 2, 7, "model.id", "invalid format"),
    ("slash-in-id", "model:\n  id: a/b\n", 2, 7, "model.id", "invalid format"),
    ("empty-id", "model:\n  id: ''\n", 2, 7, "model.id", "is empty"),
    ("id-not-string", "model:\n  id: [a]\n", 2, 7, "model.id", "expected a string, got a list"),
    ("unknown-model-key", "model:\n  id: m\n  userid: me\n", 3, 3, "model.userid", "did you mean 'user_id'"),
    (
        "python-3.10-float",
        "model: {id: m}\nbuild_info:\n  python_version: 3.10\n",
        3,
        19,
        "build_info.python_version",
        'quote it: python_version: "3.10"',
    ),
    (
        "python-bad-format",
        "model: {id: m}\nbuild_info:\n  python_version: 'three'\n",
        3,
        19,
        "build_info.python_version",
        "not a version like 3.11",
    ),
    (
        "cuda-bad",
        "model: {id: m}\nbuild_info:\n  cuda_version: 'cu124'\n",
        3,
        17,
        "build_info.cuda_version",
        "not a version like 12.4",
    ),
    (
        "bad-quantity",
        "model: {id: m}\ninference_compute_info:\n  cpu_memory: 2 gigs\n",
        3,
        15,
        "inference_compute_info.cpu_memory",
        "not a Kubernetes quantity",
    ),
    (
        "requests-over-limit",
        "model: {id: m}\ninference_compute_info:\n  cpu_limit: '1'\n  cpu_requests: '2'\n",
        4,
        17,
        "inference_compute_info.cpu_requests",
        "more than cpu_limit",
    ),
    (
        "negative-gpus",
        "model: {id: m}\ninference_compute_info:\n  num_accelerators: -2\n",
        3,
        21,
        "inference_compute_info.num_accelerators",
        "use a number >= 0",
    ),
    (
        "gpus-not-int",
        "model: {id: m}\ninference_compute_info:\n  num_accelerators: one\n",
        3,
        21,
        "inference_compute_info.num_accelerators",
        "expected an integer",
    ),
    (
        "unknown-ici-key",
        "model: {id: m}\ninference_compute_info:\n  gpu_count: 1\n",
        3,
        3,
        "inference_compute_info.gpu_count",
        "unknown key 'gpu_count'",
    ),
    (
        "unknown-instance",
        "model: {id: m}\ncompute:\n  instance: a10gg\n",
        3,
        13,
        "compute.instance",
        "did you mean 'a10g'",
    ),
    (
        "gpus-on-cpu-instance",
        "model: {id: m}\ncompute:\n  instance: cpu\n  num_gpus: 1\n",
        4,
        13,
        "compute.num_gpus",
        "has no GPU",
    ),
    ("unknown-gpu", "model: {id: m}\ncompute:\n  gpu: Z100\n", 3, 8, "compute.gpu", "unknown GPU 'Z100'"),
    (
        "checkpoint-type",
        "model: {id: m}\ncheckpoints:\n  type: hugginface\n  repo_id: a/b\n",
        3,
        9,
        "checkpoints.type",
        "did you mean 'huggingface'",
    ),
    (
        "checkpoint-when",
        "model: {id: m}\ncheckpoints:\n  type: huggingface\n  repo_id: a/b\n  when: later\n",
        5,
        9,
        "checkpoints.when",
        "use one of: runtime, build, upload",
    ),
    (
        "checkpoint-no-repo",
        "model: {id: m}\ncheckpoints:\n  type: huggingface\n",
        2,
        1,
        "checkpoints",
        "missing required field 'repo_id'",
    ),
    (
        "checkpoint-bad-repo",
        "model: {id: m}\ncheckpoints:\n  type: huggingface\n  repo_id: 'a b/c'\n",
        4,
        12,
        "checkpoints.repo_id",
        "owner/name",
    ),
    (
        "patterns-wrong-type",
        "model: {id: m}\ncheckpoints:\n  type: huggingface\n  repo_id: a/b\n  allowed_file_patterns: 3\n",
        5,
        26,
        "checkpoints.allowed_file_patterns",
        "glob pattern",
    ),
    (
        "classifier-without-concepts",
        "model:\n  id: m\n  model_type_id: visual-classifier\n",
        3,
        18,
        "model.model_type_id",
        "needs concepts",
    ),
    (
        "concepts-on-llm",
        "model:\n  id: m\n  model_type_id: text-to-text\nconcepts:\n  - id: a\n",
        4,
        1,
        "concepts",
        "concepts are only for",
    ),
    (
        "duplicate-concept",
        "model: {id: m, model_type_id: visual-detector}\nconcepts:\n  - {id: a, name: A}\n  - {id: a, name: B}\n",
        4,
        10,
        "concepts[1].id",
        "duplicate concept id 'a'",
    ),
    (
        "concept-empty-name",
        "model: {id: m, model_type_id: text-classifier}\nconcepts:\n  - id: a\n    name: '  '\n",
        4,
        11,
        "concepts[0].name",
        "concept name is empty",
    ),
    (
        "concept-space-twin",
        "model: {id: m, model_type_id: text-classifier}\nconcepts:\n  - {id: a, name: 'big cat'}\n"
        "  - {id: b, name: 'big  cat'}\n",
        4,
        19,
        "concepts[1].name",
        "only by spacing",
    ),
    (
        "secret-value",
        "model: {id: m}\nsecrets:\n  - id: k\n    env_var: API_KEY\n    value: hunter2\n",
        5,
        5,
        "secrets[0].value",
        "never hold a value",
    ),
    (
        "secret-bad-env",
        "model: {id: m}\nsecrets:\n  - id: k\n    env_var: 1KEY\n",
        4,
        14,
        "secrets[0].env_var",
        "not a valid environment variable name",
    ),
    (
        "secret-dup-id",
        "model: {id: m}\nsecrets:\n  - {id: k, env_var: A}\n  - {id: k, env_var: B}\n",
        4,
        10,
        "secrets[1].id",
        "duplicate secret id 'k'",
    ),
    ("num-threads-zero", "model: {id: m}\nnum_threads: 0\n", 2, 14, "num_threads", ">= 1"),
    ("duplicate-key", "model:\n  id: m\n  id: n\n", 3, 3, "model.id", "duplicate key 'id'"),
    (
        "image-and-base-image",
        "model: {id: m}\nbuild_info:\n  image: a:1\n  base_image: b:2\n",
        4,
        3,
        "build_info.base_image",
        "different images",
    ),
    ("yaml-syntax", "model:\n  id: m\n  bad: [1, 2\n", 4, 1, "", "invalid YAML"),
    ("top-level-list", "- model\n- id\n", 1, 1, "", "top level must be a mapping"),
    ("control-character", "model: {id: m}\nx: a\x08b\n", 2, 5, "", "unacceptable character #x0008"),
    ("recursive-alias", "a: &x [*x]\nmodel: {id: m}\n", 1, 4, "", "recursive alias"),
    ("recursive-alias-mapping", "a: &x {b: *x}\nmodel: {id: m}\n", 1, 4, "", "recursive alias"),
    (
        "alias-bomb",
        "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7))
        + "model: {id: m}\n",
        1,
        37,
        "",
        "values once aliases are expanded",
    ),
    (
        "section-not-mapping",
        "model: {id: m}\ninference_compute_info: 4\n",
        2,
        25,
        "inference_compute_info",
        "expected a mapping, got an integer",
    ),
]


@pytest.mark.parametrize(
    ("config", "line", "column", "path", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_invalid_config_is_located(
    tmp_path: Path, config: str, line: int, column: int, path: str, fragment: str
) -> None:
    report = validate(make_dir(tmp_path, config))
    assert not report.valid
    matching = [e for e in report.errors if e.path == path and fragment in e.message]
    assert matching, [e.format() for e in report.errors]
    error = matching[0]
    assert (error.file.endswith("config.yaml"), error.line, error.column) == (True, line, column)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    config = "model:\n  id: a.b\n  extra: 1\nnum_threads: 0\ncompute:\n  instance: nope\n"
    report = validate(make_dir(tmp_path, config))
    assert [(e.line, e.path) for e in report.errors] == [
        (2, "model.id"),
        (3, "model.extra"),
        (4, "num_threads"),
        (6, "compute.instance"),
    ]


def test_load_raises_config_error_with_diagnostics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(make_dir(tmp_path, "model:\n  id: a.b\n"))
    assert info.value.exit_code == 2
    assert [d.path for d in info.value.diagnostics] == ["model.id"]


# --------------------------------------------------------------------------- other files


def test_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    report = validate(root)
    assert sorted(Path(e.file).name for e in report.errors) == ["config.yaml", "model.py", "requirements.txt"]


def test_missing_directory(tmp_path: Path) -> None:
    report = validate(tmp_path / "nope")
    assert not report.valid and "does not exist" in report.errors[0].message


def test_empty_config(tmp_path: Path) -> None:
    report = validate(make_dir(tmp_path, "   \n"))
    assert [(e.line, e.message.split(";")[0]) for e in report.errors] == [(1, "config.yaml is empty")]


def test_comment_only_config(tmp_path: Path) -> None:
    report = validate(make_dir(tmp_path, "# nothing\n"))
    assert "no content" in report.errors[0].message


def test_model_py_syntax_error_is_located(tmp_path: Path) -> None:
    report = validate(
        make_dir(tmp_path, "model: {id: m}\n", model_py="class M:\n    def f(self)\n        pass\n")
    )
    (error,) = report.errors
    assert error.file.endswith("1/model.py") and error.line == 2
    assert "syntax error" in error.message


def test_requirement_errors_are_located(tmp_path: Path) -> None:
    requirements = "# deps\nnumpy>=1.26 ; python_version >= '3.9'\nscipy~=1.11\nfoo!=1.0\ntorch=2.0\nNumPy==2.0 ; python_version >= '3.9'\n"
    report = validate(make_dir(tmp_path, "model: {id: m}\n", requirements))
    assert [(Path(e.file).name, e.line) for e in report.errors] == [
        ("requirements.txt", 5),
        ("requirements.txt", 6),
    ]
    assert "invalid requirement 'torch=2.0'" in report.errors[0].message
    assert "already required on line 2" in report.errors[1].message


def test_requirements_pip_syntax(tmp_path: Path) -> None:
    requirements = textwrap.dedent(
        """\
        --extra-index-url https://download.pytorch.org/whl/cpu
        torch==2.5.1+cpu ; sys_platform == "linux"
        transformers[torch]>=4.40,!=4.41.0  # comment
        requests @ https://example.com/requests-2.32.0-py3-none-any.whl
        six==1.16.0 \\
            --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
        """
    )
    model_dir = load(make_dir(tmp_path, "model: {id: m}\n", requirements))
    names = [(r.line, r.name) for r in model_dir.requirements]
    assert names == [(1, None), (2, "torch"), (3, "transformers"), (4, "requests"), (5, "six")]
    assert model_dir.requirements[1].specifier == "==2.5.1+cpu"
    assert model_dir.requirements[2].extras == ("torch",)
    assert model_dir.requirements[4].hashes[0].startswith("sha256:8abb")


def test_requirements_attached_short_option_is_accepted(tmp_path: Path) -> None:
    root = make_dir(tmp_path, "model: {id: m}\n", "-rextra.txt\n-cconstraints.txt\nsix\n")
    model_dir = load(root)
    assert [(r.line, r.name, r.text) for r in model_dir.requirements] == [
        (1, None, "-rextra.txt"),
        (2, None, "-cconstraints.txt"),
        (3, "six", "six"),
    ]
    report = validate(make_dir(tmp_path / "x", "model: {id: m}\n", "-qextra.txt\n"))
    assert [(e.line, e.message.split(";")[0]) for e in report.errors] == [(1, "unknown option '-qextra.txt'")]


def test_requirement_errors_never_echo_url_credentials(tmp_path: Path) -> None:
    requirements = 'pkg @ https://user:SeCrEt-tok@host.example/pkg.whl ; python_version >>> "3"\n'
    report = validate(make_dir(tmp_path, "model: {id: m}\n", requirements))
    (error,) = report.errors
    assert error.line == 1 and "invalid requirement 'pkg @ https://***@host.example/pkg.whl" in error.message
    assert "SeCrEt" not in error.format()


def test_stale_lock_is_reported_as_a_warning(tmp_path: Path) -> None:
    root = make_dir(tmp_path, "model: {id: m}\nbuild_info: {python_version: '3.11'}\n", "six==1.16.0\n")
    (root / "requirements.lock").write_text(
        "# requirements.lock: generated by `modelpack lock`; do not edit.\n"
        "# input-digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
        "# format: modelpack-lock/1\n"
    )
    report = validate(root)
    assert report.valid
    (warning,) = report.warnings
    assert warning.file.endswith("requirements.lock")
    assert "no longer matches requirements.txt" in warning.message


def test_bundled_example_locks_are_current() -> None:
    from modelpack.pipeline.locking import lock_status
    from modelpack.pipeline.resolver import resolve

    examples = Path(__file__).resolve().parents[2] / "examples"
    for example in sorted(p for p in examples.iterdir() if (p / "config.yaml").is_file()):
        model_dir = load(example)
        assert lock_status(model_dir, resolve(model_dir)) == "up-to-date", (
            f"run `modelpack lock {example}` and commit the lock"
        )


# --------------------------------------------------------------------------- schema memo


def test_a_document_valid_once_skips_jsonschema_next_time(
    tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jsonschema

    from modelpack.project import config as config_mod
    root = make_dir(tmp_path, "model:\n  id: memo-test\n")
    load(root)
    memos = list((own_cache / "modelpack" / "valid-configs").rglob("*"))
    assert [m for m in memos if m.is_file()]

    class Refuse:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("jsonschema was consulted for a document it already passed")

    monkeypatch.setattr(jsonschema, "Draft202012Validator", Refuse)
    assert load(root).config.model.id == "memo-test"
    # another document, or another schema, is validated again
    (root / "config.yaml").write_text("model:\n  id: memo-test-2\n")
    with pytest.raises(AssertionError, match="already passed"):
        load(root)
    real_read = config_mod.read_text
    monkeypatch.setattr(config_mod, "read_text", lambda *parts: real_read(*parts) + " ")
    (root / "config.yaml").write_text("model:\n  id: memo-test\n")
    with pytest.raises(AssertionError, match="already passed"):
        load(root)


@pytest.mark.usefixtures("own_cache")  # its cache, by XDG_CACHE_HOME, is the child's too
def test_the_executable_validates_without_jsonschemas_format_packages(tmp_path: Path) -> None:
    """jsonschema imports the packages of its format checkers when they are installed, and
    rfc3987_syntax builds a grammar then (seconds). modelpack's schemas assert no format: the
    `modelpack` executable's first `validate` imports none of them."""
    installed = [name for name in FORMAT_CHECK_PACKAGES if importlib.util.find_spec(name) is not None]
    if not installed:
        pytest.skip("none of jsonschema's format packages is installed")
    root = make_dir(tmp_path, "model:\n  id: format-test\n")
    seen = tmp_path / "modules.json"
    probe = textwrap.dedent(
        f"""
        import atexit, json, pathlib, sys
        def note():  # the executable runs exit handlers before it ends the process
            names = [name for name in ["jsonschema", *{installed!r}] if sys.modules.get(name) is not None]
            pathlib.Path({str(seen)!r}).write_text(json.dumps(names))
        atexit.register(note)
        sys.argv = ["modelpack", "validate", {str(root)!r}]
        from modelpack.cli import run
        run()
        """
    )
    # a cache of its own (own_cache): no memo, so jsonschema is used
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(seen.read_text()) == ["jsonschema"]  # consulted, without the format packages


@pytest.mark.usefixtures("own_cache")  # its cache, by XDG_CACHE_HOME, is the child's too
def test_a_program_importing_modelpack_keeps_jsonschemas_format_checkers(tmp_path: Path) -> None:
    """Only the executable owns its process: as a library, modelpack loads jsonschema as it is,
    so the program's own `format` checks keep their checkers."""
    installed = [name for name in FORMAT_CHECK_PACKAGES if importlib.util.find_spec(name) is not None]
    if not installed:
        pytest.skip("none of jsonschema's format packages is installed")
    root = make_dir(tmp_path, "model:\n  id: format-test\n")
    probe = textwrap.dedent(
        f"""
        import sys
        from modelpack.project.config import load
        assert load({str(root)!r}).config.model.id == "format-test"
        assert "jsonschema" in sys.modules, "the schema was not consulted"
        print(sorted(name for name in {installed!r} if name in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(installed))


def test_invalid_documents_are_never_remembered(tmp_path: Path, own_cache: Path) -> None:
    root = make_dir(tmp_path, "model:\n  id: x\n  colour: blue\n")
    for _ in range(2):
        with pytest.raises(ConfigError) as error:
            load(root)
        assert "colour" in str(error.value.diagnostics[0].message)
    assert not (own_cache / "modelpack" / "valid-configs").exists()
