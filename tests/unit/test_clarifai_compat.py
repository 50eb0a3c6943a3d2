"""`validate` reports the clarifai imports the compatibility layer lacks, at their lines;
everything the table lists is importable through the runtime's shim."""

from __future__ import annotations

import importlib
from pathlib import Path

from modelpack.pipeline.validate import validate
from modelpack.project.clarifai_compat import SHIM_MODULES
from modelpack.runtime import compat

MODEL = """\
import os
from clarifai.runners.models.model_class import ModelClass
from clarifai.runners.utils.data_types import Text, Pipeline
from clarifai.client.model import Model
import clarifai.runners.utils.data_types
from clarifai.runners.utils import data_utils, code_script
try:
    from clarifai.urls.helper import ClarifaiUrlHelper
except ImportError:
    ClarifaiUrlHelper = None


class M(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
"""


def _dir(tmp_path: Path, source: str) -> Path:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(source)
    (tmp_path / "config.yaml").write_text("model: {id: m}\n")
    (tmp_path / "requirements.txt").write_text("")
    return tmp_path


def test_unprovided_imports_are_located(tmp_path: Path) -> None:
    report = validate(_dir(tmp_path, MODEL))
    assert not report.valid
    errors = [(e.line, e.message.split(" ")[0]) for e in report.errors if e.file.endswith("model.py")]
    assert errors == [
        (3, "clarifai.runners.utils.data_types.Pipeline"),
        (4, "clarifai.client.model"),
        (6, "clarifai.runners.utils.code_script"),
    ]
    warnings = [(w.line, w.message.split(" ")[0]) for w in report.warnings if w.file.endswith("model.py")]
    assert warnings == [(8, "clarifai.urls.helper")]


def test_an_sdk_model_using_only_provided_names_is_valid(tmp_path: Path) -> None:
    source = "\n".join(line for line in MODEL.splitlines() if "Pipeline" not in line and "client" not in line)
    source = source.replace(", code_script", "")
    report = validate(_dir(tmp_path, source.replace("Text, \n", "Text\n")))
    assert report.valid, report.errors


def test_the_shim_provides_every_listed_name() -> None:
    compat.install()
    for module, names in SHIM_MODULES.items():
        loaded = importlib.import_module(module)
        assert all(hasattr(loaded, name) for name in names), module
