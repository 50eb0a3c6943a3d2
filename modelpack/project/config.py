"""Load a model directory: config.yaml by JSON Schema and semantic checks, requirements, model.py.

`schemas/config.schema.json` is the single source of truth for structure; what a schema
cannot say is checked in `modelpack.project.config_checks`. Every finding is located: file,
line, column, field path, and a message that says how to fix it. Only the directory itself
is read here: checks that need later stages (resolve, lock, the hub) are in
`modelpack.pipeline.validate`, so this stage depends on nothing after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from modelpack.errors import ConfigError, Diagnostic
from modelpack.project.clarifai_compat import unprovided_imports
from modelpack.project.config_checks import Checker, check_sections, did_you_mean, short, type_name
from modelpack.project.model_dir import ModelConfig, ModelDir, ModelDirLike, RequirementLine, model_dir_root
from modelpack.project.pysource import SourceError, parse_source, read_source
from modelpack.project.requirements import local_reads, parse_requirements
from modelpack.project.yamlloc import PathKey, YamlDocument, YamlSyntaxError, format_path, load_yaml
from modelpack.resources import cache_dir, read_text, schema_validator

_SECRET_VALUE_KEYS = frozenset({"value", "secret", "default", "token", "password"})


@lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    """The JSON Schema of config.yaml, as shipped in the package."""
    schema: dict[str, Any] = json.loads(read_text("schemas", "config.schema.json"))
    return schema


def _valid_memo(schema_text: str, data: Any) -> Path | None:
    """The marker file that says `data` is valid against the schema (validation is pure).

    Importing jsonschema and validating costs a rebuild more than the rest of `load`; the
    marker is keyed by the digest of schema and document, so any change validates again.
    """
    if not _plain_json(data):  # dates, NaN, non-string keys: always validate
        return None
    document = json.dumps(data, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{schema_text}\0{document}".encode()).hexdigest()
    return cache_dir("valid-configs", digest[:2], digest)


def _exists(path: Path) -> bool:
    """A cache marker is there; one that cannot be looked at (no permission) is a miss."""
    try:
        return path.exists()
    except OSError:
        return False


def _plain_json(value: Any) -> bool:
    """True for data JSON represents exactly (so equal text means equal data)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (str, int, bool))


def display_path(root: Path, *parts: str) -> str:
    """How findings name a file of the model directory."""
    return os.path.normpath(os.path.join(str(root), *parts))


# ---------------------------------------------------------------------------
# structure: JSON Schema
# ---------------------------------------------------------------------------


def _schema_findings(data: dict[str, Any], checker: Checker) -> None:
    schema_text = read_text("schemas", "config.schema.json")
    memo = _valid_memo(schema_text, data)
    if memo is not None and _exists(memo):
        return  # this very document passed this very schema before
    validator = schema_validator(json.loads(schema_text))
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors and memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.touch()
        except OSError:
            pass  # only a shortcut
    for error in errors:
        path: PathKey = tuple(error.absolute_path)
        kind = error.validator
        schema = error.schema if isinstance(error.schema, dict) else {}
        instance = error.instance
        hidden = _sensitive(path)

        def show(value: Any, hidden: bool = hidden) -> str:  # never echo a credential
            return "<hidden>" if hidden else short(value)

        if kind == "additionalProperties":
            allowed = sorted(schema.get("properties", {}))
            for extra in sorted(set(instance) - set(allowed), key=str):
                child = (*path, extra)
                if path[:1] == ("secrets",) and str(extra) in _SECRET_VALUE_KEYS:
                    env_var = instance.get("env_var", "THE_VARIABLE")
                    checker.error(
                        child,
                        f"secrets never hold a value in config.yaml; remove {extra!r} and set ${env_var} "
                        "in the environment at run time",
                        key=True,
                    )
                    continue
                section = format_path(path) or "the top level"
                checker.error(
                    child,
                    f"unknown key {extra!r} in {section}{did_you_mean(str(extra), allowed)}"
                    + ("" if did_you_mean(str(extra), allowed) else f"; allowed keys: {', '.join(allowed)}"),
                    key=True,
                )
        elif kind == "required":
            for name in error.validator_value:
                if name in instance:
                    continue
                if not path:
                    checker.error(
                        (name,),
                        f"missing required section {name!r}; add `{name}:` with at least `id: my-model`",
                    )
                else:
                    checker.error(
                        path,
                        f"missing required field {name!r}; add `{name}:` under {format_path(path)}",
                        key=True,
                    )
        elif kind == "type":
            expected = error.validator_value
            expected_list = expected if isinstance(expected, list) else [expected]
            names = {
                "string": "a string",
                "number": "a number",
                "integer": "an integer",
                "array": "a list",
                "object": "a mapping",
                "boolean": "true or false",
                "null": "null",
            }
            wanted = " or ".join(names.get(str(t), str(t)) for t in expected_list)
            checker.error(path, f"expected {wanted}, got {type_name(instance)} ({show(instance)})")
        elif kind == "enum":
            choices = [str(c) for c in error.validator_value]
            hint = did_you_mean(str(instance), choices)
            checker.error(path, f"{show(instance)} is not allowed; use one of: {', '.join(choices)}{hint}")
        elif kind in ("pattern", "minLength"):
            fix = schema.get("x-fix")
            what = "is empty" if kind == "minLength" or instance == "" else "has an invalid format"
            checker.error(path, f"{show(instance)} {what}" + (f"; {fix}" if fix else ""))
        elif kind == "minimum":
            checker.error(path, f"{show(instance)} is too small; use a number >= {error.validator_value}")
        elif kind == "oneOf":
            checker.error(path, f"expected a glob pattern or a list of them, got {type_name(instance)}")
        else:  # jsonschema's own message quotes the value
            checker.error(path, f"<hidden> fails the schema's {kind} rule" if hidden else error.message)


# Fields whose values may be credentials: messages name their type, never echo them.
_SENSITIVE_KEYS = {"hf_token", "token", "password", "secret", "api_key", "value"}


def _sensitive(path: PathKey) -> bool:
    return any(str(p).lower() in _SENSITIVE_KEYS for p in path)


def _check_config(doc: YamlDocument, file: str, findings: list[Diagnostic]) -> ModelConfig | None:
    checker = Checker(file, doc, findings)
    data = doc.data
    for path, position in doc.duplicate_keys:
        findings.append(
            Diagnostic(
                file,
                position.line,
                position.column,
                format_path(path),
                f"duplicate key {path[-1]!r}; YAML keeps only the last one, remove the other",
            )
        )
    _schema_findings(data, checker)
    known = set(config_schema()["properties"])
    for key in data:
        if key not in known:
            checker.warning(
                (key,),
                f"unknown section {key!r} is kept in the image but not used by modelpack"
                + did_you_mean(str(key), sorted(known)),
                key=True,
            )
    return check_sections(data, checker, tuple(sorted(str(k) for k in data if k not in known)))


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def _is_file(path: Path, display: str, findings: list[Diagnostic]) -> bool | None:
    """Whether `path` is a file; None (and a finding) when its folder cannot be read."""
    try:
        return path.is_file()
    except OSError as exc:
        findings.append(Diagnostic(display, None, None, "", f"cannot read: {exc.strerror}"))
        return None


def _read(path: Path, display: str, findings: list[Diagnostic], what: str) -> str | None:
    is_file = _is_file(path, display, findings)
    if not is_file:
        if is_file is False:
            findings.append(Diagnostic(display, None, None, "", f"{what} not found; create {display}"))
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        findings.append(
            Diagnostic(
                display,
                None,
                None,
                "",
                f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
            )
        )
    except OSError as exc:
        findings.append(Diagnostic(display, None, None, "", f"cannot read: {exc.strerror}"))
    return None


def _load_config_file(root: Path, findings: list[Diagnostic]) -> ModelConfig | None:
    display = display_path(root, "config.yaml")
    text = _read(root / "config.yaml", display, findings, "config.yaml")
    if text is None:
        return None
    if not text.strip():
        findings.append(
            Diagnostic(display, 1, 1, "", "config.yaml is empty; it needs at least `model: {id: my-model}`")
        )
        return None
    try:
        doc = load_yaml(text)
    except YamlSyntaxError as exc:
        line = exc.position.line if exc.position else None
        column = exc.position.column if exc.position else None
        findings.append(Diagnostic(display, line, column, "", exc.message))
        return None
    if doc.data is None:
        findings.append(
            Diagnostic(
                display, 1, 1, "", "config.yaml has no content; it needs at least `model: {id: my-model}`"
            )
        )
        return None
    if not isinstance(doc.data, dict):
        position = doc.locate(())
        findings.append(
            Diagnostic(
                display,
                position.line if position else 1,
                position.column if position else 1,
                "",
                f"the top level must be a mapping of sections (model:, build_info:, ...), not {type_name(doc.data)}",
            )
        )
        return None
    return _check_config(doc, display, findings)


def _load_requirements(root: Path, findings: list[Diagnostic]) -> tuple[RequirementLine, ...]:
    display = display_path(root, "requirements.txt")
    text = _read(root / "requirements.txt", display, findings, "requirements.txt")
    if text is None:
        return ()
    lines, problems = parse_requirements(text, display)
    findings.extend(problems)
    findings.extend(local_reads(root, lines, display))
    return tuple(lines)


def _check_model_py(root: Path, findings: list[Diagnostic]) -> None:
    display = display_path(root, "1", "model.py")
    path = root / "1" / "model.py"
    is_file = _is_file(path, display, findings)
    if not is_file:
        if is_file is False:
            findings.append(Diagnostic(display, None, None, "", f"1/model.py not found; create {display}"))
        return
    try:
        text = read_source(path)
    except SourceError as exc:
        findings.append(Diagnostic(display, exc.line, None, "", exc.message))
        return
    try:
        tree = parse_source(text, display)
    except SyntaxError as exc:
        findings.append(Diagnostic(display, exc.lineno, exc.offset, "", f"Python syntax error: {exc.msg}"))
        return
    findings.extend(unprovided_imports(tree, display))


def read_model_dir(path: str | os.PathLike[str]) -> tuple[ModelDir | None, list[Diagnostic]]:
    """The model directory (None when it has errors) and every finding, in reading order."""
    root = Path(path)
    findings: list[Diagnostic] = []
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        findings.append(Diagnostic(os.path.normpath(str(root)), None, None, "", f"model directory {what}"))
        return None, findings
    config = _load_config_file(root, findings)
    requirements = _load_requirements(root, findings)
    _check_model_py(root, findings)
    if config is None or any(f.severity == "error" for f in findings):
        return None, in_reading_order(findings)
    warnings = tuple(f for f in findings if f.severity == "warning")
    model_dir = ModelDir(root=root, config=config, requirements=requirements, warnings=warnings)
    return model_dir, in_reading_order(findings)


def in_reading_order(findings: list[Diagnostic]) -> list[Diagnostic]:
    """Sort by file (in the order files were read), then line and column."""
    files: dict[str, int] = {}
    for finding in findings:
        files.setdefault(finding.file, len(files))
    return sorted(findings, key=lambda f: (files[f.file], f.line or 0, f.column or 0))


def load(path: ModelDirLike) -> ModelDir:
    """Load a valid model directory, or raise ConfigError carrying every located error.

    A loaded ModelDir is read again from its root (the files may have changed since).
    """
    root = model_dir_root(path)
    model_dir, findings = read_model_dir(root)
    if model_dir is None:
        errors = [f for f in findings if f.severity == "error"]
        count = len(errors)
        raise ConfigError(
            f"{os.path.normpath(str(root))}: {count} error{'s' if count != 1 else ''} in the model directory",
            findings,
        )
    return model_dir


def as_model_dir(model_dir: ModelDirLike) -> ModelDir:
    """What every stage function starts with: a loaded ModelDir as is, a path loaded.

    So tools can pass either; a wrong type is a TypeError that names the accepted types.
    """
    if isinstance(model_dir, ModelDir):
        return model_dir
    return load(model_dir)
