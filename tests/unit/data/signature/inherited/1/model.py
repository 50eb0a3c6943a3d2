# ruff: noqa
"""The model class derives from ModelClass through another class in the file."""

from typing import Iterator

import modelpack.runtime as mr

THRESHOLD = 0.5


class Base(mr.ModelClass):
    THRESHOLD = 0.25

    @mr.ModelClass.method
    def predict(self, text: str) -> str:
        """Base version, overridden below."""
        return text

    @mr.ModelClass.method
    def score(self, text: str, threshold: float = THRESHOLD) -> float:
        """Uses the class-level constant."""
        return threshold

    @mr.ModelClass.method
    def dropped(self) -> str:
        return ""


class Middle(Base):
    def dropped(self) -> str:
        """Overridden without the decorator: no longer a method of the API."""
        return "x"


class Leaf(Middle):
    @Middle.method
    def predict(self, text: str, threshold: float = THRESHOLD) -> str:
        """Leaf version."""
        return text

    @Base.method
    def stream(self, text: str) -> Iterator[str]:
        yield text


class Unrelated:
    @staticmethod
    def method(f):
        return f
