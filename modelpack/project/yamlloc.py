"""YAML loading that remembers where every key and value stood, for located errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

# Aliases let a small file describe a huge (or cyclic) tree; past this many nodes the
# document is refused instead of exhausting memory or the recursion limit.
MAX_NODES = 100_000


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class RawScalar:
    """The scalar exactly as written, so `3.10` read as the float 3.1 can be detected."""

    text: str
    quoted: bool


@dataclass
class YamlDocument:
    data: Any
    key_positions: dict[PathKey, Position] = field(default_factory=dict)
    value_positions: dict[PathKey, Position] = field(default_factory=dict)
    raw_scalars: dict[PathKey, RawScalar] = field(default_factory=dict)
    duplicate_keys: list[tuple[PathKey, Position]] = field(default_factory=list)

    def locate(self, path: PathKey, *, key: bool = False) -> Position | None:
        """Where `path` stands: its value (or key), else the nearest ancestor that exists."""
        path = tuple(path)
        while True:
            primary = self.key_positions if key else self.value_positions
            secondary = self.value_positions if key else self.key_positions
            if path in primary:
                return primary[path]
            if path in secondary:
                return secondary[path]
            if not path:
                return None
            path = path[:-1]


class YamlSyntaxError(Exception):
    def __init__(self, message: str, position: Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _position(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raise YamlSyntaxError with a position on bad syntax."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise YamlSyntaxError(f"invalid YAML: {problem}", _position(mark) if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a control character: not a MarkedYAMLError
        before = text[: exc.position]
        position = Position(before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlSyntaxError(
            f"invalid YAML: unacceptable character #x{character:04x}: {exc.reason}; remove it", position
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {str(exc).splitlines()[0]}", None) from None
    document = YamlDocument(data=None)
    if node is None:
        return document
    constructor = yaml.SafeLoader("")
    try:
        document.data = _build(node, (), document, constructor, _Walk())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(
            f"invalid YAML: {exc.problem or exc}", _position(mark) if mark else None
        ) from None
    except RecursionError:  # a cycle the walk cannot see (merge keys, complex keys)
        raise YamlSyntaxError(
            "invalid YAML: recursive alias (a node that contains itself); remove the alias",
            _position(node.start_mark),
        ) from None
    document.value_positions[()] = _position(node.start_mark)
    return document


@dataclass
class _Walk:
    """Guards the tree walk against alias cycles and alias bombs."""

    active: set[int] = field(default_factory=set)
    count: int = 0


def _build(
    node: yaml.Node, path: PathKey, doc: YamlDocument, constructor: yaml.SafeLoader, walk: _Walk
) -> Any:
    walk.count += 1
    if walk.count > MAX_NODES:
        raise YamlSyntaxError(
            f"invalid YAML: more than {MAX_NODES} values once aliases are expanded; "
            "write the config without recursive or repeated aliases",
            _position(node.start_mark),
        )
    if id(node) in walk.active:
        raise YamlSyntaxError(
            "invalid YAML: recursive alias (a node that contains itself); remove the alias",
            _position(node.start_mark),
        )
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        walk.active.add(id(node))
        try:
            return _build_collection(node, path, doc, constructor, walk)
        finally:
            walk.active.discard(id(node))
    doc.value_positions[path] = _position(node.start_mark)
    assert isinstance(node, yaml.ScalarNode)
    doc.raw_scalars[path] = RawScalar(node.value, node.style in ("'", '"'))
    return constructor.construct_object(node, deep=True)


def _build_collection(
    node: yaml.Node, path: PathKey, doc: YamlDocument, constructor: yaml.SafeLoader, walk: _Walk
) -> Any:
    doc.value_positions[path] = _position(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            child = (*path, key)
            if key in result:
                doc.duplicate_keys.append((child, _position(key_node.start_mark)))
            doc.key_positions[child] = _position(key_node.start_mark)
            result[key] = _build(value_node, child, doc, constructor, walk)
        return result
    assert isinstance(node, yaml.SequenceNode)
    return [_build(item, (*path, i), doc, constructor, walk) for i, item in enumerate(node.value)]


def format_path(path: PathKey) -> str:
    """Dotted field path, with list indices in brackets: `concepts[2].id`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).isidentifier() and not all(c.isalnum() or c in "-_" for c in str(part)):
            out += f"[{str(part)!r}]"
        else:
            out += ("." if out else "") + str(part)
    return out
