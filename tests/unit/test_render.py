"""Render stage: layer order, secrets kept out of the final image, determinism, ignore rules,
symlinks, --use-dockerfile, and the CLI staying light."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from example_copy import copy_example

from modelpack.errors import RenderError
from modelpack.pipeline import runtime_library
from modelpack.pipeline.locking import LockedPackage, LockResult
from modelpack.pipeline.rendering import RenderResult, dockerfile_quote, render
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.settings import BuildSettings
from modelpack.project.config import load
from modelpack.project.ignore import default_rules, load_rules
from modelpack.project.method_types import InputSpec, MethodSignature, ModelSignature
from modelpack.project.model_dir import (
    BuildInfo,
    ComputeRequirements,
    ModelConfig,
    ModelDir,
    ModelInfo,
    RequirementLine,
)
from modelpack.project.requirements import shipped_requirements
from modelpack.resources import SETTLE_NS
from tests.unit import fakes

render_mod = importlib.import_module("modelpack.pipeline.rendering")

RESOLVED = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch: CPU Python base")
SIGNATURE = ModelSignature(
    "Hello",
    "ModelClass",
    (
        MethodSignature(
            "predict", "unary-unary", (InputSpec("prompt", "str", True),), "str", 'Say "hi" $HOME'
        ),
    ),
)
SECRET = "t0p-s3cret-pw"
INDEX = f"https://builder:{SECRET}@pypi.internal.example/simple"
CA_MARKER = "MODELPACK-TEST-CA-MARKER-7f3a"


def make_model(root: Path, model_code: str = "print('hello')\n") -> ModelDir:
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.py").write_text(model_code, encoding="utf-8")
    (root / "config.yaml").write_text('model:\n  id: hello\nbuild_info:\n  python_version: "3.11"\n')
    (root / "requirements.txt").write_text("six==1.17.0\n", encoding="utf-8")
    (root / "requirements.lock").write_text(
        "# input-digest: sha256:00\nsix==1.17.0 \\\n    --hash=sha256:aa\n", encoding="utf-8"
    )
    config = ModelConfig(ModelInfo("hello"), BuildInfo("3.11"), ComputeRequirements())
    return ModelDir(root, config, (RequirementLine(1, "six==1.17.0", "six", "==1.17.0"),))


def lock_of(model: ModelDir) -> LockResult:
    return LockResult(
        model.root / "requirements.lock", True, (LockedPackage("six", "1.17.0", ("sha256:aa",)),), "sha256:00"
    )


def do_render(
    model: ModelDir, out: Path, settings: BuildSettings | None = None, **kw: object
) -> RenderResult:
    return render(
        model,
        out,
        resolved=RESOLVED,
        lock=lock_of(model),
        signature=SIGNATURE,
        settings=settings or BuildSettings(),
        **kw,  # type: ignore[arg-type]
    )


def stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuations joined, comments dropped) grouped by FROM."""
    instructions: list[str] = []
    current = ""
    for line in dockerfile.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        instructions.append((current + line.strip()).strip())
        current = ""
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.startswith("FROM "):
            result.append([])
        result[-1].append(instruction)
    return result


@pytest.fixture
def model(tmp_path: Path) -> ModelDir:
    return make_model(tmp_path / "model")


# --------------------------------------------------------------------------- layout and layers


def test_layer_order_and_runtime_settings(model: ModelDir, tmp_path: Path) -> None:
    result = do_render(model, tmp_path / "out")
    deps, runtime, code = stages(result.dockerfile.read_text(encoding="utf-8"))
    assert deps[0] == "FROM modelpack-base/python:3.11 AS deps"
    install = next(i for i in deps if i.startswith("RUN "))
    assert "-m venv --system-site-packages /opt/venv" in install
    assert "--require-hashes --no-deps -r /tmp/modelpack-build/requirements.lock" in install
    assert runtime[0] == "FROM modelpack-base/python:3.11 AS runtime"
    assert code[:2] == ["FROM runtime", "COPY app/ /app/"]  # the code stage: one layer, then settings
    assert not any(i.startswith(("RUN ", "COPY ")) for i in code[2:])
    final = runtime + code[1:]
    kinds = [i.split()[0] + (" " + i.split()[1] if i.startswith("COPY") else "") for i in final]
    copies = [i for i in final if i.startswith("COPY")]
    assert copies == [
        "COPY --from=deps /opt/venv /opt/venv",
        "COPY runtime/ /opt/modelpack/lib/",
        "COPY checkpoints/ /app/1/checkpoints/",
        "COPY config/config.yaml /app/config.yaml",
        "COPY app/ /app/",
    ]
    user_run = next(i for i in final if i.startswith("RUN "))
    assert final.index(user_run) < final.index(copies[0])  # system layer before deps
    assert "modelpack:x:10001:10001:" in user_run
    assert kinds[-1] == "LABEL"  # labels last
    env = next(i for i in final if i.startswith("ENV "))
    assert "PYTHONPATH=/opt/modelpack/lib" in env and "PORT=8080" in env
    assert "WORKDIR /app" in final and "USER 10001:10001" in final and "EXPOSE 8080" in final
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "modelpack.runtime", "/app"]' in final
    health = next(i for i in final if i.startswith("HEALTHCHECK"))
    assert "urllib.request" in health and "/health" in health
    assert set(result.files) >= {
        "Dockerfile",
        "context.sha256",
        "builder/requirements.lock",
        "checkpoints/.keep",
        "app/1/model.py",
        "app/requirements.txt",
        "config/config.yaml",
        "runtime/modelpack/__init__.py",
        "runtime/modelpack/runtime/server.py",
    }
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in result.files)
    assert not any(
        f.startswith("app/") and f.endswith(("config.yaml", "requirements.lock")) for f in result.files
    )


def test_model_code_change_keeps_dependency_layers(model: ModelDir, tmp_path: Path) -> None:
    first = do_render(model, tmp_path / "a")
    (model.root / "1" / "model.py").write_text("print('changed')\n", encoding="utf-8")
    second = do_render(model, tmp_path / "b")
    text_a = first.dockerfile.read_text(encoding="utf-8")
    text_b = second.dockerfile.read_text(encoding="utf-8")
    head = text_a.split("COPY app/")[0]
    assert text_b.startswith(head)  # every instruction before the code layer is unchanged
    for rel in ("builder/requirements.lock", "runtime/modelpack/__init__.py", "checkpoints/.keep"):
        assert (first.out_dir / rel).read_bytes() == (second.out_dir / rel).read_bytes()
    assert first.content_digest != second.content_digest


def test_labels(model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = BuildSettings(version="v3", revision="abc123", source_date_epoch=1700000000)
    result = do_render(model, tmp_path / "out", settings)
    labels = result.labels
    assert labels["org.opencontainers.image.title"] == "hello"
    assert labels["org.opencontainers.image.version"] == "v3"
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["dev.modelpack.model-id"] == "hello"
    assert json.loads(labels["dev.modelpack.signature"]) == SIGNATURE.to_dict()
    assert json.loads(labels["dev.modelpack.resolve"]) == RESOLVED.to_dict()
    import hashlib

    for key, name in (
        ("config", "config.yaml"),
        ("requirements", "requirements.txt"),
        ("lock", "requirements.lock"),
    ):
        expected = "sha256:" + hashlib.sha256((model.root / name).read_bytes()).hexdigest()
        assert labels[f"dev.modelpack.{key}-digest"] == expected
    dockerfile = result.dockerfile.read_text(encoding="utf-8")
    for key, value in labels.items():
        assert f"{dockerfile_quote(key)}={dockerfile_quote(value)}" in dockerfile
    # without SOURCE_DATE_EPOCH there is no creation time: renders stay byte-identical
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    plain = do_render(model, tmp_path / "plain")
    assert "org.opencontainers.image.created" not in plain.labels


def test_build_names_do_not_change_content_digest(model: ModelDir, tmp_path: Path) -> None:
    a = do_render(model, tmp_path / "a", BuildSettings(version="v1", revision="r1", source_date_epoch=1))
    b = do_render(model, tmp_path / "b", BuildSettings(version="v2"))
    assert a.content_digest == b.content_digest
    other_base = ResolveResult("3.11", None, None, "cpu", "other/python:3.11", "x")
    c = render(model, tmp_path / "c", resolved=other_base, lock=lock_of(model))
    assert c.content_digest != b.content_digest


def test_dockerfile_quote() -> None:
    assert dockerfile_quote('a "b" \\ $HOME\nx') == '"a \\"b\\" \\\\ \\$HOME\\nx"'


def test_templates_are_strict() -> None:
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render_mod._template_env().from_string("{{ missing }}").render()


# --------------------------------------------------------------------------- secrets


def test_secrets_stay_in_the_builder_stage(model: ModelDir, tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text(f"-----BEGIN CERTIFICATE-----\n{CA_MARKER}\n-----END CERTIFICATE-----\n", encoding="utf-8")
    extra = f"https://x:{SECRET}2@mirror.example/simple"
    settings = BuildSettings(ca_bundle=ca, index_url=INDEX, extra_index_urls=(extra,))
    result = do_render(model, tmp_path / "out", settings)
    dockerfile = result.dockerfile.read_text(encoding="utf-8")
    deps, *image_stages = stages(dockerfile)
    final = [i for stage in image_stages for i in stage]  # runtime + code: what the image is

    assert result.build_args == {"PIP_INDEX_URL": INDEX, "PIP_EXTRA_INDEX_URL": extra}
    assert "ARG PIP_INDEX_URL" in deps and "ARG PIP_EXTRA_INDEX_URL" in deps
    assert any(i.startswith("COPY builder/ca-bundle.crt ") for i in deps)
    for instruction in final:
        assert not instruction.startswith(("ARG", "ONBUILD")), instruction
        for needle in (
            "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL",
            "ca-bundle",
            "builder/",
            "PIP_CERT",
            "SSL_CERT",
        ):
            assert needle not in instruction, (needle, instruction)
    assert not any(i.startswith("COPY --from") and "/tmp" in i for i in final)

    # no secret value in any file of the context; the CA only under builder/
    for rel in result.files:
        data = (result.out_dir / rel).read_bytes()
        assert SECRET.encode() not in data, rel
        assert b"pypi.internal.example" not in data and b"mirror.example" not in data, rel
        if CA_MARKER.encode() in data:
            assert rel == "builder/ca-bundle.crt"
    # names only in the JSON form
    as_dict = result.to_dict()
    assert as_dict["build_args"] == ["PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"]
    assert SECRET not in json.dumps(as_dict) and SECRET not in repr(result)
    # host-specific builder settings do not change what the image is
    assert do_render(model, tmp_path / "plain").content_digest == result.content_digest


def test_index_options_in_requirements_reach_only_the_builder_stage(tmp_path: Path) -> None:
    """`--extra-index-url http://user:TOKEN@host/simple` written in requirements.txt (and in a file it
    includes) is how the build reaches a private index, and is in no file of the image."""
    root = tmp_path / "model"
    make_model(root)
    extra = f"http://ci:{SECRET}@pypi.internal.example/simple"
    (root / "requirements.txt").write_text(
        f"six==1.17.0\n--extra-index-url {extra}\n-i https://u:{SECRET}9@main.example/simple\n-r more.txt\n",
        encoding="utf-8",
    )
    (root / "more.txt").write_text(f"--extra-index-url=https://t:{SECRET}8@third.example/simple\n")
    model = load(root)
    result = do_render(model, tmp_path / "out")
    assert result.build_args == {  # the included file's index counts as if written here
        "PIP_INDEX_URL": f"https://u:{SECRET}9@main.example/simple",
        "PIP_EXTRA_INDEX_URL": f"{extra} https://t:{SECRET}8@third.example/simple",
    }
    for rel in result.files:
        assert SECRET.encode() not in (result.out_dir / rel).read_bytes(), rel
    shipped = (result.out_dir / "app" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert shipped[0] == "six==1.17.0" and shipped[3] == "-r more.txt" and len(shipped) == 4
    assert "index" not in (result.out_dir / "app" / "more.txt").read_text().replace("index option", "")


def test_requirements_ship_as_the_user_wrote_them(tmp_path: Path) -> None:
    """Windows line ends, no final line end, non-ASCII text and bytes that are not UTF-8 (in an
    included file: validate reads only requirements.txt as UTF-8) reach the context unchanged;
    an index option's lines are blanked, each keeping its line end."""
    root = tmp_path / "model"
    make_model(root)
    written = "six==1.17.0 \\\r\n  --hash=sha256:aa  # é\r\n-r more.txt\r\nidna"
    (root / "requirements.txt").write_bytes(written.encode("utf-8"))
    more = b"attrs  # caf\xe9, Latin-1\r\n--index-url https://u:p@h.example/simple\r\nsix\r\n"
    (root / "more.txt").write_bytes(more)
    result = do_render(load(root), tmp_path / "out")
    assert (result.out_dir / "app" / "requirements.txt").read_bytes() == written.encode("utf-8")
    blanked = more.replace(b"--index-url https://u:p@h.example/simple", b"# (index option removed by modelpack)")
    assert (result.out_dir / "app" / "more.txt").read_bytes() == blanked


def test_shipped_requirements_keep_lines_and_drop_credentials() -> None:
    text = "a==1\n--index-url \\\n  https://u:p@h/simple\nb @ https://u:tok@h/b.whl\n--trusted-host h\n"
    shipped = shipped_requirements(text)
    assert shipped.splitlines()[0] == "a==1" and len(shipped.splitlines()) == 5
    assert "u:p@" not in shipped and "tok" not in shipped and "trusted" not in shipped
    assert "b @ https://***@h/b.whl" in shipped


def test_missing_ca_bundle_is_an_input_error(model: ModelDir, tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="CA bundle"):
        do_render(model, tmp_path / "out", BuildSettings(ca_bundle=tmp_path / "nope.pem"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- determinism


def test_dockerfile_is_rendered_once_per_inputs(
    model: ModelDir, tmp_path: Path, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same inputs: the Dockerfile comes from the cache, without Jinja; any changed input, a
    changed renderer or a corrupt entry renders again; the cache holds no secret."""
    secret_settings = BuildSettings(index_url=INDEX, builder="buildkit")
    first = do_render(model, tmp_path / "a", secret_settings)
    entries = sorted((own_cache / "modelpack" / "dockerfiles").iterdir())
    assert entries  # the Dockerfile (and the one without build names, when it differs)
    assert all(SECRET not in entry.read_text() for entry in entries)

    def no_jinja() -> None:
        raise AssertionError("the template was compiled again")

    compile_template, code_key = render_mod._template_env, render_mod._code_key
    monkeypatch.setattr(render_mod, "_template_env", no_jinja)
    again = do_render(model, tmp_path / "b", secret_settings)
    assert again.dockerfile.read_text() == first.dockerfile.read_text()
    assert again.content_digest == first.content_digest
    with pytest.raises(AssertionError, match="compiled again"):  # a changed label is a miss
        do_render(model, tmp_path / "c", BuildSettings(index_url=INDEX, builder="buildkit", version="v9"))
    monkeypatch.setattr(render_mod, "_code_key", lambda: ["another renderer"])
    with pytest.raises(AssertionError, match="compiled again"):
        do_render(model, tmp_path / "d", secret_settings)

    monkeypatch.setattr(render_mod, "_template_env", compile_template)
    monkeypatch.setattr(render_mod, "_code_key", code_key)
    for entry in entries:
        entry.write_text("{not json")
    fresh = do_render(model, tmp_path / "e", secret_settings)
    assert fresh.dockerfile.read_text() == first.dockerfile.read_text()
    assert all(json.loads(entry.read_text())["text"] for entry in entries)  # written again


def test_rendering_is_deterministic(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "1" / "run.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    os.chmod(model.root / "1" / "run.sh", 0o700)
    os.chmod(model.root / "1" / "model.py", 0o600)
    a = do_render(model, tmp_path / "a")
    os.utime(model.root / "1" / "model.py", (1, 1))
    b = do_render(model, tmp_path / "b")
    assert a.files == b.files == tuple(sorted(a.files))
    assert a.dockerfile.read_bytes() == b.dockerfile.read_bytes()
    assert (a.out_dir / "context.sha256").read_bytes() == (b.out_dir / "context.sha256").read_bytes()
    assert a.content_digest == b.content_digest and a.labels == b.labels
    manifest = (a.out_dir / "context.sha256").read_text(encoding="utf-8").splitlines()
    listed = [line.split("  ", 1)[1] for line in manifest]
    assert listed == sorted(f for f in a.files if f != "context.sha256")
    for line in manifest:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((a.out_dir / rel).read_bytes()).hexdigest() == digest
    for out in (a.out_dir, b.out_dir):
        assert (out / "app/1/run.sh").stat().st_mode & 0o777 == 0o755
        assert (out / "app/1/model.py").stat().st_mode & 0o777 == 0o644
        assert (out / "app/1").stat().st_mode & 0o777 == 0o755
        assert out.stat().st_mode & 0o777 == 0o755
        assert {p.stat().st_mtime for p in out.rglob("*")} == {render_mod.DEFAULT_EPOCH}


def test_a_render_from_what_the_process_read_is_the_same(
    model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second render takes the runtime library (bytes and digests) from this process's memory:
    the same context, byte for byte, with the same digests, and no library file read again."""
    monkeypatch.setattr(runtime_library, "_READ", {})
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 2 * SETTLE_NS)  # every file is settled
    cold = do_render(model, tmp_path / "cold", BuildSettings(builder="buildkit"))
    read = fakes.files_read(monkeypatch)
    warm = do_render(model, tmp_path / "warm", BuildSettings(builder="buildkit"))
    assert not [path for path in read if "/modelpack/" in path]
    assert warm.content_digest == cold.content_digest and warm.files == cold.files
    for rel in cold.files:
        before, after = cold.out_dir / rel, warm.out_dir / rel
        assert before.read_bytes() == after.read_bytes(), rel
        assert (before.stat().st_mode, before.stat().st_mtime_ns) == (after.stat().st_mode, after.stat().st_mtime_ns)
    for line in (warm.out_dir / "context.sha256").read_text(encoding="utf-8").splitlines():
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((warm.out_dir / rel).read_bytes()).hexdigest() == digest, rel


def test_source_date_epoch_sets_mtimes(
    model: ModelDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    result = do_render(model, tmp_path / "out")
    assert result.labels["org.opencontainers.image.created"] == "2020-09-13T12:26:40Z"
    assert {p.stat().st_mtime for p in result.out_dir.rglob("*")} == {1600000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(RenderError, match="SOURCE_DATE_EPOCH"):
        do_render(model, tmp_path / "out2")


# --------------------------------------------------------------------------- context contents


def test_default_ignores_and_modelpackignore(model: ModelDir, tmp_path: Path) -> None:
    root = model.root
    for rel in (
        ".git/HEAD",
        "1/__pycache__/model.cpython-311.pyc",
        "1/stale.pyc",
        ".venv/bin/python",
        "venv/lib/x.py",
        "myenv/pyvenv.cfg",
        "myenv/lib/site.py",
        ".env",
        "1/.env",
        ".env.local",
        "1/prod.env",
        "data/big.bin",
        "data/keep.bin",
        "notes/todo.txt",
        "1/helper.py",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x", encoding="utf-8")
    (root / ".modelpackignore").write_text(
        "# comment\ndata/*.bin\n!data/keep.bin\nnotes/\n", encoding="utf-8"
    )
    result = do_render(model, tmp_path / "out")
    app = sorted(f[len("app/") :] for f in result.files if f.startswith("app/"))
    assert app == ["1/helper.py", "1/model.py", "data/keep.bin", "requirements.txt"]


def test_equal_ignore_rules_are_compiled_once(model: ModelDir) -> None:
    """Compiling the defaults' regular expressions was a few milliseconds of each render."""
    first, second = load_rules(model.root), load_rules(model.root)
    assert first._spec is second._spec  # type: ignore[attr-defined]
    (model.root / ".modelpackignore").write_text("*.log\n", encoding="utf-8")
    changed = load_rules(model.root)
    assert changed._spec is not first._spec and changed.ignored("x.log")  # type: ignore[attr-defined]
    assert not first.ignored("x.log") and default_rules().ignored(".env")


def test_credential_files_are_ignored_by_default(model: ModelDir, tmp_path: Path) -> None:
    root = model.root
    credentials = (
        ".netrc", ".envrc", ".pypirc", ".npmrc", ".git-credentials", "1/server.pem", "1/tls.key",
        "id_ed25519", ".ssh/config", ".aws/credentials", ".config/gcloud/credentials.db",
        "1/application_default_credentials.json", ".kube/config", ".docker/config.json", "1/cert.p12",
    )  # fmt: skip
    for rel in (*credentials, "1/public.pem"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("secret", encoding="utf-8")
    (root / ".modelpackignore").write_text("!1/public.pem\n", encoding="utf-8")  # re-included on purpose
    result = do_render(model, tmp_path / "out")
    app = sorted(f[len("app/") :] for f in result.files if f.startswith("app/"))
    assert app == ["1/model.py", "1/public.pem", "requirements.txt"]


def test_clarifaiignore_is_honoured_and_modelpackignore_wins(model: ModelDir, tmp_path: Path) -> None:
    root = model.root
    for rel in ("data/a.bin", "data/b.bin", "scratch/x.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x", encoding="utf-8")
    (root / ".clarifaiignore").write_text("scratch/\ndata/*.bin\n", encoding="utf-8")
    (root / ".modelpackignore").write_text("!data/b.bin\n", encoding="utf-8")
    result = do_render(model, tmp_path / "out")
    app = sorted(f[len("app/") :] for f in result.files if f.startswith("app/"))
    assert app == ["1/model.py", "data/b.bin", "requirements.txt"]


def test_output_inside_model_dir_is_not_copied_into_itself(model: ModelDir) -> None:
    first = do_render(model, model.root / "build")
    assert not any(f.startswith("app/build/") for f in first.files)
    second = do_render(model, model.root / "build2")
    assert not any(f.startswith(("app/build/", "app/build2/", "app/.build2")) for f in second.files)


def test_symlink_outside_is_refused(model: ModelDir, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not yours", encoding="utf-8")
    (model.root / "1" / "link.txt").symlink_to(secret)
    with pytest.raises(RenderError, match=r"1/link.txt: symlink points outside the model directory"):
        do_render(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]


def test_symlink_inside_is_copied_as_a_file(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "shared").mkdir()
    (model.root / "shared" / "labels.txt").write_text("cat\ndog\n", encoding="utf-8")
    (model.root / "1" / "labels.txt").symlink_to("../shared/labels.txt")
    result = do_render(model, tmp_path / "out")
    copied = result.out_dir / "app/1/labels.txt"
    assert not copied.is_symlink() and copied.read_text(encoding="utf-8") == "cat\ndog\n"


def test_ignored_outside_symlink_is_fine(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "1" / "cache").symlink_to(tmp_path)
    (model.root / ".modelpackignore").write_text("1/cache\n", encoding="utf-8")
    assert "app/1/model.py" in do_render(model, tmp_path / "out").files


def test_output_must_be_empty_unless_forced(model: ModelDir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    do_render(model, out)  # empty: fine
    (out / "stray").write_text("x", encoding="utf-8")
    with pytest.raises(RenderError, match="not empty"):
        do_render(model, out)
    result = do_render(model, out, force=True)
    assert not (out / "stray").exists() and result.dockerfile.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # no temp/old dirs left


def test_force_never_replaces_a_folder_that_is_not_a_render(model: ModelDir, tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(RenderError, match="is not an earlier `modelpack render` output") as info:
        do_render(model, precious, force=True)
    assert info.value.exit_code == 2
    assert (precious / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "model"]


def test_missing_lock_is_reported(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "requirements.lock").unlink()
    with pytest.raises(RenderError, match="modelpack lock"):
        render(model, tmp_path / "out", resolved=RESOLVED, lock=None)


def test_lock_none_uses_existing_lock_file(model: ModelDir, tmp_path: Path) -> None:
    result = render(model, tmp_path / "out", resolved=RESOLVED, lock=None)
    assert (result.out_dir / "builder/requirements.lock").read_bytes() == (
        model.root / "requirements.lock"
    ).read_bytes()


# --------------------------------------------------------------------------- --use-dockerfile


def test_own_dockerfile_is_a_warning_by_default(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    result = do_render(model, tmp_path / "out")
    assert next(w.message for w in result.warnings).startswith("ignored: modelpack generates the Dockerfile")
    assert result.dockerfile.read_text(encoding="utf-8").startswith("# Generated by modelpack")
    assert "app/Dockerfile" not in result.files


def test_use_dockerfile_keeps_it_as_is(model: ModelDir, tmp_path: Path) -> None:
    own = "FROM scratch\nCOPY . /app\n"
    (model.root / "Dockerfile").write_text(own, encoding="utf-8")
    settings = BuildSettings(use_dockerfile=True, index_url=INDEX)
    result = do_render(model, tmp_path / "out", settings)
    assert result.dockerfile.read_text(encoding="utf-8") == own
    assert result.build_args == {}
    assert {"Dockerfile", "1/model.py", "config.yaml", "requirements.txt"} <= set(result.files)
    assert result.labels["dev.modelpack.model-id"] == "hello" and not result.warnings
    (model.root / "Dockerfile").unlink()
    with pytest.raises(RenderError, match="--use-dockerfile"):
        do_render(model, tmp_path / "out2", settings)


# --------------------------------------------------------------------------- CLI


def _example_copy(tmp_path: Path) -> Path:
    return copy_example("hello", tmp_path / "hello", skip=("requirements.lock",))  # start unlocked


def test_cli_lock_and_render(tmp_path: Path) -> None:
    from modelpack.cli import cli

    model_dir = _example_copy(tmp_path)
    runner = CliRunner()
    check = runner.invoke(cli, ["lock", str(model_dir), "--check"])
    assert check.exit_code == 1 and "missing" in check.output
    locked = runner.invoke(cli, ["lock", str(model_dir), "--json"])
    assert locked.exit_code == 0, locked.output
    assert json.loads(locked.output)["up_to_date_before"] is False
    assert runner.invoke(cli, ["lock", str(model_dir), "--check"]).exit_code == 0
    out = tmp_path / "ctx"
    rendered = runner.invoke(cli, ["render", str(model_dir), "-o", str(out), "--index-url", INDEX, "--json"])
    assert rendered.exit_code == 0, rendered.output
    data = json.loads(rendered.output)
    assert data["build_args"] == ["PIP_INDEX_URL"] and SECRET not in rendered.output
    assert json.loads(data["labels"]["dev.modelpack.signature"])["methods"]
    again = runner.invoke(cli, ["render", str(model_dir), "-o", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output and "Traceback" not in again.output


def _imported_modules(args: list[str], cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelpack", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return completed.stderr


@pytest.mark.parametrize("command", ["--help", "validate"])
def test_light_commands_do_not_import_heavy_deps(command: str, tmp_path: Path) -> None:
    args = [command]
    if command == "validate":
        args.append(str(_example_copy(tmp_path)))
    trace = _imported_modules(args, tmp_path)
    imported = {line.split("|")[-1].strip() for line in trace.splitlines() if line.startswith("import time:")}
    assert "modelpack.cli" in imported  # the trace is real
    heavy = {m for m in imported if m.split(".")[0] in ("docker", "huggingface_hub", "starlette", "uvicorn")}
    assert not heavy


def test_hf_token_never_reaches_the_context(model: ModelDir, tmp_path: Path) -> None:
    from dataclasses import replace

    from modelpack.project.model_dir import CheckpointSpec

    token = "hf_" + "Zq9" * 10
    (model.root / "config.yaml").write_text(
        f'model:\n  id: hello\ncheckpoints:\n  type: huggingface\n  repo_id: a/b\n  hf_token: "{token}"\n',
        encoding="utf-8",
    )
    spec = CheckpointSpec("huggingface", "a/b", hf_token=token)
    with_token = replace(model, config=replace(model.config, checkpoints=spec))
    result = do_render(with_token, tmp_path / "out")
    for rel in result.files:
        assert token.encode() not in (result.out_dir / rel).read_bytes(), rel
    assert 'hf_token: ""' in (result.out_dir / "config/config.yaml").read_text(encoding="utf-8")
    assert any(w.path == "checkpoints.hf_token" for w in result.warnings)
    (model.root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n", encoding="utf-8")
    own = do_render(with_token, tmp_path / "own", BuildSettings(use_dockerfile=True))
    assert all(token.encode() not in (own.out_dir / rel).read_bytes() for rel in own.files)


def test_model_py_cannot_be_ignored(model: ModelDir, tmp_path: Path) -> None:
    (model.root / ".modelpackignore").write_text("*.py\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"1/model.py is missing or excluded"):
        do_render(model, tmp_path / "out")


def test_host_fetched_checkpoints_fill_the_weights_layer(model: ModelDir, tmp_path: Path) -> None:
    fetched = tmp_path / "fetched"
    (fetched / "sub").mkdir(parents=True)
    (fetched / "model.safetensors").write_bytes(b"\0weights")
    (fetched / "sub" / "config.json").write_text("{}", encoding="utf-8")
    (fetched / ".cache" / "huggingface").mkdir(parents=True)
    (fetched / ".cache" / "huggingface" / "x.metadata").write_text("meta", encoding="utf-8")
    empty = do_render(model, tmp_path / "empty")
    result = do_render(model, tmp_path / "out", checkpoints_from=fetched)
    ckpt = sorted(f for f in result.files if f.startswith("checkpoints/"))
    assert ckpt == ["checkpoints/.keep", "checkpoints/model.safetensors", "checkpoints/sub/config.json"]
    assert result.content_digest != empty.content_digest
    text = (result.out_dir / "context.sha256").read_text(encoding="utf-8")
    assert "  checkpoints/model.safetensors\n" in text


@pytest.mark.parametrize(
    "written",
    [
        '"hf_\\x5Aq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9"',  # escaped: the file never holds the token literally
        ">-\n    hf_Zq9Zq9Zq9Zq9Zq9\n    Zq9Zq9Zq9Zq9Zq9",  # folded over two lines
        "|-\n    hf_Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9",
    ],
)
def test_hf_token_is_blanked_however_it_is_written(model: ModelDir, tmp_path: Path, written: str) -> None:
    from dataclasses import replace

    import yaml

    from modelpack.project.model_dir import CheckpointSpec

    config = (
        f"model:\n  id: hello\ncheckpoints:\n  type: huggingface\n  hf_token: {written}\n  repo_id: a/b\n"
    )
    (model.root / "config.yaml").write_text(config, encoding="utf-8")
    token = yaml.safe_load(config)["checkpoints"]["hf_token"]
    assert token.startswith("hf_Zq9")
    spec = CheckpointSpec("huggingface", "a/b", hf_token=token)
    with_token = replace(model, config=replace(model.config, checkpoints=spec))
    result = do_render(with_token, tmp_path / "out")
    rendered = yaml.safe_load((result.out_dir / "config/config.yaml").read_text(encoding="utf-8"))
    assert rendered["checkpoints"] == {"type": "huggingface", "hf_token": "", "repo_id": "a/b"}
    assert rendered["model"] == {"id": "hello"}
    for rel in result.files:
        assert b"Zq9Zq9Zq9" not in (result.out_dir / rel).read_bytes(), rel


def test_unreadable_ignore_file_is_an_input_error(model: ModelDir, tmp_path: Path) -> None:
    (model.root / ".modelpackignore").write_bytes(b"\xff\xfe*.bin\n")
    with pytest.raises(RenderError, match=r"\.modelpackignore: not UTF-8 text") as info:
        do_render(model, tmp_path / "out")
    assert info.value.exit_code == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]


def test_unwritable_output_is_one_line_exit_2(model: ModelDir, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(RenderError, match=r"^cannot write the output directory .*file/out") as info:
        do_render(model, tmp_path / "file" / "out")
    assert info.value.exit_code == 2


def test_unreadable_model_file_is_one_line_and_cleans_up(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "1" / "weights.bin").write_bytes(b"x")
    real_copy = render_mod._copy

    def failing_copy(source: Path, target: Path, executable: bool) -> None:
        if source.name == "weights.bin":
            raise PermissionError(13, "Permission denied", str(source))
        real_copy(source, target, executable)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render_mod, "_copy", failing_copy)
        with pytest.raises(RenderError, match=r"weights\.bin: Permission denied") as info:
            do_render(model, tmp_path / "out")
    assert info.value.exit_code == 2 and "\n" not in info.value.message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]


def test_final_stage_data_is_what_the_dockerfile_says(model: ModelDir, tmp_path: Path) -> None:
    # `build --push` composes the final stage from RenderResult.final_stage (modelpack.image.assemble):
    # it must be the same stage the Dockerfile spells
    result = do_render(model, tmp_path / "out")
    stage = result.final_stage
    assert stage is not None and stage.labels == result.labels
    code = stages(result.dockerfile.read_text(encoding="utf-8"))[-1]
    assert code[0] == f"FROM {stage.runtime_stage}"
    assert code[1] == f"COPY {stage.code_source}/ {stage.code_dir}/"
    assert code[2:] == stage.instructions()
    health = json.loads(code[5].split(" CMD ", 1)[1])
    assert tuple(health) == stage.health_command
    assert tuple(json.loads(code[6].split(" ", 1)[1])) == stage.entrypoint


def test_own_dockerfile_has_no_final_stage_data(model: ModelDir, tmp_path: Path) -> None:
    (model.root / "Dockerfile").write_text("FROM scratch\nCOPY . /x\n")
    result = do_render(model, tmp_path / "out", BuildSettings(use_dockerfile=True))
    assert result.final_stage is None
