"""Model data types and their JSON wire format.

These are the values a model method receives and returns. Over HTTP every value
travels as JSON; the wire format of each type is:

========== ==============================================================================
type       JSON
========== ==============================================================================
str        a string
int/float  a number (an int argument refuses 1.5; a float argument accepts 1)
bool       ``true`` / ``false``
bytes      ``{"base64": "..."}``; as an input a plain string is taken as its UTF-8 bytes
Text       ``{"text": "..."}`` or ``{"url": "https://..."}``; as an input also a plain string
Image      ``{"url": "https://..."}`` or ``{"base64": "..."}`` (encoded PNG/JPEG/...)
Audio      same as Image
Video      same as Image
Concept    ``{"id": "cat", "name": "cat", "value": 0.97}`` (``id`` defaults to ``name``)
Region     ``{"box": [x1, y1, x2, y2], "concepts": [Concept, ...], "id": "", "text": ""}``;
           the box is relative (0..1) left, top, right, bottom; optional ``"mask": Image``,
           ``"point": [x, y, z]`` and ``"track_id"``
Frame      ``{"image": Image, "regions": [Region, ...], "time": 1.5}`` (seconds; ``"index": 3`` when set)
JSON       any JSON value, as it is
NamedFields an object of its fields (``NamedFields(label=str, score=float)``), each in its wire format
List[T]    a JSON array; ``Tuple[...]`` too
Dict[K, V] a JSON object (keys are strings on the wire)
Optional   the value or ``null``
ndarray    nested JSON arrays (numpy must be installed in the model's image)
PIL.Image  same as Image (Pillow must be installed)
Any        any JSON value, passed through unchanged
========== ==============================================================================

Media given by URL are fetched lazily, the first time the model reads ``.bytes``,
through `modelpack.runtime.fetch` (http/https only, size limit, timeout, no private
addresses unless ``MODELPACK_ALLOW_PRIVATE_URLS=1``). These classes also stand in
for ``clarifai.runners.utils.data_types`` so Clarifai model code runs unmodified.
"""

from __future__ import annotations

import base64
import builtins
import io
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from modelpack.runtime.fetch import check_url_syntax, fetch_url

_M = TypeVar("_M", bound="_Media")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Media:
    """Bytes given inline or by URL (fetched on first use)."""

    kind = "media"

    def __init__(self, bytes: bytes | None = None, url: str | None = None) -> None:
        self._bytes = bytes
        self.url = url

    @property
    def bytes(self) -> bytes:
        if self._bytes is None:
            if not self.url:
                return b""
            self._bytes = fetch_url(self.url)
        return self._bytes

    @bytes.setter
    def bytes(self, value: bytes) -> None:
        self._bytes = value

    def to_json(self) -> dict[str, Any]:
        if self._bytes is None and self.url:
            return {"url": self.url}
        data: dict[str, Any] = {"base64": _b64(self._bytes or b"")}
        if self.url:
            data["url"] = self.url
        return data

    @classmethod
    def from_json(cls: type[_M], value: Any) -> _M:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f'expected an object {{"url": ...}} or {{"base64": ...}} for {cls.__name__}')
        unknown = set(value) - {"url", "base64"}
        if unknown:
            raise TypeError(f"unknown field {sorted(unknown)[0]!r} for {cls.__name__}")
        if "base64" in value:
            try:
                data = base64.b64decode(value["base64"], validate=True)
            except (ValueError, TypeError) as error:
                raise TypeError(f"invalid base64 for {cls.__name__}") from error
            return cls(bytes=data, url=value.get("url"))
        if "url" in value:
            url = value["url"]
            if not isinstance(url, str):
                raise TypeError("url must be a string")
            check_url_syntax(url)
            return cls(url=url)
        raise TypeError(f'expected "url" or "base64" for {cls.__name__}')

    @classmethod
    def from_url(cls: type[_M], url: str) -> _M:
        return cls(url=url)

    @classmethod
    def from_bytes(cls: type[_M], data: builtins.bytes) -> _M:
        return cls(bytes=data)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Media)
        return self.url == other.url and self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.url, self._bytes))

    def __repr__(self) -> str:
        inline = f"{len(self._bytes)} bytes" if self._bytes is not None else "not fetched"
        return f"{type(self).__name__}(url={self.url!r}, {inline})"


class Image(_Media):
    """An image (encoded bytes). ``to_pil``/``from_pil`` need Pillow."""

    def to_pil(self) -> Any:
        from PIL import Image as PILImage

        return PILImage.open(io.BytesIO(self.bytes))

    @classmethod
    def from_pil(cls, image: Any, format: str = "PNG") -> Image:
        buffer = io.BytesIO()
        image.save(buffer, format=format)
        return cls(bytes=buffer.getvalue())

    def to_numpy(self) -> Any:
        import numpy as np

        return np.asarray(self.to_pil().convert("RGB"))

    @classmethod
    def from_numpy(cls, array: Any) -> Image:
        from PIL import Image as PILImage

        return cls.from_pil(PILImage.fromarray(array))


class Audio(_Media):
    """Encoded audio (WAV, MP3, ...)."""


class Video(_Media):
    """Encoded video (MP4, ...)."""


class Text:
    """Text given inline or by URL."""

    def __init__(self, text: str = "", url: str | None = None) -> None:
        self._text = text
        self.url = url

    @property
    def text(self) -> str:
        if not self._text and self.url:
            self._text = fetch_url(self.url).decode("utf-8", errors="replace")
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value

    def to_json(self) -> dict[str, Any]:
        if not self._text and self.url:
            return {"url": self.url}
        return {"text": self._text}

    @classmethod
    def from_json(cls, value: Any) -> Text:
        if isinstance(value, Text):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and set(value) <= {"text", "url"}:
            text, url = value.get("text", ""), value.get("url")
            if not isinstance(text, str) or (url is not None and not isinstance(url, str)):
                raise TypeError("text and url must be strings")
            if url:
                check_url_syntax(url)
            return cls(text, url)
        raise TypeError('expected a string or an object {"text": ...} for Text')

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Text):
            return NotImplemented
        return (self._text, self.url) == (other._text, other.url)

    def __hash__(self) -> int:
        return hash((self._text, self.url))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Text({self._text!r}" + (f", url={self.url!r})" if self.url else ")")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number")
    return float(value)


@dataclass
class Concept:
    """A label with a score. ``id`` defaults to ``name``."""

    name: str = ""
    value: float = 1.0
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.name

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "value": self.value}

    @classmethod
    def from_json(cls, value: Any) -> Concept:
        if isinstance(value, Concept):
            return value
        if not isinstance(value, dict) or not set(value) <= {"id", "name", "value"}:
            raise TypeError('expected an object {"id", "name", "value"} for Concept')
        name, cid = value.get("name", ""), value.get("id", "")
        if not isinstance(name, str) or not isinstance(cid, str):
            raise TypeError("Concept id and name must be strings")
        if not name and not cid:
            raise TypeError("Concept needs a name or an id")
        return cls(name=name or cid, value=_number(value.get("value", 1.0), "Concept value"), id=cid)


@dataclass
class Region:
    """A box (relative x1, y1, x2, y2) with concepts; optionally a mask, a point, a track id and text."""

    box: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0, 1.0])
    concepts: list[Concept] = field(default_factory=list)
    id: str = ""
    text: str = ""
    mask: Image | None = None  # a segmentation mask, as an image of the region
    point: list[float] | None = None  # a keypoint: relative x, y and z (or visibility)
    track_id: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"box": list(self.box), "concepts": [c.to_json() for c in self.concepts]}
        for key in ("id", "text", "track_id"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.mask is not None:
            data["mask"] = self.mask.to_json()
        if self.point is not None:
            data["point"] = list(self.point)
        return data

    @classmethod
    def from_json(cls, value: Any) -> Region:
        if isinstance(value, Region):
            return value
        keys = {"box", "concepts", "id", "text", "mask", "point", "track_id"}
        if not isinstance(value, dict) or not set(value) <= keys:
            raise TypeError('expected an object {"box", "concepts", "mask", "point", ...} for Region')
        box = value.get("box", [0.0, 0.0, 1.0, 1.0])
        if not isinstance(box, list) or len(box) != 4:
            raise TypeError("Region box must be a list [x1, y1, x2, y2]")
        concepts = value.get("concepts", [])
        if not isinstance(concepts, list):
            raise TypeError("Region concepts must be a list")
        point = value.get("point")
        if point is not None and (not isinstance(point, list) or len(point) not in (2, 3)):
            raise TypeError("Region point must be a list [x, y] or [x, y, z]")
        return cls(
            box=[_number(v, "box coordinate") for v in box],
            concepts=[Concept.from_json(c) for c in concepts],
            id=str(value.get("id", "")),
            text=str(value.get("text", "")),
            mask=Image.from_json(value["mask"]) if value.get("mask") is not None else None,
            point=[_number(v, "point coordinate") for v in point] if point is not None else None,
            track_id=str(value.get("track_id", "")),
        )


@dataclass
class Frame:
    """A video frame: the image, the regions found in it and its time in seconds."""

    image: Image = field(default_factory=Image)
    regions: list[Region] = field(default_factory=list)
    time: float = 0.0
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": self.image.to_json(),
            "regions": [r.to_json() for r in self.regions],
            "time": self.time,
        }
        if self.index:
            data["index"] = self.index
        return data

    @classmethod
    def from_json(cls, value: Any) -> Frame:
        if isinstance(value, Frame):
            return value
        if not isinstance(value, dict) or not set(value) <= {"image", "regions", "time", "index"}:
            raise TypeError('expected an object {"image", "regions", "time", "index"} for Frame')
        index = value.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("Frame index must be an integer")
        regions = value.get("regions", [])
        if not isinstance(regions, list):
            raise TypeError("Frame regions must be a list")
        image = Image.from_json(value["image"]) if "image" in value else Image()
        return cls(
            image=image,
            regions=[Region.from_json(r) for r in regions],
            time=_number(value.get("time", 0.0), "Frame time"),
            index=index,
        )


class JSON:
    """Any JSON value, passed as it is (``JSON({"a": 1}).value``)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, JSON) else other)

    def __hash__(self) -> int:
        return hash(repr(self.value))

    def __repr__(self) -> str:
        return f"JSON({self.value!r})"

    def to_json(self) -> Any:
        return self.value

    @classmethod
    def from_json(cls, value: Any) -> JSON:
        return value if isinstance(value, JSON) else cls(value)


class _NamedFieldsType(type):
    """``NamedFields(a=str, b=int)`` (types as values) makes a type for annotations; with
    values it makes an instance."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if (
            kwargs
            and not args
            and all(isinstance(v, type) or hasattr(v, "__origin__") for v in kwargs.values())
        ):
            label = ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())
            return type(
                f"NamedFields({label})", (cls,), {"__annotations__": dict(kwargs), "FIELDS": dict(kwargs)}
            )
        return super().__call__(*args, **kwargs)


class NamedFields(metaclass=_NamedFieldsType):
    """Named values: ``-> NamedFields(label=str, score=float)``; an object on the wire."""

    FIELDS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def keys(self) -> Any:
        return self.__dict__.keys()

    def values(self) -> Any:
        return self.__dict__.values()

    def items(self) -> Any:
        return self.__dict__.items()

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NamedFields):
            return dict(self.items()) == dict(other.items())
        return isinstance(other, dict) and dict(self.items()) == other

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.keys())))

    def __repr__(self) -> str:
        return "NamedFields(" + ", ".join(f"{k}={v!r}" for k, v in self.items()) + ")"

    def to_json(self) -> dict[str, Any]:
        return dict(self.items())  # values are encoded by the caller (`introspect.encode`)


DataType = _Media | Text | Concept | Region | Frame | JSON
DATA_TYPE_CLASSES: dict[str, type[DataType]] = {
    "JSON": JSON,
    "Text": Text,
    "Image": Image,
    "Audio": Audio,
    "Video": Video,
    "Concept": Concept,
    "Region": Region,
    "Frame": Frame,
}
