"""`modelpack test`'s example inputs and its detection of a model's own test() (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

from modelpack.deploy.testing import defines_test, example_arguments, example_value
from modelpack.project.methods import signature
from modelpack.resources import data_dir
from modelpack.runtime.introspect import plan_class
from modelpack.runtime.runner import load_model_class

MODELS = Path(__file__).parent / "test_runtime_models"


def test_example_values_decode_as_their_types() -> None:
    assert example_value("str") == "test" and example_value("int") == 1
    assert example_value("List[Optional[float]]") == [0.5]
    assert example_value("Iterator[Text]") == ["test"]
    assert example_value("NamedFields[name: str, count: int]") == {"name": "test", "count": 1}
    assert example_value("Dict[str, Any]") == {}


def test_every_runtime_test_model_accepts_its_example_arguments() -> None:
    """The examples pass each method's argument decoding and limits, for every test model."""
    for model_dir in sorted(p for p in MODELS.iterdir() if (p / "1" / "model.py").is_file()):
        sig = signature(model_dir).signature
        _, plans = plan_class(load_model_class(model_dir))
        for method in sig.methods:
            plans[method.name].decode_args(example_arguments(method))


def test_mcp_transport_gets_a_tools_list_message() -> None:
    sig = signature(Path(str(data_dir("examples").joinpath("mcp-tools")))).signature
    (method,) = sig.methods
    assert json.loads(example_arguments(method)["msg"])["method"] == "tools/list"


def test_defines_test(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(
        "class M:\n    def test(self):\n        pass\n\nclass N:\n    pass\n"
    )
    assert defines_test(tmp_path, "M") and not defines_test(tmp_path, "N")
