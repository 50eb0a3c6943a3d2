"""What modelpack's Clarifai compatibility layer provides, and the imports of model.py it does not.

`modelpack.runtime.compat` answers ``clarifai`` imports with modelpack's runtime from this
table; `validate` reports, at its line, an import of a module or name that is missing
here (an error: loading the model would fail), or a warning when the import sits in a
``try`` that catches ImportError.
"""

from __future__ import annotations

import ast

from modelpack.errors import Diagnostic, Severity

SHIM_PACKAGES = frozenset(
    {"clarifai", "clarifai.runners", "clarifai.runners.models", "clarifai.runners.utils", "clarifai.utils"}
)
DATA_TYPE_NAMES = ("Text", "Image", "Audio", "Video", "Concept", "Region", "Frame", "JSON", "NamedFields")
SHIM_MODULES: dict[str, tuple[str, ...]] = {
    "clarifai.runners.models.model_class": ("ModelClass",),
    "clarifai.runners.models.openai_class": ("OpenAIModelClass",),
    "clarifai.runners.models.visual_classifier_class": ("VisualClassifierClass",),
    "clarifai.runners.models.visual_detector_class": ("VisualDetectorClass",),
    "clarifai.runners.models.mcp_class": ("MCPModelClass",),
    "clarifai.runners.models.stdio_mcp_class": ("StdioMCPModelClass",),
    "clarifai.runners.models.model_builder": ("ModelBuilder",),
    "clarifai.runners.models.agentic_class": ("AgenticModelClass",),
    "clarifai.runners.utils.data_types": DATA_TYPE_NAMES,
    "clarifai.runners.utils.data_utils": ("Param",),
    "clarifai.runners.utils.openai_convertor": ("build_openai_messages",),
    "clarifai.utils.logging": ("logger",),
}


def _is_clarifai(module: str) -> bool:
    return module == "clarifai" or module.startswith("clarifai.")


def _guarded_lines(tree: ast.AST) -> set[int]:
    """Lines of statements inside a ``try`` whose handlers catch ImportError (or everything)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = {
            n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
            for h in node.handlers
            for n in ([h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts)
            if h.type is not None
        }
        if any(h.type is None for h in node.handlers) or names & {
            "ImportError",
            "ModuleNotFoundError",
            "Exception",
        }:
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def unprovided_imports(tree: ast.AST, display: str) -> list[Diagnostic]:
    """A located finding for each ``clarifai`` module or name the compatibility layer lacks."""
    guarded = _guarded_lines(tree)
    findings: list[Diagnostic] = []

    def report(node: ast.stmt, what: str) -> None:
        severity: Severity = "warning" if node.lineno in guarded else "error"
        message = f"{what} is not provided by modelpack's Clarifai compatibility layer"
        if severity == "warning":
            message += " (the import is guarded; its fallback runs)"
        findings.append(Diagnostic(display, node.lineno, node.col_offset + 1, "", message, severity))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (
                    _is_clarifai(alias.name)
                    and alias.name not in SHIM_MODULES
                    and alias.name not in SHIM_PACKAGES
                ):
                    report(node, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_clarifai(node.module or ""):
            module = node.module or ""
            if module in SHIM_MODULES:
                for alias in node.names:
                    if alias.name != "*" and alias.name not in SHIM_MODULES[module]:
                        report(node, f"{module}.{alias.name}")
            elif module in SHIM_PACKAGES:
                for alias in node.names:
                    name = f"{module}.{alias.name}"
                    if name not in SHIM_MODULES and name not in SHIM_PACKAGES:
                        report(node, name)
            else:
                report(node, module)
    return sorted(findings, key=lambda d: (d.line or 0, d.column or 0))
