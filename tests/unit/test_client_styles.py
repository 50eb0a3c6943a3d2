"""The client calls models the way the Clarifai SDK's docs show: positional arguments,
`Text`/`Image` objects where a method takes `str`, typed results (`.text`, `.bytes`), and
plain JSON when asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpack.runtime.client import Model, ModelCallError
from modelpack.runtime.server import BackgroundServer
from modelpack.runtime.types import Concept, Image, Text

MODEL = Path(__file__).parent / "test_runtime_models" / "client_styles"


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    with BackgroundServer(MODEL) as server, Model(server.url, timeout=30) as client:
        assert server.runner.state == "ready", server.runner.error
        yield client


def test_positional_and_keyword_arguments(model: Model) -> None:
    assert model.predict("ab").text == "ab"
    assert model.predict("ab", 2).text == "abab"
    assert model.predict("ab", times=3).text == "ababab"
    assert [t.text for t in model.generate("one two")] == ["one", "two"]
    with pytest.raises(ModelCallError, match="twice"):
        model.predict("a", prompt="b")
    with pytest.raises(ModelCallError, match="takes 2 arguments"):
        model.predict("a", 1, 2)


def test_data_type_objects_as_arguments(model: Model) -> None:
    assert model.predict(Text("hi")).text == "hi"
    assert model.predict(prompt=Text("yo"), times=2) == Text("yoyo")
    assert list(model.shout(iter([Text("a"), "b"]))) == ["A", "B"]
    cropped = model.crop(Image(bytes=b"\x01\x02\x03\x04"), size=3)
    assert isinstance(cropped, Image) and cropped.bytes == b"\x01\x02\x03"


def test_typed_results(model: Model) -> None:
    tags = model.tags("red green")
    assert all(isinstance(c, Concept) for c in tags)
    assert [c.name for c in tags] == ["red", "green"]


def test_batch_stays_a_list_of_argument_objects(model: Model) -> None:
    assert [t.text for t in model.predict([{"prompt": "a"}, {"prompt": "b", "times": 2}])] == ["a", "bb"]


def test_plain_json_when_asked() -> None:
    with BackgroundServer(MODEL) as server, Model(server.url, typed=False) as client:
        assert client.predict("ab") == {"text": "ab"}
        assert client.tags("x") == [{"id": "x", "name": "x", "value": 1.0}]
