"""A client for a running modelpack model server.

    model = Model("http://127.0.0.1:8080")
    model.available_methods()            # ["predict", "generate", ...]
    print(model.method_signature("predict"))
    model.predict(prompt="hi")           # unary: the decoded JSON result
    model.predict([{"prompt": "a"}, {"prompt": "b"}])   # batch: list of results
    for piece in model.generate(prompt="hi"):            # streaming: an iterator
        ...
    for out in model.chat(messages=iter(["a", "b"])):   # stream-stream over WebSocket
        ...

Arguments may be plain JSON values or modelpack data types (``Image``, ``Concept``...),
which are encoded to their wire format; results are returned as JSON values.
Failures raise `ModelCallError` (``exit_code`` 2 for 4xx answers, 1 otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from modelpack.errors import ModelpackError
from modelpack.runtime.introspect import encode
from modelpack.runtime.types import DATA_TYPE_CLASSES, Text


class ModelCallError(ModelpackError):
    """The server refused or failed a call; carries the HTTP status and error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.exit_code = 2 if status is not None and 400 <= status < 500 else 1


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def format_signature(method: dict[str, Any]) -> str:
    """``predict(prompt: str, n: int = 1) -> str   [unary-unary]``"""
    params = []
    for spec in method["inputs"]:
        text = f"{spec['name']}: {spec['type']}"
        if not spec["required"]:
            text += f" = {spec['default']!r}"
        params.append(text)
    line = f"{method['name']}({', '.join(params)}) -> {method['output']}   [{method['kind']}]"
    if method.get("description"):
        line += f"\n    {method['description']}"
    return line


def _inner(type_string: str, prefix: str) -> str | None:
    return (
        type_string[len(prefix) : -1]
        if type_string.startswith(prefix) and type_string.endswith("]")
        else None
    )


def _item_type(type_string: str) -> str:
    return _inner(type_string, "Iterator[") or "Any"


def decode_result(value: Any, type_string: str) -> Any:
    """A JSON result as the data types its declared type names (``Text``, ``List[Concept]``, ...)."""
    if value is None:
        return None
    optional = _inner(type_string, "Optional[")
    if optional is not None:
        return decode_result(value, optional)
    if type_string in DATA_TYPE_CLASSES and isinstance(value, dict):
        return DATA_TYPE_CLASSES[type_string].from_json(value)
    item = _inner(type_string, "List[")
    if item is not None and isinstance(value, list):
        return [decode_result(v, item) for v in value]
    return value


def _plain(value: Any, type_string: str) -> Any:
    """A ``Text`` where ``str`` is declared is its text; ``Image``/... where ``bytes`` is, its bytes."""
    if type_string == "str" and isinstance(value, Text):
        return value.text
    if type_string == "bytes" and hasattr(value, "bytes") and type(value) in DATA_TYPE_CLASSES.values():
        return value.bytes
    item = _inner(type_string, "List[")
    if item is not None and isinstance(value, (list, tuple)):
        return [_plain(v, item) for v in value]
    item = _inner(type_string, "Iterator[")
    if (
        item is not None
        and not isinstance(value, (list, tuple, str, bytes, dict))
        and hasattr(value, "__iter__")
    ):
        return (_plain(v, item) for v in value)
    if item is not None and isinstance(value, (list, tuple)):
        return [_plain(v, item) for v in value]
    return value


def _wire_args(
    arguments: dict[str, Any], inputs: list[dict[str, Any]], *, encode_values: bool = True
) -> dict[str, Any]:
    types = {spec["name"]: spec["type"] for spec in inputs}
    out = {k: _plain(v, types.get(k, "Any")) for k, v in arguments.items()}
    return {k: encode(v) for k, v in out.items()} if encode_values else out


def _is_batch(value: Any, inputs: list[dict[str, Any]]) -> bool:
    """One positional list of argument objects is a batch, unless the first input takes a list or dict."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return False
    first = inputs[0]["type"] if inputs else "Any"
    return not first.startswith(("List[", "Dict[", "Optional[List", "Optional[Dict", "Any"))


class Model:
    """A model served at ``url``; its methods are attributes."""

    def __init__(self, url: str, *, timeout: float = 600.0, typed: bool = True) -> None:
        import httpx

        self.typed = typed  # results of data types as Text, Image, ... objects (False: plain JSON)
        self.url = url.rstrip("/")
        self._shown_url = _without_credentials(self.url)  # for messages: never user:password
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._signature: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------
    def _request(self, verb: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(verb, path, **kwargs)
        except httpx.HTTPError as error:
            text = self._scrub(str(error))
            raise ModelCallError(f"cannot reach {self._shown_url}: {type(error).__name__}: {text}") from None
        self._raise_for(response.status_code, response.content)
        try:
            return response.json()
        except ValueError:
            raise ModelCallError(
                f"{self._shown_url}{path} did not answer JSON; is it a modelpack server?"
            ) from None

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's credentials (transport errors may quote the URL)."""
        from urllib.parse import urlsplit

        text = text.replace(self.url, self._shown_url)
        password = urlsplit(self.url).password
        return text.replace(password, "***") if password else text

    @staticmethod
    def _raise_for(status: int, content: bytes) -> None:
        if status < 400:
            return
        try:
            error = json.loads(content)["error"]
            message, code = str(error.get("message", "")), str(error.get("code", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            message, code = content.decode("utf-8", errors="replace")[:200], ""
        raise ModelCallError(f"HTTP {status}: {message}", status=status, code=code)

    def signature(self) -> dict[str, Any]:
        """The server's ``GET /v1/methods`` (cached)."""
        if self._signature is None:
            self._signature = self._request("GET", "/v1/methods")
        return self._signature

    def _method(self, name: str) -> dict[str, Any]:
        for method in self.signature()["methods"]:
            if method["name"] == name:
                return dict(method)
        raise ModelCallError(f"the model has no method {name!r}", status=404, code="unknown_method")

    def available_methods(self) -> list[str]:
        return [m["name"] for m in self.signature()["methods"]]

    def method_signature(self, name: str) -> str:
        return format_signature(self._method(name))

    def generate_client_script(self) -> str:
        """A runnable Python script calling every method with placeholder arguments."""
        examples = {
            "str": '"hello"',
            "int": "1",
            "float": "0.5",
            "bool": "True",
            "Text": '"hello"',
            "Image": '{"url": "https://example.com/image.jpg"}',
            "Concept": '{"name": "cat"}',
        }
        lines = [
            '"""Call the model served at ' + self.url + ' (generated by modelpack)."""',
            "from modelpack.runtime.client import Model",
            "",
            f"model = Model({self.url!r})",
        ]
        for method in self.signature()["methods"]:
            args = []
            for spec in method["inputs"]:
                if not spec["required"]:
                    continue
                kind = spec["type"]
                if kind.startswith("Iterator["):
                    inner = examples.get(kind[9:-1], "None")
                    value = f"iter([{inner}, {inner}])"
                else:
                    value = examples.get(kind, "None")
                args.append(f"{spec['name']}={value}")
            call = f"model.{method['name']}({', '.join(args)})"
            lines.append("")
            lines.append(f"# {format_signature(method).splitlines()[0]}")
            if method["kind"] == "unary-unary":
                lines.append(f"print({call})")
            else:
                lines.append(f"for item in {call}:")
                lines.append("    print(item)")
        return "\n".join(lines) + "\n"

    # -- calls ---------------------------------------------------------------
    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``name``: a result, a list of results (batch) or an iterator (streaming).

        Arguments go by name or, as the SDK's docs show, by position (``model.predict("hi")``);
        one list of argument objects is a batch. ``Text``/``Image``... objects are accepted
        where a method takes ``str``/``bytes``; results of data types come back as those
        classes (``.text``, ``.bytes``, ``.url``) unless the client was made ``typed=False``.
        """
        method = self._method(name)
        inputs = method["inputs"]
        if len(args) == 1 and _is_batch(args[0], inputs):
            items = [_wire_args(item, inputs) for item in args[0]]
            results = self._request("POST", f"/v1/methods/{name}", json=items)["results"]
            return [self._typed(r, method["output"]) for r in results]
        if len(args) > len(inputs):
            raise ModelCallError(f"{name}() takes {len(inputs)} arguments, {len(args)} given", status=422)
        for spec, value in zip(inputs, args, strict=False):
            if spec["name"] in kwargs:
                raise ModelCallError(f"{name}() got argument {spec['name']!r} twice", status=422)
            kwargs[spec["name"]] = value
        kwargs = _wire_args(kwargs, inputs, encode_values=False)
        if method["kind"] == "stream-stream":
            stream_arg = next(s["name"] for s in method["inputs"] if s["type"].startswith("Iterator["))
            value = kwargs.get(stream_arg)
            # a string or mapping is one value, not a stream of items: the server judges it
            if value is not None and not isinstance(value, (list, tuple, str, bytes, dict)):
                return self._bidi(name, stream_arg, value, kwargs)
        payload = {k: encode(list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        if method["kind"] == "unary-unary":
            return self._typed(
                self._request("POST", f"/v1/methods/{name}", json=payload)["result"], method["output"]
            )
        return (self._typed(item, _item_type(method["output"])) for item in self._stream(name, payload))

    def _typed(self, value: Any, type_string: str) -> Any:
        return decode_result(value, type_string) if self.typed else value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self.available_methods():
            raise AttributeError(f"the model has no method {name!r}")

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, *args, **kwargs)

        method.__name__ = name
        method.__doc__ = self.method_signature(name)
        return method

    def _stream(self, name: str, payload: dict[str, Any]) -> Iterator[Any]:
        import httpx

        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream("POST", f"/v1/methods/{name}", json=payload, headers=headers) as response:
                if response.status_code >= 400:
                    self._raise_for(response.status_code, response.read())
                event = "message"
                done = False
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:].strip())
                        if event == "error":
                            error = data.get("error", {})
                            raise ModelCallError(
                                str(error.get("message")), status=500, code=str(error.get("code"))
                            )
                        if event == "done":
                            done = True
                            break
                        yield data["result"]
                    elif not line:
                        event = "message"
                if not done:
                    raise ModelCallError("the stream ended early", status=None)
        except httpx.HTTPError as error:
            raise ModelCallError(f"stream from {self._shown_url} failed: {type(error).__name__}") from None
        except (ValueError, KeyError, AttributeError):  # not the event format modelpack servers send
            raise ModelCallError(f"stream from {self._shown_url} sent malformed events") from None

    def _bidi(
        self, name: str, stream_arg: str, items: Iterable[Any], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        """Send items over the WebSocket while reading results (a sender thread feeds the socket)."""
        from websockets.exceptions import WebSocketException

        ws_url = "ws" + self.url[4:] + f"/v1/methods/{name}/stream"
        args = {k: encode(v) for k, v in kwargs.items() if k != stream_arg}
        try:
            yield from self._bidi_session(ws_url, args, items)
        except (WebSocketException, OSError) as error:
            raise ModelCallError(f"stream from {self._shown_url} failed: {type(error).__name__}") from None

    def _bidi_session(self, ws_url: str, args: dict[str, Any], items: Iterable[Any]) -> Iterator[Any]:
        import threading

        from websockets.sync.client import connect

        with connect(ws_url, open_timeout=self.timeout, max_size=None) as socket:
            socket.send(json.dumps({"args": args}))

            def send_items() -> None:
                try:
                    for item in items:
                        socket.send(json.dumps({"item": encode(item)}))
                    socket.send(json.dumps({"end": True}))
                except Exception:  # the socket closed (server error); the reader reports it
                    pass

            sender = threading.Thread(target=send_items, daemon=True)
            sender.start()
            done = False
            for message in socket:
                data = json.loads(message)
                if "result" in data:
                    yield data["result"]  # typed by the caller (`call`)
                elif data.get("done"):
                    done = True
                    break
                elif "error" in data:
                    error = data["error"]
                    status = 422 if error.get("code") == "invalid_argument" else 500
                    raise ModelCallError(
                        str(error.get("message")), status=status, code=str(error.get("code"))
                    )
            sender.join(timeout=1)
            if not done:
                raise ModelCallError("the stream ended early", status=None)
