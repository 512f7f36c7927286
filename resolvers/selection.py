"""What a field's selection asks for, fragments included."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from resolvers.context import Info


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
