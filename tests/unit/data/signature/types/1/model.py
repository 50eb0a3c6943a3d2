# ruff: noqa
from __future__ import annotations

import typing as t
from collections.abc import Generator, Iterable
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt
import PIL.Image
from PIL import Image as PILImage

from modelpack import ModelClass
from modelpack.runtime import Audio, Concept, Frame, Image, Region, Text, Video


class AllTypes(ModelClass):
    @ModelClass.method
    def scalars(self, a: str, b: int, c: float, d: bool, e: bytes, f: Any, g: None) -> None:
        pass

    @ModelClass.method
    def containers(
        self,
        a: list,
        b: List[int],
        c: list[str],
        d: dict,
        e: Dict[str, float],
        f: dict[str, List[int]],
        g: Tuple[int, str],
        h: tuple[int, ...],
        i: tuple,
        j: t.List[t.Dict[str, Any]],
        k: List,
    ) -> Dict[str, Any]:
        pass

    @ModelClass.method
    def unions(
        self,
        a: Optional[int],
        b: Union[int, None],
        c: int | None,
        d: Union[int, str],
        e: None | str | int,
        f: Optional[Union[int, str]],
        g: Union[int, Optional[str]],
        h: "Optional[Text]",
        i: Union[int, int],
    ) -> Union[str, bytes]:
        pass

    @ModelClass.method
    def media(
        self,
        a: Text,
        b: Image,
        c: Audio,
        d: Video,
        e: Concept,
        f: Region,
        g: Frame,
        h: np.ndarray,
        i: npt.NDArray[np.float32],
        j: PIL.Image.Image,
        k: PILImage.Image,
        l: List[Region],
    ) -> List[Concept]:
        pass

    @ModelClass.method
    def iterable(self, a: int) -> Iterable[Frame]:
        yield Frame()

    @ModelClass.method
    def generator(self, a: int) -> Generator[Dict[str, int], None, None]:
        yield {}

    @ModelClass.method
    def typing_iterator(self, a: t.Iterator[Image]) -> t.Iterator[Region]:
        yield Region()
