"""Runtime SDK: canonical type strings from live annotations, argument decoding,
result encoding, the Clarifai import shim, and safe URL fetching."""

from __future__ import annotations

import collections.abc as cabc
import http.server
import threading
import typing
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Dict, Generator, Iterable, List, Optional, Tuple, Union  # noqa: UP035

import pytest

from modelpack.runtime import (
    Audio,
    Concept,
    Frame,
    Image,
    ModelClass,
    OpenAIModelClass,
    Param,
    Region,
    Text,
    Video,
    VisualClassifierClass,
    VisualDetectorClass,
)
from modelpack.runtime.fetch import FetchError, check_url_syntax, fetch_url
from modelpack.runtime.introspect import ArgumentError, encode, make_decoder, plan_class, type_string
from modelpack.runtime.runner import Runner, load_model_class

MODELS = Path(__file__).parent / "test_runtime_models"


# ------------------------------------------------------------------ type strings


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, "str"),
        (int, "int"),
        (float, "float"),
        (bool, "bool"),
        (bytes, "bytes"),
        (Any, "Any"),
        (None, "None"),
        (list, "List[Any]"),
        (List, "List[Any]"),  # noqa: UP006
        (dict, "Dict[Any, Any]"),
        (tuple, "Tuple[Any, ...]"),
        (List[int], "List[int]"),  # noqa: UP006
        (list[str], "List[str]"),
        (Dict[str, float], "Dict[str, float]"),  # noqa: UP006
        (Tuple[int, str], "Tuple[int, str]"),  # noqa: UP006
        (Tuple[int, ...], "Tuple[int, ...]"),  # noqa: UP006
        (Optional[int], "Optional[int]"),  # noqa: UP045
        (Union[int, None], "Optional[int]"),  # noqa: UP007
        (int | None, "Optional[int]"),
        (Union[int, str], "Union[int, str]"),  # noqa: UP007
        (Union[int, str, None], "Optional[Union[int, str]]"),  # noqa: UP007
        (Iterator[str], "Iterator[str]"),
        (Iterable[int], "Iterator[int]"),
        (Generator[int, None, None], "Iterator[int]"),
        (AsyncIterator[str], "Iterator[str]"),
        (cabc.Iterator, "Iterator[Any]"),
        (Text, "Text"),
        (Image, "Image"),
        (Audio, "Audio"),
        (Video, "Video"),
        (Concept, "Concept"),
        (Region, "Region"),
        (Frame, "Frame"),
        (List[Optional[Concept]], "List[Optional[Concept]]"),  # noqa: UP006, UP045
        (str, "str"),
        ("Image", "Image"),
        ("Optional[torch.Tensor]", "Optional[torch.Tensor]"),
    ],
)
def test_type_string(annotation: Any, expected: str) -> None:
    assert type_string(annotation) == expected


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (str, "a", "a"),
        (int, 3, 3),
        (int, 3.0, 3),
        (float, 2, 2.0),
        (bool, True, True),
        (Optional[int], None, None),  # noqa: UP045
        (List[int], [1, 2], [1, 2]),  # noqa: UP006
        (Dict[int, str], {"1": "a"}, {1: "a"}),  # noqa: UP006
        (Tuple[int, str], [1, "a"], (1, "a")),  # noqa: UP006
        (Union[int, str], "x", "x"),  # noqa: UP007
        (bytes, {"base64": "aGk="}, b"hi"),
        (bytes, "hi", b"hi"),
        (Any, {"x": [1]}, {"x": [1]}),
        (Text, "hello", Text("hello")),
        (Text, {"text": "hello"}, Text("hello")),
        (Image, {"base64": "aGk="}, Image(bytes=b"hi")),
        (Concept, {"name": "cat", "value": 0.5}, Concept(name="cat", value=0.5, id="cat")),
        (
            Region,
            {"box": [0, 0, 1, 1], "concepts": [{"id": "c1", "name": "cat"}]},
            Region(box=[0.0, 0.0, 1.0, 1.0], concepts=[Concept(name="cat", value=1.0, id="c1")]),
        ),
    ],
)
def test_decode_accepts(annotation: Any, value: Any, expected: Any) -> None:
    assert make_decoder(annotation)(value) == expected


@pytest.mark.parametrize(
    ("annotation", "value", "fragment"),
    [
        (str, 1, "expected a string, got number"),
        (int, "1", "expected an integer, got string"),
        (int, True, "expected an integer, got boolean"),
        (int, 1.5, "expected an integer"),
        (float, "x", "expected a number"),
        (bool, 1, "expected a boolean"),
        (List[int], [1, "x"], "[1]: expected an integer"),  # noqa: UP006
        (Dict[str, int], [], "expected an object"),  # noqa: UP006
        (Tuple[int, str], [1], "expected an array of 2 items"),  # noqa: UP006
        (Optional[int], "x", "expected Optional[int]"),  # noqa: UP045
        (bytes, {"base64": "!!"}, "invalid base64"),
        (Image, "https://example.com/x.png", "expected an object"),
        (Image, {"url": "file:///etc/passwd"}, "not allowed"),
        (Image, {"url": "https://user:pw@example.com/x"}, "credentials"),
        (Concept, {"value": 1}, "needs a name or an id"),
        (Region, {"box": [1, 2]}, "box must be a list"),
    ],
)
def test_decode_refuses(annotation: Any, value: Any, fragment: str) -> None:
    with pytest.raises((TypeError, ValueError), match=None) as info:
        make_decoder(annotation)(value)
    assert fragment in str(info.value)


def test_iterator_argument_decodes_a_list_lazily() -> None:
    decoded = make_decoder(Iterator[int])([1, 2])
    assert not isinstance(decoded, list)
    assert list(decoded) == [1, 2]


# ------------------------------------------------------------------ encoding


def test_encode_wire_format() -> None:
    frame = Frame(image=Image(bytes=b"\x00"), regions=[Region(concepts=[Concept("dog", 0.25)])], time=1.5)
    assert encode(
        {
            "text": Text("t"),
            "url_image": Image(url="https://example.com/a.png"),
            "blob": b"hi",
            "tuple": (1, 2),
            "frame": frame,
            "audio": Audio(bytes=b"a"),
            "video": Video(url="https://example.com/v.mp4"),
        }
    ) == {
        "text": {"text": "t"},
        "url_image": {"url": "https://example.com/a.png"},
        "blob": {"base64": "aGk="},
        "tuple": [1, 2],
        "frame": {
            "image": {"base64": "AA=="},
            "regions": [
                {"box": [0.0, 0.0, 1.0, 1.0], "concepts": [{"id": "dog", "name": "dog", "value": 0.25}]}
            ],
            "time": 1.5,
        },
        "audio": {"base64": "YQ=="},
        "video": {"url": "https://example.com/v.mp4"},
    }
    with pytest.raises(TypeError, match="cannot encode a object"):
        encode(object())


def test_data_types_round_trip() -> None:
    region = Region(box=[0.1, 0.2, 0.3, 0.4], concepts=[Concept("a", 0.5, "id-a")], id="r1", text="x")
    assert Region.from_json(encode(region)) == region
    frame = Frame(image=Image(bytes=b"png"), regions=[region], time=2.0)
    assert Frame.from_json(encode(frame)) == frame


# ------------------------------------------------------------------ signatures and plans


class _Intermediate(ModelClass):
    @ModelClass.method
    def inherited(self, x: int) -> int:
        return x

    @ModelClass.method
    def hidden(self) -> int:
        return 0


class _Model(_Intermediate):
    def hidden(self) -> int:  # overridden without the decorator: not exposed
        return 1

    @ModelClass.method
    def predict(
        self,
        prompt: str,
        n: int = Param(default=2, description="times", min_value=1, max_value=5),
        mode: str = Param(default="a", choices=["a", "b"]),
        need: str = Param(description="required, documented"),
        *,
        flag: bool = False,
    ) -> str:
        """First paragraph
        continues here.

        Second paragraph."""
        return prompt * n

    @ModelClass.method
    def stream(self, prompt: str) -> Iterator[str]:
        yield prompt

    @ModelClass.method
    def bidi(self, items: Iterator[int]) -> Iterator[int]:
        yield from items

    @ModelClass.method
    def untyped_gen(self, x):
        yield x

    @ModelClass.method(batch=True, max_batch_size=4)
    def batched(self, x: float) -> float:
        return x


def test_plan_class_signature() -> None:
    signature, plans = plan_class(_Model)
    data = signature.to_dict()
    assert data["class_name"] == "_Model" and data["base"] == "ModelClass"
    assert [m["name"] for m in data["methods"]] == [
        "inherited",
        "predict",
        "stream",
        "bidi",
        "untyped_gen",
        "batched",
    ]
    predict = data["methods"][1]
    assert predict["kind"] == "unary-unary"
    assert predict["description"] == "First paragraph\ncontinues here."
    assert predict["inputs"] == [
        {
            "name": "prompt",
            "type": "str",
            "required": True,
            "default": None,
            "description": "",
            "min_value": None,
            "max_value": None,
            "choices": None,
        },
        {
            "name": "n",
            "type": "int",
            "required": False,
            "default": 2,
            "description": "times",
            "min_value": 1,
            "max_value": 5,
            "choices": None,
        },
        {
            "name": "mode",
            "type": "str",
            "required": False,
            "default": "a",
            "description": "",
            "min_value": None,
            "max_value": None,
            "choices": ["a", "b"],
        },
        {
            "name": "need",
            "type": "str",
            "required": True,
            "default": None,
            "description": "required, documented",
            "min_value": None,
            "max_value": None,
            "choices": None,
        },
        {
            "name": "flag",
            "type": "bool",
            "required": False,
            "default": False,
            "description": "",
            "min_value": None,
            "max_value": None,
            "choices": None,
        },
    ]
    kinds = {m["name"]: (m["kind"], m["output"]) for m in data["methods"]}
    assert kinds["stream"] == ("unary-stream", "Iterator[str]")
    assert kinds["bidi"] == ("stream-stream", "Iterator[int]")
    assert kinds["untyped_gen"] == ("unary-stream", "Iterator[Any]")
    assert plans["batched"].options.batch and plans["batched"].options.max_batch_size == 4


def test_param_defaults_are_plain_values_for_direct_calls() -> None:
    assert _Model().predict("ab", need="x") == "abab"


def test_decode_args_errors_name_the_argument() -> None:
    _, plans = plan_class(_Model)
    plan = plans["predict"]
    assert plan.decode_args({"prompt": "x", "need": "y"}) == {
        "prompt": "x",
        "n": 2,
        "mode": "a",
        "need": "y",
        "flag": False,
    }
    cases = [
        ({"need": "y"}, "prompt", "missing required argument 'prompt'"),
        ({"prompt": "x", "need": "y", "extra": 1}, "extra", "unknown argument 'extra'"),
        ({"prompt": 3, "need": "y"}, "prompt", "argument 'prompt': expected a string"),
        ({"prompt": "x", "need": "y", "n": 6}, "n", "above the maximum 5"),
        ({"prompt": "x", "need": "y", "n": 0}, "n", "below the minimum 1"),
        ({"prompt": "x", "need": "y", "mode": "c"}, "mode", "is not one of"),
    ]
    for payload, argument, message in cases:
        with pytest.raises(ArgumentError) as info:
            plan.decode_args(payload)
        assert info.value.argument == argument
        assert message in info.value.message
    with pytest.raises(ArgumentError, match="must be a JSON object"):
        plan.decode_args([1])


def test_base_names_of_helper_classes() -> None:
    class Chat(OpenAIModelClass):
        @OpenAIModelClass.method
        def predict(self, prompt: str) -> str:
            return prompt

    class Classifier(VisualClassifierClass):
        pass

    class Detector(VisualDetectorClass):
        pass

    assert plan_class(Chat)[0].base == "OpenAIModelClass"
    assert plan_class(Classifier)[0].base == "VisualClassifierClass"
    assert plan_class(Detector)[0].base == "VisualDetectorClass"


def test_visual_helpers() -> None:
    concepts = VisualClassifierClass.process_concepts([[0.0, 2.0]], 0.5, {0: "a", 1: "b"})[0]
    assert [c.name for c in concepts] == ["b"] and concepts[0].value > 0.8
    regions = VisualDetectorClass.process_detections(
        [{"boxes": [[10, 10, 20, 40]], "scores": [0.9], "labels": [0]}], 0.5, ["thing"], [(100, 200)]
    )[0]
    assert regions[0].box == [0.1, 0.05, 0.2, 0.2] and regions[0].concepts[0].name == "thing"


# ------------------------------------------------------------------ loading model directories


def test_clarifai_model_loads_through_the_shim() -> None:
    cls = load_model_class(MODELS / "clarifai_style")
    signature, _ = plan_class(cls)
    assert signature.class_name == "MyClarifaiModel" and signature.base == "ModelClass"
    assert issubclass(cls, ModelClass)
    import clarifai.runners.utils.data_types as clarifai_types  # served by the shim

    assert clarifai_types.Image is Image
    with pytest.raises(ImportError, match="not provided by modelpack"):
        import clarifai.client  # noqa: F401


def test_runner_reports_load_failure() -> None:
    runner = Runner(MODELS / "broken_load")
    runner.load()
    assert runner.state == "failed"
    assert runner.error == "RuntimeError: weights are missing"


def test_runner_loads_model() -> None:
    runner = Runner(MODELS / "kitchen")
    runner.load()
    assert runner.state == "ready" and runner.signature is not None
    assert runner.signature.class_name == "Kitchen"
    assert runner.signature.methods[0].name == "ping"  # from the intermediate class, first


# ------------------------------------------------------------------ URL fetching


class _Handler(http.server.BaseHTTPRequestHandler):
    seen_headers: typing.ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Handler.seen_headers.append(dict(self.headers))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        if self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop?sig=presigned-secret")
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        body = b"x" * 5000 if self.path == "/big" else b"image-bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_http() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "/etc/passwd"])
def test_fetch_refuses_other_schemes(url: str) -> None:
    with pytest.raises(FetchError, match="not allowed"):
        check_url_syntax(url)


def test_fetch_refuses_loopback_by_default(local_http: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPACK_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(FetchError, match="private or loopback"):
        fetch_url(local_http + "/ok")
    with pytest.raises(FetchError, match="private or loopback"):
        fetch_url("http://10.0.0.1/x")  # refused before any connection is tried
    with pytest.raises(FetchError, match="private or loopback"):
        Image(url=local_http + "/ok").bytes  # noqa: B018


@pytest.mark.parametrize(
    "address",
    ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::1"],
)
def test_fetch_judges_nat64_and_6to4_by_the_ipv4_they_embed(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NAT64 and 6to4 addresses reach the IPv4 address inside them: loopback, metadata, private."""
    monkeypatch.delenv("MODELPACK_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(FetchError, match="private or loopback"):
        fetch_url(f"http://[{address}]/x")  # refused before any connection is tried


def test_fetch_when_private_urls_are_allowed(local_http: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPACK_ALLOW_PRIVATE_URLS", "1")
    _Handler.seen_headers.clear()
    assert fetch_url(local_http + "/ok") == b"image-bytes"
    assert fetch_url(local_http + "/redirect") == b"image-bytes"
    assert Image(url=local_http + "/ok").bytes == b"image-bytes"
    with pytest.raises(FetchError, match="larger than the limit of 100 bytes"):
        fetch_url(local_http + "/big", max_bytes=100)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(local_http + "/missing")
    assert all("Authorization" not in h and "Cookie" not in h for h in _Handler.seen_headers)


def test_redirect_loop_is_refused_without_quoting_the_query(
    local_http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPACK_ALLOW_PRIVATE_URLS", "1")
    with pytest.raises(FetchError, match=r"too many redirects fetching 127\.0\.0\.1/loop") as caught:
        fetch_url(local_http + "/loop")
    assert "presigned-secret" not in str(caught.value)


# ------------------------------------------------------------------ batching and backends


def test_dynamic_batching_groups_concurrent_calls() -> None:
    import asyncio

    calls: list[list[float]] = []

    class Batched(ModelClass):
        @ModelClass.method(batch=True, max_batch_size=4, max_wait_ms=50)
        def double(self, x: float) -> float:
            calls.append(list(x))  # type: ignore[call-overload]
            return [v * 2 for v in x]  # type: ignore[attr-defined, return-value]

    runner = Runner(instance=Batched())
    runner.load()
    plan = runner.plans["double"]

    async def main() -> list[Any]:
        return await asyncio.gather(*(runner.call(plan, {"x": float(i)}) for i in range(6)))

    assert asyncio.run(main()) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert calls == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]  # a full batch at once, the rest after the wait


def test_batch_method_must_return_one_result_per_item() -> None:
    import asyncio

    class Wrong(ModelClass):
        @ModelClass.method(batch=True)
        def f(self, x: int) -> int:
            return [1]  # type: ignore[return-value]

    runner = Runner(instance=Wrong())
    runner.load()
    with pytest.raises(RuntimeError, match="returned 1 results for 2 inputs"):
        asyncio.run(runner.call_batch(runner.plans["f"], [{"x": 1}, {"x": 2}]))


def test_start_backend_waits_for_an_openai_compatible_server(tmp_path: Path) -> None:
    import socket
    import sys

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text('{"object": "list", "data": [{"id": "served-model"}]}')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAIModelClass()
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    try:
        assert model.start_backend(command, port, timeout=60) == f"http://127.0.0.1:{port}/v1"
        assert model.backend_model() == "served-model"
    finally:
        assert model._backend_process is not None
        model._backend_process.terminate()
        model._backend_process.wait(30)


_KEYED_BACKEND = """
import http.server, json, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer backend-key":
            self.send_error(401)
            return
        body = json.dumps({"object": "list", "data": [{"id": "keyed-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_start_backend_with_an_api_key_is_ready_as_soon_as_it_answers() -> None:
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAIModelClass()
    model.api_key = "backend-key"
    try:
        # a backend that refused the probe would make start_backend raise after its timeout
        url = model.start_backend([sys.executable, "-c", _KEYED_BACKEND, str(port)], port, timeout=600)
        assert url == f"http://127.0.0.1:{port}/v1"
        assert model.backend_model() == "keyed-model"
    finally:
        assert model._backend_process is not None
        model._backend_process.terminate()
        model._backend_process.wait(30)
