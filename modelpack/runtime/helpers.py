"""Base classes for the common model types.

`OpenAIModelClass` serves ``POST /v1/chat/completions`` and ``GET /v1/models``:

- wrap a backend: set ``base_url`` (e.g. ``"http://127.0.0.1:8000/v1"`` of a vLLM,
  SGLang or Ollama server that ``load_model`` starts with `start_backend`), or,
  Clarifai style, a class attribute ``client = OpenAI(base_url=...)``; requests are
  proxied to it (streaming too) with the backend's model name filled in;
- or implement chat yourself: override ``chat_completion(request) -> dict`` (and
  return an iterator of ``chat.completion.chunk`` dicts when ``request["stream"]``);
  `completion_response` / `completion_chunks` build those dicts from text.

`VisualClassifierClass` / `VisualDetectorClass` add the usual pre/post-processing
helpers (pure Python; Pillow only where images are decoded).
"""

from __future__ import annotations

import atexit
import base64
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelpack.runtime.model_class import ModelClass
from modelpack.runtime.types import Audio, Concept, Frame, Image, Region, Video

if TYPE_CHECKING:
    import subprocess


def completion_response(text: str, model: str, *, finish_reason: str = "stop") -> dict[str, Any]:
    """A ``chat.completion`` object with one assistant message."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def completion_chunks(deltas: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` objects for text pieces, first with the role, last with finish_reason."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""}, None)
    for piece in deltas:
        yield chunk({"content": piece}, None)
    yield chunk({}, "stop")


def _media_url(media: Any, mime: str) -> str:
    """The media's URL, else its bytes as a data URI."""
    if getattr(media, "url", None):
        return str(media.url)
    return f"data:{mime};base64,{base64.b64encode(media.bytes).decode('ascii')}"


def _media_parts(
    images: Sequence[Image], audios: Sequence[Audio], videos: Sequence[Video]
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    parts += [{"type": "image_url", "image_url": {"url": _media_url(i, "image/jpeg")}} for i in images]
    for audio in audios:
        data = base64.b64encode(audio.bytes).decode("ascii")
        parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    parts += [{"type": "video_url", "video_url": {"url": _media_url(v, "video/mp4")}} for v in videos]
    return parts


def build_openai_messages(
    prompt: str | None = None,
    image: Image | None = None,
    images: Sequence[Image] | None = None,
    audio: Audio | None = None,
    audios: Sequence[Audio] | None = None,
    video: Video | None = None,
    videos: Sequence[Video] | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    **older: Any,
) -> list[dict[str, Any]]:
    """The earlier messages (``messages``, or the older ``chat_history=``) plus a user message
    with the prompt and any media, in OpenAI's chat format (text alone stays a plain string)."""
    result = [dict(m) for m in (messages or older.get("chat_history") or [])]
    media = _media_parts(
        [*([image] if image else []), *(images or [])],
        [*([audio] if audio else []), *(audios or [])],
        [*([video] if video else []), *(videos or [])],
    )
    text = [{"type": "text", "text": prompt}] if prompt and prompt.strip() else []
    if media:
        result.append({"role": "user", "content": text + media})
    elif text:
        result.append({"role": "user", "content": prompt})
    return result


class OpenAIModelClass(ModelClass):
    """A chat model speaking the OpenAI API (see the module docstring)."""

    base_url: str | None = None
    api_key: str | None = None  # sent only to the backend, never logged
    model: str | None = None
    client: Any = None
    _backend_process: subprocess.Popen[bytes] | None = None

    # -- backend -------------------------------------------------------------
    def backend_url(self) -> str | None:
        """The backend's ``.../v1`` base URL, or None when the class implements chat itself."""
        if self.base_url:
            return self.base_url.rstrip("/")
        client_url = getattr(self.client, "base_url", None)
        return str(client_url).rstrip("/") if client_url else None

    def backend_api_key(self) -> str | None:
        return self.api_key or getattr(self.client, "api_key", None)

    def backend_model(self) -> str:
        """The backend's model name: ``model`` or the first of its ``GET /models``."""
        if self.model:
            return self.model
        url = self.backend_url()
        if url is None:
            return type(self).__name__
        data = self._backend_json("GET", "/models")
        models = data.get("data") or []
        self.model = str(models[0]["id"]) if models else "default"
        return self.model

    def _backend_json(self, verb: str, path: str, body: Any = None, timeout: float = 600) -> dict[str, Any]:
        url = self.backend_url()
        if url is None:
            raise RuntimeError("this OpenAIModelClass has no backend (set base_url or client)")
        headers = {"Content-Type": "application/json"}
        key = self.backend_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url + path, data=data, headers=headers, method=verb)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            result = json.loads(response.read())
        return result if isinstance(result, dict) else {"data": result}

    def start_backend(
        self, command: Sequence[str], port: int, *, host: str = "127.0.0.1", timeout: float = 600.0
    ) -> str:
        """Start an OpenAI-compatible server (vLLM, SGLang, Ollama...) and wait until it answers.

        Sets and returns ``base_url``; the process is terminated when the runtime exits.
        """
        import subprocess
        import urllib.error
        import urllib.request

        self._backend_process = process = subprocess.Popen(list(command))
        atexit.register(process.terminate)
        self.base_url = f"http://{host}:{port}/v1"
        headers = {}
        key = self.backend_api_key()
        if key:  # backends started with an API key refuse /models without it
            headers["Authorization"] = f"Bearer {key}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"backend exited with status {process.returncode}")
            try:
                probe = urllib.request.Request(self.base_url + "/models", headers=headers)
                with urllib.request.urlopen(probe, timeout=5):
                    return self.base_url
            except urllib.error.HTTPError as error:
                if error.code < 500:  # it answers (a refusal is reported by the first real call)
                    return self.base_url
                time.sleep(0.5)
            except OSError:
                time.sleep(0.5)
        process.terminate()
        raise RuntimeError(f"backend did not answer on {self.base_url} within {timeout:g}s")

    # -- chat ----------------------------------------------------------------
    def chat_completion(self, request: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer one chat request; override to implement chat without a backend."""
        if self.backend_url() is None:
            raise NotImplementedError("no backend configured and chat_completion is not implemented")
        body = dict(request, model=self.backend_model(), stream=False)
        return self._backend_json("POST", "/chat/completions", body)

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> str:
        """The assistant's reply text to ``messages`` (non-streaming)."""
        result = self.chat_completion({"messages": messages, **params, "stream": False})
        assert isinstance(result, dict)
        return str(result["choices"][0]["message"].get("content") or "")

    def chat_stream(self, messages: list[dict[str, Any]], **params: Any) -> Iterator[str]:
        """The reply as text pieces, streamed from the backend (or from `chat_completion`)."""
        if type(self).chat_completion is not OpenAIModelClass.chat_completion:
            result = self.chat_completion({"messages": messages, **params, "stream": True})
            chunks: Iterable[dict[str, Any]] = [result] if isinstance(result, dict) else result
            for chunk in chunks:
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or choice.get("message") or {}).get("content")
                    if piece:
                        yield piece
            return
        url = self.backend_url()
        if url is None:
            raise NotImplementedError("no backend configured")
        import urllib.request

        body = {"messages": messages, **params, "model": self.backend_model(), "stream": True}
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = self.backend_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            url + "/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                for choice in json.loads(data).get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece


def _softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _label(labels: Mapping[int, str] | Sequence[str] | None, index: int) -> str:
    if labels is None:
        return str(index)
    if isinstance(labels, Mapping):
        return str(labels.get(index, index))
    return str(labels[index]) if index < len(labels) else str(index)


def video_to_frames(video_bytes: bytes) -> Iterator[Frame]:
    """Decode a video (needs PyAV, ``av``): each frame as a JPEG `Frame` with its time in ms and index."""
    import io

    import av

    with av.open(io.BytesIO(video_bytes), mode="r") as container:
        for index, frame in enumerate(container.decode(video=0)):
            buffer = io.BytesIO()
            frame.to_image().convert("RGB").save(buffer, format="JPEG")
            millis = float(frame.time or 0.0) * 1000.0
            yield Frame(image=Image(bytes=buffer.getvalue()), time=millis, index=index)


class VisualClassifierClass(ModelClass):
    """An image classifier: images in, concepts with scores out."""

    video_to_frames = staticmethod(video_to_frames)

    @staticmethod
    def preprocess_image(image_bytes: bytes) -> Any:
        """Decode image bytes to an RGB PIL image (needs Pillow)."""
        import io

        from PIL import Image as PILImage

        return PILImage.open(io.BytesIO(image_bytes)).convert("RGB")

    @staticmethod
    def process_concepts(
        logits: Sequence[Sequence[float]],
        threshold: float = 0.0,
        model_labels: Mapping[int, str] | Sequence[str] | None = None,
        *,
        softmax: bool = True,
    ) -> list[list[Concept]]:
        """Per image, the concepts scoring at least ``threshold``, best first."""
        out = []
        for row in logits:
            values = [float(v) for v in row]
            scores = _softmax(values) if softmax else values
            concepts = [
                Concept(name=_label(model_labels, i), value=s) for i, s in enumerate(scores) if s >= threshold
            ]
            out.append(sorted(concepts, key=lambda c: -c.value))
        return out


class VisualDetectorClass(ModelClass):
    """An object detector: images in, regions (boxes with concepts) out."""

    preprocess_image = staticmethod(VisualClassifierClass.preprocess_image)

    @staticmethod
    def process_detections(
        results: Sequence[Mapping[str, Any]],
        threshold: float = 0.5,
        model_labels: Mapping[int, str] | Sequence[str] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[list[Region]]:
        """Per image, regions for detections scoring at least ``threshold``.

        Each result holds parallel ``boxes`` (x1, y1, x2, y2), ``scores`` and ``labels``;
        with ``image_sizes`` ((width, height) per image) pixel boxes become relative.
        """
        out = []
        for index, result in enumerate(results):
            width, height = image_sizes[index] if image_sizes else (1, 1)
            regions = []
            for box, score, label in zip(result["boxes"], result["scores"], result["labels"], strict=False):
                if float(score) < threshold:
                    continue
                x1, y1, x2, y2 = (float(v) for v in box)
                relative = [
                    max(0.0, min(1.0, x1 / width)),
                    max(0.0, min(1.0, y1 / height)),
                    max(0.0, min(1.0, x2 / width)),
                    max(0.0, min(1.0, y2 / height)),
                ]
                concept = Concept(name=_label(model_labels, int(label)), value=float(score))
                regions.append(Region(box=relative, concepts=[concept]))
            out.append(regions)
        return out
