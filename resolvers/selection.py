"""What a field's selection asks for, fragments included."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from resolvers.context import Info

T = TypeVar("T")


def _fields(selections: Iterable[Selection], name: str) -> Iterable[SelectedField]:
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                yield selection
        elif isinstance(selection, FragmentSpread | InlineFragment):
            yield from _fields(selection.selections, name)


def _selects(selections: Iterable[Selection], path: Sequence[str]) -> bool:
    if not path:
        return True
    return any(_selects(field.selections, path[1:]) for field in _fields(selections, path[0]))


def selects(info: Info, path: Sequence[str]) -> bool:
    """Whether the current field's selection reaches `path` (field names, aliases aside),
    e.g. ("edges", "node", "balances"), under any fragment or alias."""
    return any(_selects(field.selections, path) for field in info.selected_fields)


def selected_arguments(info: Info, path: Sequence[str]) -> list[dict[str, object]] | None:
    """The arguments of every field at `path` under the current field (fragments included,
    aliases aside), for its resolver to read what those fields need with its own; None
    when a directive stands on the way, which only the executor may weigh. Literal Ints
    come as their IntValue nodes spell them (text), variables as their values."""
    found: list[dict[str, object]] = []
    pending = [(field.selections, 0) for field in info.selected_fields]
    while pending:
        selections, depth = pending.pop()
        for node in selections:
            if node.directives:
                return None
            if not isinstance(node, SelectedField):  # a fragment: its selections, at this level
                pending.append((node.selections, depth))
            elif node.name == path[depth]:
                if depth + 1 == len(path):
                    found.append(node.arguments)
                else:
                    pending.append((node.selections, depth + 1))
    return found


class PerField(Generic[T]):
    """Answers about the selection under a field that the document alone decides (not the
    variables), kept per operation and field: a document sent again, whose parsed operation
    is the same object while `resolvers/request_rules.py` keeps it, finds them. Bounded;
    each answer holds its operation and tag, since an id is only unique while its object
    lives."""

    def __init__(self, size: int = 1024) -> None:  # (about the parsed documents kept)
        self.size = size
        self._kept: dict[tuple[int, tuple[Any, ...], int], tuple[Any, object, T]] = {}

    def get(self, info: Info, tag: object = None) -> tuple[bool, T | None]:
        """(True, the answer kept for this field and `tag`), or (False, None). The tag
        tells apart answers of different questions about one field (a shape, say)."""
        operation = info.operation
        kept = self._kept.get((id(operation), _field_path(info.path), id(tag)))
        if kept is not None and kept[0] is operation and kept[1] is tag:
            return True, kept[2]
        return False, None

    def put(self, info: Info, answer: T, tag: object = None) -> None:
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]  # the oldest
        operation = info.operation
        self._kept[(id(operation), _field_path(info.path), id(tag))] = (operation, tag, answer)


def _field_path(path: Any) -> tuple[Any, ...]:
    """The field's place in the operation: response names and parent types, no list index
    (every item of a list has the same selection)."""
    keys: list[Any] = []
    while path is not None:
        if type(path.key) is str:
            keys.append(path.key)
            keys.append(path.typename)
        path = path.prev
    return tuple(keys)
