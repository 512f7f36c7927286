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
