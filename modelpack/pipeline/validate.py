"""`modelpack validate`: the model directory's own findings plus what later stages can tell early.

Loading (`modelpack.project.config`) reads only the directory. Validation adds the checks
that need later stages: a requirements.lock gone stale against resolve's Python version
(no network), and with ``online`` the checkpoint preflight against the hub. They live here
so the project stage depends on nothing after it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from modelpack.errors import ConfigError, Diagnostic, ModelFileError, ModelpackError, SignatureError
from modelpack.pipeline.locking import LOCK_FILE, LockFileError, lock_status
from modelpack.pipeline.model_files import collect_model_files
from modelpack.pipeline.resolver import resolve
from modelpack.project.checkpoints import check_checkpoint, resolve_token
from modelpack.project.config import display_path, in_reading_order, read_model_dir
from modelpack.project.methods import signature
from modelpack.project.model_dir import ModelDir, ModelDirLike, ValidationReport, model_dir_root
from modelpack.project.yamlloc import YamlSyntaxError, load_yaml


def validate(path: ModelDirLike, *, online: bool = False) -> ValidationReport:
    """Check a model directory; every error and warning, located. Never raises for bad input.

    ``online`` also runs the checkpoint preflight against the hub (repo, revision, token
    access) and reports its finding at ``checkpoints.repo_id``/``checkpoints.revision``;
    an unreachable hub raises HubError (a runtime failure, not bad input).
    """
    root = model_dir_root(path)
    model_dir, findings = read_model_dir(root)
    if Path(root).is_dir():
        findings.extend(file_findings(Path(root), findings))
    if model_dir is not None:
        findings.extend(lock_findings(model_dir))
    if online and model_dir is not None and model_dir.config.checkpoints is not None:
        findings.extend(checkpoint_findings(model_dir))
    findings = in_reading_order(findings)
    errors = tuple(f for f in findings if f.severity == "error")
    warnings = tuple(f for f in findings if f.severity == "warning")
    return ValidationReport(valid=not errors, errors=errors, warnings=warnings)


def file_findings(root: Path, found: list[Diagnostic]) -> list[Diagnostic]:
    """What `render` and `build` would refuse in the directory's files (a symlink that leaves it
    or loops, an unreadable folder) and in model.py (no model class), located, so validate says it
    first. `found`: the findings so far (a model.py already reported is not read again)."""
    findings: list[Diagnostic] = []
    try:
        collect_model_files(root)
    except ModelFileError as error:
        findings.append(Diagnostic(display_path(root, error.rel), None, None, "", error.detail))
    model_py = display_path(root, "1", "model.py")
    if any(f.file == model_py and f.severity == "error" for f in found):
        return findings
    try:
        signature(root)
    except SignatureError as error:
        findings.extend(replace(d, file=model_py) for d in error.diagnostics)
    return findings


def lock_findings(model_dir: ModelDir) -> list[Diagnostic]:
    """A warning when requirements.lock no longer matches its inputs (no network).

    Without a lock there is nothing to report: `build` locks on demand. When no base
    image resolves, `modelpack resolve` is the command that explains why.
    """
    if not (model_dir.root / LOCK_FILE).is_file():
        return []
    try:
        status = lock_status(model_dir, resolve(model_dir))
    except LockFileError as error:
        return [
            Diagnostic(
                display_path(model_dir.root, LOCK_FILE), None, None, "", error.message.split(": ", 1)[1]
            )
        ]
    except (ModelpackError, ValueError):
        return []
    if status != "stale":
        return []
    return [
        Diagnostic(
            display_path(model_dir.root, LOCK_FILE),
            None,
            None,
            "",
            "requirements.lock no longer matches requirements.txt, the Python version or modelpack's "
            f"runtime requirements; refresh it with `modelpack lock {os.path.normpath(str(model_dir.root))}`",
            "warning",
        )
    ]


def checkpoint_findings(model_dir: ModelDir) -> list[Diagnostic]:
    """The checkpoint preflight's verdict as located errors in config.yaml (empty when fine)."""
    spec = model_dir.config.checkpoints
    if spec is None:
        return []
    try:
        check_checkpoint(spec, resolve_token(spec))
    except ConfigError as error:
        message = error.message
        field = "revision" if message.startswith("checkpoints.revision") else "repo_id"
        for prefix in ("checkpoints.revision: ", "checkpoints.repo_id: ", "checkpoints: "):
            message = message.removeprefix(prefix)
        position = None
        try:
            position = load_yaml(model_dir.config_path.read_text(encoding="utf-8")).locate(
                ("checkpoints", field)
            )
        except (OSError, YamlSyntaxError):
            pass
        display = display_path(model_dir.root, "config.yaml")
        line = position.line if position else None
        column = position.column if position else None
        return [Diagnostic(display, line, column, f"checkpoints.{field}", message)]
    return []
