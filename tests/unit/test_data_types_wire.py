"""NamedFields, JSON, Region (mask, point, track id) and Frame (index) on the wire, through the
server and the client, as the Clarifai SDK defines them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelpack.runtime.client import Model
from modelpack.runtime.server import BackgroundServer
from modelpack.runtime.types import JSON, Concept, Frame, Image, NamedFields, Region

MODEL = Path(__file__).parent / "test_runtime_models" / "data_types"


def test_data_types_round_trip_through_the_server() -> None:
    with BackgroundServer(MODEL) as server, Model(server.url, timeout=30) as model:
        assert server.runner.state == "ready", server.runner.error
        described = model.describe(Image(bytes=b"png"))
        assert described == {"label": "cat", "score": 0.9, "tags": ["pet"]}
        assert model.settings({"b": 1, "a": [2]}) == {"echo": {"b": 1, "a": [2]}, "keys": ["a", "b"]}
        (region,) = model.segment(Image(bytes=b"png"))
        assert isinstance(region, Region)
        assert region.mask == Image(bytes=b"\x00\x01") and region.point == [0.2, 0.3, 1.0]
        assert region.track_id == "t1" and region.concepts == [Concept(name="cat", value=0.9)]
        frames = [Frame(image=Image(bytes=b"a"), time=0.5, index=3), Frame(index=7)]
        assert model.frames(frames) == [3, 7]
        assert model.pair({"name": "x", "count": 2}) == "x:2"
        signature = {m["name"]: m for m in model.signature()["methods"]}
        assert signature["describe"]["output"] == "NamedFields[label: str, score: float, tags: List[str]]"
        assert signature["pair"]["inputs"][0]["type"] == "NamedFields[name: str, count: int]"


def test_named_fields_and_json_values() -> None:
    # types as values make a type, values an object with those attributes: neither is what a
    # type checker reads in `NamedFields(...)`
    kind: Any = NamedFields(a=str, b=int)
    assert issubclass(kind, NamedFields) and kind.FIELDS == {"a": str, "b": int}
    value: Any = NamedFields(a="x", b=1)
    assert value["a"] == "x" and value.b == 1 and dict(value.items()) == {"a": "x", "b": 1}
    assert JSON.from_json([1, 2]) == JSON([1, 2]) and JSON([1]).to_json() == [1]
    wrong = Region.from_json
    for bad in ({"point": [1]}, {"mask": 3}):
        try:
            wrong(bad)
        except TypeError:
            continue
        raise AssertionError(f"accepted {bad}")
