"""One source of build settings: `lock`, `render` and `build` read the index, extras, CA bundle and
base registry through `BuildSettings.from_env`, with one precedence (docs/environment.md)."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from example_copy import copy_example

from modelpack.cli import cli
from modelpack.pipeline.locking import LOCK_FILE, lock
from modelpack.pipeline.rendering import render
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.settings import BuildSettings
from modelpack.project.config import load
from modelpack.project.requirements import RequirementIndexes, parse_requirements, requirement_indexes

lock_mod = importlib.import_module("modelpack.pipeline.locking")
build_cmd = importlib.import_module("modelpack.cli.build_cmd")

VARIABLES = (
    "UV_INDEX_URL",
    "PIP_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "MODELPACK_BASE_REGISTRY",
)
CPU = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    target = tmp_path / "hello"
    copy_example("hello", target)
    return target


def test_index_precedence_flag_then_uv_then_pip() -> None:
    env = {"UV_INDEX_URL": "http://uv/simple", "PIP_INDEX_URL": "http://pip/simple"}
    assert BuildSettings.from_env(environ={}).index_url is None
    assert (
        BuildSettings.from_env(environ={"PIP_INDEX_URL": "http://pip/simple"}).index_url
        == "http://pip/simple"
    )
    assert BuildSettings.from_env(environ=env).index_url == "http://uv/simple"
    assert (
        BuildSettings.from_env(index_url="http://flag/simple", environ=env).index_url == "http://flag/simple"
    )
    assert BuildSettings.from_env(
        environ={"UV_INDEX_URL": "  ", **{"PIP_INDEX_URL": "http://p"}}
    ).index_url == ("http://p")


def test_extras_precedence_and_splitting() -> None:
    env = {"UV_EXTRA_INDEX_URL": "http://a http://b", "PIP_EXTRA_INDEX_URL": "http://c"}
    assert BuildSettings.from_env(environ=env).extra_index_urls == ("http://a", "http://b")
    assert BuildSettings.from_env(environ={"PIP_EXTRA_INDEX_URL": "http://c\nhttp://d"}).extra_index_urls == (
        "http://c",
        "http://d",
    )
    assert BuildSettings.from_env(extra_index_urls=("http://x",), environ=env).extra_index_urls == (
        "http://x",
    )
    assert BuildSettings.from_env(environ={}).extra_index_urls == ()


def test_ca_bundle_is_the_first_variable_naming_a_file(tmp_path: Path) -> None:
    requests_bundle = tmp_path / "requests.pem"
    ssl_bundle = tmp_path / "ssl.pem"
    for path in (requests_bundle, ssl_bundle):
        path.write_text("pem")
    env = {
        "PIP_CERT": str(tmp_path / "missing.pem"),
        "REQUESTS_CA_BUNDLE": str(requests_bundle),
        "SSL_CERT_FILE": str(ssl_bundle),
    }
    assert BuildSettings.from_env(environ=env).ca_bundle == requests_bundle
    assert BuildSettings.from_env(environ={"SSL_CERT_FILE": str(ssl_bundle)}).ca_bundle == ssl_bundle
    assert BuildSettings.from_env(ca_bundle=ssl_bundle, environ=env).ca_bundle == ssl_bundle
    assert BuildSettings.from_env(environ={}).ca_bundle is None


def test_base_registry() -> None:
    env = {"MODELPACK_BASE_REGISTRY": "127.0.0.1:5000/mirror"}
    assert BuildSettings.from_env(environ=env).base_registry == "127.0.0.1:5000/mirror"
    assert BuildSettings.from_env(base_registry="r.example", environ=env).base_registry == "r.example"


class FakeUv:
    """Stands in for `uv pip compile`: records the command and environment, prints one pin."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(command))
        env = kwargs.get("env")
        assert isinstance(env, dict)
        self.envs.append(env)
        return subprocess.CompletedProcess(command, 0, "six==1.17.0 \\\n    --hash=sha256:aa\n", "")

    def option(self, name: str) -> list[str]:
        command = self.commands[-1]
        return [command[i + 1] for i, word in enumerate(command) if word == name]


@pytest.fixture
def fake_uv(monkeypatch: pytest.MonkeyPatch) -> FakeUv:
    fake = FakeUv()
    monkeypatch.setattr(lock_mod, "find_uv", lambda: "uv")
    monkeypatch.setattr(lock_mod.subprocess, "run", fake)
    return fake


def test_lock_defaults_to_the_environment_and_uv_sees_only_those_indexes(
    hello: Path, clean_env: pytest.MonkeyPatch, fake_uv: FakeUv
) -> None:
    clean_env.setenv("UV_INDEX_URL", "http://127.0.0.1:9/uv/simple")
    clean_env.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/pip/simple")
    clean_env.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/default/simple")
    clean_env.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/extra/simple")
    lock(hello, resolved=CPU, force=True)
    assert fake_uv.option("--index-url") == ["http://127.0.0.1:9/uv/simple"]
    assert fake_uv.option("--extra-index-url") == ["http://127.0.0.1:9/extra/simple"]
    assert not {"UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX"} & set(fake_uv.envs[-1])

    # explicit settings win, and an unset index means PyPI for uv too, whatever UV_* says
    lock(hello, resolved=CPU, force=True, settings=BuildSettings())
    assert fake_uv.option("--index-url") == [] and fake_uv.option("--extra-index-url") == []
    assert "UV_INDEX_URL" not in fake_uv.envs[-1]


def test_cli_lock_render_and_build_take_the_same_settings(
    hello: Path, clean_env: pytest.MonkeyPatch, fake_uv: FakeUv, tmp_path: Path
) -> None:
    clean_env.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/pip/simple")
    runner = CliRunner()
    locked = runner.invoke(cli, ["lock", str(hello), "--force", "--json"])
    assert locked.exit_code == 0, locked.output
    assert fake_uv.option("--index-url") == ["http://127.0.0.1:9/pip/simple"]

    # render used to pass no index at all: now the lock's index reaches the builder stage
    rendered = runner.invoke(cli, ["render", str(hello), "-o", str(tmp_path / "ctx"), "--json"])
    assert rendered.exit_code == 0, rendered.output
    assert json.loads(rendered.stdout)["build_args"] == ["PIP_INDEX_URL"]
    assert len(fake_uv.commands) == 1  # the lock just written was reused

    # build used to read only PIP_INDEX_URL: UV_INDEX_URL now wins there as everywhere
    clean_env.setenv("UV_INDEX_URL", "http://127.0.0.1:9/uv/simple")
    assert build_cmd._settings(None, None, ()) == BuildSettings.from_env()
    assert build_cmd._settings(None, None, ()).index_url == "http://127.0.0.1:9/uv/simple"
    assert build_cmd._settings(None, "http://flag/simple", ()).index_url == "http://flag/simple"


def test_render_from_a_path_uses_the_environment_settings(
    hello: Path, clean_env: pytest.MonkeyPatch, fake_uv: FakeUv, tmp_path: Path
) -> None:
    clean_env.setenv("UV_INDEX_URL", "http://127.0.0.1:9/uv/simple")
    (hello / LOCK_FILE).unlink()
    result = render(hello, tmp_path / "ctx")
    assert fake_uv.option("--index-url") == ["http://127.0.0.1:9/uv/simple"]  # the lock was made
    assert result.build_args == {"PIP_INDEX_URL": "http://127.0.0.1:9/uv/simple"}  # and pip gets the same
    assert (hello / LOCK_FILE).is_file()
    assert json.loads(result.labels["dev.modelpack.signature"])["methods"]  # signature ran too
    assert result.labels["dev.modelpack.model-id"] == load(hello).config.model.id


def test_index_options_in_a_nested_requirement_file_count_like_top_level_ones(
    hello: Path, clean_env: pytest.MonkeyPatch, fake_uv: FakeUv, tmp_path: Path
) -> None:
    """`-r private.txt` whose file names the indexes: the lock asks them and the rendered builder
    stage gets them, exactly as when they sit in requirements.txt; the shipped copy holds neither."""
    secret = "http://ci:tok-nested@127.0.0.1:9/private/simple"
    (hello / "deps").mkdir()
    (hello / "deps" / "private.txt").write_text(
        f"--index-url http://127.0.0.1:9/first/simple\n-r more.txt\n--extra-index-url {secret}\n"
    )
    (hello / "deps" / "more.txt").write_text("--index-url=http://127.0.0.1:9/nested/simple\n")
    requirements = hello / "requirements.txt"
    requirements.write_text(requirements.read_text() + "-r deps/private.txt\n")
    lock(load(hello), resolved=CPU, force=True)
    assert fake_uv.option("--index-url") == ["http://127.0.0.1:9/nested/simple"]  # the last, as pip reads
    assert fake_uv.option("--extra-index-url") == [secret]

    context = tmp_path / "ctx"
    rendered = render(hello, context, resolved=CPU, settings=BuildSettings())
    assert rendered.build_args == {
        "PIP_INDEX_URL": "http://127.0.0.1:9/nested/simple",
        "PIP_EXTRA_INDEX_URL": secret,
    }
    shipped = b"".join(p.read_bytes() for p in context.rglob("*") if p.is_file())
    assert b"tok-nested" not in shipped and b"/private/simple" not in shipped


def test_nested_index_options_are_read_only_inside_the_model_directory(tmp_path: Path) -> None:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("--extra-index-url http://127.0.0.1:9/never/simple\n")
    (root / "sub" / "a.txt").write_text("-r ../../outside.txt\n-r a.txt\n--extra-index-url http://127.0.0.1:9/a\n")
    lines, _ = parse_requirements("-r sub/a.txt\n-r /etc/hostname\n")
    assert requirement_indexes(lines, root) == RequirementIndexes(None, ("http://127.0.0.1:9/a",))
    assert requirement_indexes(lines) == RequirementIndexes()  # no root: the top-level lines only
