"""Static method signatures of 1/model.py: types, kinds, Param, inheritance, located warnings."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelpack.cli import cli
from modelpack.errors import SignatureError
from modelpack.project.method_types import MethodSignature
from modelpack.project.methods import BASE_CLASSES, canonical_type, import_aliases, signature

DATA = Path(__file__).resolve().parent / "data" / "signature"


def write_model(tmp_path: Path, source: str) -> Path:
    root = tmp_path / "m"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def methods(path: Path) -> dict[str, MethodSignature]:
    return {m.name: m for m in signature(path).signature.methods}


def types_of(method: MethodSignature) -> dict[str, str]:
    return {i.name: i.type for i in method.inputs}


# --------------------------------------------------------------------------- exact JSON


@pytest.mark.parametrize("name", ["basic", "clarifai"])
def test_exact_json(name: str) -> None:
    expected = json.loads((DATA / name / "expected.json").read_text())
    assert signature(DATA / name).to_dict() == expected


@pytest.mark.parametrize("name", ["basic", "clarifai"])
def test_cli_json_matches_library(name: str) -> None:
    result = CliRunner().invoke(cli, ["signature", str(DATA / name), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((DATA / name / "expected.json").read_text())


def test_cli_text_output() -> None:
    result = CliRunner().invoke(cli, ["signature", str(DATA / "basic")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Echo (ModelClass)"
    assert "  predict(prompt: str, max_tokens: int = 256) -> str   [unary-unary]" in lines
    assert "  generate(prompt: str) -> Iterator[str]   [unary-stream]" in lines
    assert "  chat(messages: Iterator[str]) -> Iterator[str]   [stream-stream]" in lines
    assert "helper" not in result.stdout


def test_model_py_path_is_accepted() -> None:
    by_dir = signature(DATA / "basic")
    by_file = signature(DATA / "basic" / "1" / "model.py")
    assert by_file == by_dir


# --------------------------------------------------------------------------- types


def test_scalar_types() -> None:
    m = methods(DATA / "types")["scalars"]
    assert types_of(m) == {
        "a": "str",
        "b": "int",
        "c": "float",
        "d": "bool",
        "e": "bytes",
        "f": "Any",
        "g": "None",
    }
    assert m.output == "None"


def test_container_types() -> None:
    m = methods(DATA / "types")["containers"]
    assert types_of(m) == {
        "a": "List[Any]",
        "b": "List[int]",
        "c": "List[str]",
        "d": "Dict[Any, Any]",
        "e": "Dict[str, float]",
        "f": "Dict[str, List[int]]",
        "g": "Tuple[int, str]",
        "h": "Tuple[int, ...]",
        "i": "Tuple[Any, ...]",
        "j": "List[Dict[str, Any]]",
        "k": "List[Any]",
    }
    assert m.output == "Dict[str, Any]"


def test_union_types() -> None:
    m = methods(DATA / "types")["unions"]
    assert types_of(m) == {
        "a": "Optional[int]",
        "b": "Optional[int]",
        "c": "Optional[int]",
        "d": "Union[int, str]",
        "e": "Optional[Union[str, int]]",
        "f": "Optional[Union[int, str]]",
        "g": "Optional[Union[int, str]]",
        "h": "Optional[Text]",
        "i": "int",
    }
    assert m.output == "Union[str, bytes]"


def test_media_and_model_data_types() -> None:
    m = methods(DATA / "types")["media"]
    assert types_of(m) == {
        "a": "Text",
        "b": "Image",
        "c": "Audio",
        "d": "Video",
        "e": "Concept",
        "f": "Region",
        "g": "Frame",
        "h": "ndarray",
        "i": "ndarray",
        "j": "PIL.Image",
        "k": "PIL.Image",
        "l": "List[Region]",
    }
    assert m.output == "List[Concept]"


def test_all_known_types_give_no_warning() -> None:
    assert signature(DATA / "types").warnings == ()


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("str", "str"),
        ("typing.List[int]", "List[int]"),
        ("t.Optional[t.List[str]]", "Optional[List[str]]"),
        ("Optional[Optional[int]]", "Optional[int]"),
        ("Union[None, int]", "Optional[int]"),
        ("Union[int, Union[str, bytes]]", "Union[int, str, bytes]"),
        ("int | str | None", "Optional[Union[int, str]]"),
        ("None", "None"),
        ("Optional[None]", "None"),
        ("'List[\"Image\"]'", "List[Image]"),
        ("Iterator", "Iterator[Any]"),
        ("Generator[int, None, None]", "Iterator[int]"),
        ("AsyncGenerator[Text, None]", "Iterator[Text]"),
        ("Iterable[List[float]]", "Iterator[List[float]]"),
        ("Annotated[int, 'meta']", "int"),
        ("typing.Text", "str"),
        ("np.ndarray", "ndarray"),
        ("numpy.ndarray[Any, numpy.dtype[numpy.float32]]", "ndarray"),
        ("PIL.Image.Image", "PIL.Image"),
        ("dt.Region", "Region"),
    ],
)
def test_canonical_type_rules(annotation: str, expected: str) -> None:
    aliases = import_aliases(
        ast.parse(
            "import typing\nimport typing as t\nimport numpy as np\nimport PIL.Image\n"
            "from clarifai.runners.utils import data_types as dt\n"
            "from modelpack.runtime import Image, Text\n"
        )
    )
    problems: list[tuple[ast.AST, str]] = []
    node = ast.parse(annotation, mode="eval").body
    assert canonical_type(node, aliases, problems) == expected
    assert problems == []


def test_canonical_type_reports_unknown_types() -> None:
    problems: list[tuple[ast.AST, str]] = []
    node = ast.parse("Dict[str, torch.Tensor]", mode="eval").body
    assert canonical_type(node, {"torch": "torch"}, problems) == "Dict[str, torch.Tensor]"
    assert [message for _, message in problems] == ["unknown type torch.Tensor"]


def test_missing_annotation_is_any() -> None:
    assert canonical_type(None) == "Any"


def test_typing_text_differs_from_model_text() -> None:
    typing_text = import_aliases(ast.parse("from typing import Text"))
    model_text = import_aliases(ast.parse("from modelpack.runtime import Text"))
    node = ast.parse("Text", mode="eval").body
    assert canonical_type(node, typing_text) == "str"
    assert canonical_type(node, model_text) == "Text"


# --------------------------------------------------------------------------- kinds


def test_kinds_from_types() -> None:
    m = methods(DATA / "types")
    assert m["iterable"].kind == "unary-stream"
    assert m["iterable"].output == "Iterator[Frame]"
    assert m["generator"].kind == "unary-stream"
    assert m["generator"].output == "Iterator[Dict[str, int]]"
    assert m["typing_iterator"].kind == "stream-stream"
    assert types_of(m["typing_iterator"]) == {"a": "Iterator[Image]"}
    assert m["media"].kind == "unary-unary"


def test_async_methods_and_async_generators() -> None:
    result = signature(DATA / "async_gen")
    m = {x.name: x for x in result.signature.methods}
    assert [x.name for x in result.signature.methods] == [
        "predict",
        "generate",
        "agen",
        "duplex",
        "unannotated",
    ]
    assert (m["predict"].kind, m["predict"].output) == ("unary-unary", "str")
    assert (m["generate"].kind, m["generate"].output) == ("unary-stream", "Iterator[str]")
    assert (m["agen"].kind, m["agen"].output) == ("unary-stream", "Iterator[str]")
    assert (m["duplex"].kind, m["duplex"].output) == ("stream-stream", "Iterator[bytes]")
    assert types_of(m["duplex"]) == {"chunks": "Iterator[bytes]"}
    assert (m["unannotated"].kind, m["unannotated"].output) == ("unary-stream", "Iterator[Any]")
    assert [w.format() for w in result.warnings] == [
        "1/model.py:26:5: AsyncModel.unannotated: warning: no return annotation; assuming Iterator[Any]"
    ]


# --------------------------------------------------------------------------- classes, Param, defaults


def test_inherited_intermediate_class() -> None:
    result = signature(DATA / "inherited")
    sig = result.signature
    assert (sig.class_name, sig.base) == ("Leaf", "ModelClass")
    # base-class methods first; the override keeps the slot of `predict` in Base;
    # `dropped` was overridden without the decorator and is gone
    assert [m.name for m in sig.methods] == ["predict", "score", "stream"]
    m = {x.name: x for x in sig.methods}
    assert m["predict"].description == "Leaf version."
    assert m["predict"].inputs[1].default == 0.5  # module constant
    assert m["score"].inputs[1].default == 0.25  # class constant shadows the module one
    assert m["stream"].kind == "unary-stream"
    assert result.warnings == ()


def test_clarifai_visual_detector_through_alias_and_intermediate() -> None:
    sig = signature(DATA / "visual").signature
    assert (sig.class_name, sig.base) == ("MyDetector", "VisualDetectorClass")
    assert [(m.name, m.output) for m in sig.methods] == [("predict", "List[Region]")]


@pytest.mark.parametrize(
    ("module", "base"),
    [
        ("clarifai.runners.models.model_class", "ModelClass"),
        ("clarifai.runners.models.openai_class", "OpenAIModelClass"),
        ("clarifai.runners.models.visual_classifier_class", "VisualClassifierClass"),
        ("clarifai.runners.models.visual_detector_class", "VisualDetectorClass"),
        ("modelpack", "ModelClass"),
        ("modelpack.runtime", "OpenAIModelClass"),
    ],
)
def test_base_class_imports(tmp_path: Path, module: str, base: str) -> None:
    root = write_model(
        tmp_path,
        f"""
        from {module} import {base}

        class M({base}):
            @{base}.method
            def predict(self, x: int) -> int:
                return x
        """,
    )
    sig = signature(root).signature
    assert (sig.class_name, sig.base, [m.name for m in sig.methods]) == ("M", base, ["predict"])


def test_param_positional_fields_constants_and_decorator_call(tmp_path: Path) -> None:
    root = write_model(
        tmp_path,
        """
        from modelpack.runtime import ModelClass as Base, Param

        LOW: float = -1.5
        SIZES = [1, 2, 4]
        NESTED = {"a": [LOW, 2]}
        ALIAS = SIZES

        class M(Base):
            @Base.method(batch=True, max_batch_size=8)
            def predict(
                self,
                x: int = Param(4, "A size.", min_value=LOW, max_value=8, choices=ALIAS),
                *,
                opts: dict = NESTED,
                flag: bool = False,
                name: str = Param(description="Required, documented."),
                maybe: str = Param(default=None),
            ) -> int:
                return x
        """,
    )
    result = signature(root)
    assert result.warnings == ()
    (method,) = result.signature.methods
    x, opts, flag, name, maybe = method.inputs
    assert (x.default, x.description, x.min_value, x.max_value, x.choices, x.required) == (
        4,
        "A size.",
        -1.5,
        8,
        [1, 2, 4],
        False,
    )
    assert (opts.type, opts.default, opts.required) == ("Dict[Any, Any]", {"a": [-1.5, 2]}, False)
    assert (flag.default, flag.required) == (False, False)
    assert (name.required, name.default, name.description) == (True, None, "Required, documented.")
    assert (maybe.required, maybe.default) == (False, None)


def test_signature_does_not_import_model_py(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    root = write_model(
        tmp_path,
        f"""
        import not_installed_anywhere
        open({str(marker)!r}, "w").close()
        from modelpack.runtime import ModelClass

        class M(ModelClass):
            @ModelClass.method
            def predict(self, x: not_installed_anywhere.Thing) -> str:
                return ""
        """,
    )
    result = signature(root)
    assert not marker.exists()
    assert [m.name for m in result.signature.methods] == ["predict"]


# --------------------------------------------------------------------------- warnings and errors


def test_located_warnings() -> None:
    result = signature(DATA / "warnings")
    assert [w.format() for w in result.warnings] == [
        "1/model.py:12:26: Weird.predict: warning: parameter 'x': unknown type torch.Tensor",
        "1/model.py:12:40: Weird.predict: warning: parameter 'y' has no type annotation; assuming Any",
        "1/model.py:12:46: Weird.predict: warning: *args is not supported; it is not part of the signature",
        "1/model.py:12:66: Weird.predict: warning: parameter 'z': default is not a literal; reported as null",
        "1/model.py:12:84: Weird.predict: warning: **kwargs is not supported; it is not part of the signature",
        "1/model.py:12:100: Weird.predict: warning: return: unknown type torch.Tensor",
        "1/model.py:16:23: Weird.more: warning: parameter 'a': unknown type Sequence[int]",
        "1/model.py:16:41: Weird.more: warning: parameter 'b': unknown type Literal['a', 'b']",
        "1/model.py:16:91: Weird.more: warning: parameter 'c': Param field 'unit' ignored",
        "1/model.py:16:101: Weird.more: warning: return: List takes 1 type argument(s): List[int, str]",
    ]
    assert all(w.severity == "warning" for w in result.warnings)
    m = {x.name: x for x in result.signature.methods}
    # what is not understood is still reported, as written
    assert types_of(m["predict"]) == {"x": "torch.Tensor", "y": "Any", "z": "int"}
    assert m["predict"].output == "torch.Tensor"
    assert (m["predict"].inputs[2].required, m["predict"].inputs[2].default) == (False, None)


def test_cli_prints_warnings_on_stderr() -> None:
    result = CliRunner().invoke(cli, ["signature", str(DATA / "warnings"), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data["warnings"]) == 10
    assert (
        "1/model.py:12:26: Weird.predict: warning: parameter 'x': unknown type torch.Tensor" in result.stderr
    )


def test_syntax_error_is_located(tmp_path: Path) -> None:
    root = write_model(
        tmp_path, "from modelpack.runtime import ModelClass\n\nclass M(ModelClass)\n    pass\n"
    )
    with pytest.raises(SignatureError) as caught:
        signature(root)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.severity) == ("1/model.py", 3, "error")
    assert diagnostic.format().startswith("1/model.py:3: syntax error: ")
    assert caught.value.exit_code == 2


def test_cli_syntax_error_is_one_line_exit_2(tmp_path: Path) -> None:
    root = write_model(tmp_path, "def broken(:\n")
    result = CliRunner().invoke(cli, ["signature", str(root)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("1/model.py:1: syntax error")
    assert "Traceback" not in result.stderr


def test_missing_model_py(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"1/model\.py not found"):
        signature(tmp_path)
    result = CliRunner().invoke(cli, ["signature", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_no_model_class_names_the_bases(tmp_path: Path) -> None:
    root = write_model(tmp_path, "class NotAModel:\n    pass\n\nclass Other(NotAModel):\n    pass\n")
    with pytest.raises(SignatureError) as caught:
        signature(root)
    for base in BASE_CLASSES:
        assert base in str(caught.value)


def test_several_model_classes_use_the_last_with_a_warning(tmp_path: Path) -> None:
    root = write_model(
        tmp_path,
        """
        from modelpack.runtime import ModelClass

        class A(ModelClass):
            @ModelClass.method
            def a(self) -> str:
                return ""

        class B(ModelClass):
            @ModelClass.method
            def b(self) -> str:
                return ""
        """,
    )
    result = signature(root)
    assert result.signature.class_name == "B"
    assert [m.name for m in result.signature.methods] == ["b"]
    assert [w.format() for w in result.warnings] == [
        "1/model.py:9:1: B: warning: several model classes (A, B); using the last one, B"
    ]


def test_local_class_named_like_a_base_is_not_a_base(tmp_path: Path) -> None:
    root = write_model(
        tmp_path,
        """
        class ModelClass:
            pass

        class M(ModelClass):
            pass
        """,
    )
    with pytest.raises(SignatureError, match="no class derives"):
        signature(root)


def test_class_without_methods_warns(tmp_path: Path) -> None:
    root = write_model(tmp_path, "from modelpack import ModelClass\n\nclass M(ModelClass):\n    pass\n")
    result = signature(root)
    assert result.signature.methods == ()
    assert [w.format() for w in result.warnings] == [
        "1/model.py:3:1: M: warning: no method is decorated with @ModelClass.method"
    ]
