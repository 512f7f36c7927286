"""Field values answered as JSON text made by the resolver, spliced into the answer as is.

A list field of a dashboard (End Users with their balances, the request log) completes
hundreds of values; graphql-core completes each through a resolver call and a completion
step, after the resolver has made an object per row. For a selection made only of plain
fields (`read_selection` says which), the resolver can instead write the field's JSON
itself, value by value as the general path would serialize it, and return it as a
`Preserialized`: the executor (resolvers/runtime/plain_lists.py) takes it as the completed value and
the HTTP answer's encoder (api/http_answer.py) splices its bytes into the document.

Only an HTTP request whose answer that encoder writes, with the fast paths on, gets them
(`splicing`); every other caller (WebSocket, in-process `schema.execute`) and every other
selection takes the general path. tests/test_preserialized_reads.py runs generated
selections through both and compares the answers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from resolvers.context import Info
from resolvers.runtime.versions import fast_paths_enabled
from resolvers.selection import PerField

# A shape: for a type, the fields `read_selection` accepts, each with the shape under it
# (None: a leaf). `__typename` is accepted everywhere.
Shape = tuple[str, dict[str, "Shape | None"]]
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
PAGE_INFO_SHAPE: Shape = ("PageInfo", {"hasNextPage": None, "endCursor": None})


class Preserialized:
    """A field's completed value as JSON text (orjson bytes)."""

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json

    def __repr__(self) -> str:
        return f"Preserialized({self.json[:60]!r})"


def orjson_default(value: Any) -> Any:
    """orjson's `default`: a preserialized value goes in as its own bytes."""
    if type(value) is Preserialized:
        return orjson.Fragment(value.json)
    raise TypeError


def json_default(value: Any) -> Any:
    """The `json` module's `default` (the encoder's slow way): the value it stands for."""
    if type(value) is Preserialized:
        return orjson.loads(value.json)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def splicing(info: Info) -> bool:
    """Whether this request's answer may hold preserialized values."""
    return info.context.preserialized and fast_paths_enabled()


class NotPlain(Exception):
    """A value the preserialized path does not write (an Int beyond 32 bits, say): the
    general path answers the field, and reports what it reports."""


@dataclass(frozen=True, slots=True)
class Selected:
    """One response entry of a selection: its name in the answer, the field it reads, and
    what is selected under it (None for a leaf)."""

    response_name: str
    field_name: str
    below: tuple[Selected, ...] | None
    # the field's arguments, for a field `read_selection` was told takes some (by name)
    arguments: tuple[tuple[str, Any], ...] = ()


# For `read_selection`: the fields that may take arguments, (type name, field name), and
# the names of those they take.
Arguments = Mapping[tuple[str, str], frozenset[str]]
_NO_ARGUMENTS: Arguments = {}


def read_selection(
    info: Info, shape: Shape, arguments: Arguments = _NO_ARGUMENTS
) -> tuple[Selected, ...] | None:
    """The selection under the field being resolved, fragments inlined and same-named
    entries merged in the order graphql-core answers them; None when it selects anything
    outside `shape`, uses a directive, or gives a field of it an argument that `arguments`
    does not name (a shape is always read with the same `arguments`).

    Kept per operation and field: without a directive, the selection depends on the
    document alone but for the arguments variables give, which are bound anew for each
    request (`_bindings`). One whose arguments may come from a variable without telling
    which is read again each time."""
    found, kept = _READ.get(info, shape)
    if found and kept is not None:
        if not kept.bound:
            return kept.selection
        if kept.selection is not None:
            bound = _bind(kept.selection, kept.bound, info.variable_values)
            if bound is not None:
                return bound
    selection = _collect([field.selections for field in info.selected_fields], shape, arguments)
    bindings = {} if selection is None else _bindings(selection, info.variable_values)
    if bindings is not None:
        _READ.put(info, _Kept(selection, bindings), shape)
    return selection


@dataclass(frozen=True, slots=True)
class _Kept:
    """A selection as read, and the arguments of its entries that variables give: by the
    id of the entry (kept alive here), (argument, variable) pairs."""

    selection: tuple[Selected, ...] | None
    bound: dict[int, tuple[tuple[str, str], ...]]


def _bindings(
    selection: tuple[Selected, ...], variables: dict[str, Any]
) -> dict[int, tuple[tuple[str, str], ...]] | None:
    """Which variable gives each argument of `selection` that one gives; None when that
    cannot be told. Strawberry hands a variable's argument as the very object of the
    request's variables and a literal as the document's own value, so an argument is a
    variable's when it is that variable's object, unless the object may be a literal's as
    well (null, a boolean, a string of one character: shared objects) or several
    variables' (it may be either); lists and input objects may hold a variable, and null
    may be an absent one's. That identity is Strawberry's `convert_value`, as of the
    verified version (resolvers/runtime/versions.py: with any other, nothing is
    preserialized); tests/api/test_preserialized_reads.py sizes a ranking by a variable."""
    found: dict[int, tuple[tuple[str, str], ...]] = {}
    for entry in selection:
        pairs = []
        for argument, value in entry.arguments:
            names = [name for name, given in variables.items() if given is value]
            if value is None or isinstance(value, list | dict) or len(names) > 1:
                return None
            if names:
                if type(value) is bool or (type(value) is str and len(value) < 2):
                    return None  # a literal's object too, maybe
                pairs.append((argument, names[0]))
        if pairs:
            found[id(entry)] = tuple(pairs)
        if entry.below:
            below = _bindings(entry.below, variables)
            if below is None:
                return None
            found.update(below)
    return found


def _bind(
    selection: tuple[Selected, ...],
    bound: dict[int, tuple[tuple[str, str], ...]],
    variables: dict[str, Any],
) -> tuple[Selected, ...] | None:
    """`selection` with the arguments variables give taken from this request's
    `variables`; None when one of them is absent (the selection is then read anew)."""
    entries = []
    for entry in selection:
        below = entry.below
        if below:
            below = _bind(below, bound, variables)
            if below is None:
                return None
        pairs = bound.get(id(entry))
        if pairs or below is not entry.below:
            given = dict(entry.arguments)
            for argument, name in pairs or ():
                if name not in variables:
                    return None
                given[argument] = variables[name]
            entry = Selected(
                entry.response_name, entry.field_name, below, tuple(sorted(given.items()))
            )
        entries.append(entry)
    return tuple(entries)


_READ: PerField[_Kept] = PerField()


# Same-named entries of a selection: name in the answer -> (field, its arguments, their
# selection sets).
_Merged = dict[str, tuple[str, tuple[tuple[str, Any], ...], list[list[Selection]]]]


def _merge(
    selections: list[Selection], shape: Shape, arguments: Arguments, merged: _Merged
) -> bool:
    """Adds `selections` (fragments inlined) to `merged`; False when outside `shape`. (A
    function of its own, not a closure calling itself: that would be a reference cycle
    per call, left to the cyclic collector with the selection it holds.)"""
    type_name, fields = shape
    for node in selections:
        if node.directives:
            return False
        if isinstance(node, SelectedField):
            name = node.name
            if name != "__typename" and name not in fields:
                return False
            given: tuple[tuple[str, Any], ...] = ()
            if node.arguments:
                if not node.arguments.keys() <= arguments.get((type_name, name), frozenset()):
                    return False
                given = tuple(sorted(node.arguments.items()))
            key = node.alias or name
            found = merged.get(key)
            if found is None:
                merged[key] = (name, given, [node.selections])
            elif found[0] != name or found[1] != given:
                return False  # validation refuses this; never guess
            else:
                found[2].append(node.selections)
        elif isinstance(node, InlineFragment | FragmentSpread):
            if node.type_condition not in (None, type_name):
                return False
            if not _merge(node.selections, shape, arguments, merged):
                return False
        else:
            return False
    return True


def _collect(
    sets: Iterable[list[Selection]], shape: Shape, arguments: Arguments = _NO_ARGUMENTS
) -> tuple[Selected, ...] | None:
    fields = shape[1]
    merged: _Merged = {}
    if not all(_merge(selections, shape, arguments, merged) for selections in sets):
        return None
    selected: list[Selected] = []
    for key, (name, given, below_sets) in merged.items():
        below_shape = None if name == "__typename" else fields[name]
        if below_shape is None:
            selected.append(Selected(key, name, None, given))
            continue
        below = _collect(below_sets, below_shape, arguments)
        if below is None:
            return None
        selected.append(Selected(key, name, below, given))
    return tuple(selected)


def node_entries(
    selection: tuple[Selected, ...], fields: Iterable[str]
) -> tuple[tuple[str, str], ...] | None:
    """(name in the answer, field) of a connection's one node selection, for the database
    to write each node's JSON, when it selects only `fields` or `__typename`; None when it
    selects anything else, or when no node, or more than one, is selected."""
    found = [
        node.below
        for edges in selection
        if edges.field_name == "edges" and edges.below
        for node in edges.below
        if node.field_name == "node" and node.below is not None
    ]
    if len(found) != 1 or not found[0]:
        return None
    entries = tuple((s.response_name, s.field_name) for s in found[0])
    plain = {"__typename", *fields}
    return entries if all(f in plain for _, f in entries) else None


def given_first(first: Any, most: int) -> int | None:
    """A list field's `first` argument as Strawberry hands it (a literal as its IntValue
    node spells it, a variable's as an int) read as the general path reads it; None for
    one it would refuse (not an Int from 0 to `most`), which is left to it to report."""
    if type(first) is str and first.lstrip("-").isdigit():
        first = int(first)
    return first if type(first) is int and 0 <= first <= most else None


def page_size(selected: Selected, default: int, most: int) -> int:
    """A list field's `first` (`default` where absent), as `given_first` reads it."""
    first = given_first(dict(selected.arguments).get("first", default), most)
    if first is None:
        raise NotPlain
    return first


def checked_int(value: int) -> int:
    """An Int as GraphQL serializes it; beyond 32 bits the general path reports the error."""
    if type(value) is not int or not INT_MIN <= value <= INT_MAX:
        raise NotPlain
    return value


def checked_float(value: float) -> float:
    """A Float as GraphQL serializes it (an int becomes a float; never NaN or infinite)."""
    if type(value) is int:
        value = float(value)
    if type(value) is not float or not math.isfinite(value):
        raise NotPlain
    return value


def optional_int(value: int | None) -> int | None:
    return None if value is None else checked_int(value)


def optional_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def text(value: Any) -> str:
    if type(value) is not str:
        raise NotPlain
    return value


def optional_text(value: Any) -> str | None:
    return None if value is None else text(value)


def object_json(
    selection: tuple[Selected, ...], type_name: str, value_of: Callable[[Selected], Any]
) -> dict[str, Any]:
    """An object's answer: `__typename` is the type's name, any other entry `value_of` it."""
    return {
        s.response_name: type_name if s.field_name == "__typename" else value_of(s)
        for s in selection
    }


def objects_of_columns(names: Sequence[str], columns: Sequence[Iterable[Any]]) -> list[Any]:
    """The objects whose entries are `names` (in order) and whose values are taken one from
    each of `columns` (of one length) in turn: a series' buckets, kept column by column."""
    return list(map(_object_maker(len(names))(tuple(names)), *columns))


@lru_cache(maxsize=32)
def _object_maker(size: int) -> Callable[[tuple[str, ...]], Callable[..., dict[str, Any]]]:
    """For `size` entries: given their names, a function of `size` values answering their
    dict. A dict display is three times quicker than `dict(zip(names, values))` per object;
    the text compiled holds only indices, the names stay data."""
    values = ", ".join(f"v{i}" for i in range(size))
    entries = ", ".join(f"n[{i}]: v{i}" for i in range(size))
    namespace: dict[str, Any] = {}
    exec(f"def maker(n):\n    return lambda {values}: {{{entries}}}", namespace)
    return namespace["maker"]  # type: ignore[no-any-return]


def written_edges(selection: tuple[Selected, ...], nodes: Iterable[str]) -> Any:
    """A connection's edges as one JSON text, `[{"node": <text>}, ...]`, when each edge asks
    for its node alone (`selection`, aliased or not) and the database wrote every node's
    text; else None. One text instead of an object and a fragment per edge."""
    if len(selection) != 1 or selection[0].field_name != "node":
        return None
    head = f'{{"{selection[0].response_name}":'  # a GraphQL name needs no escaping
    return orjson.Fragment("[" + ",".join([f"{head}{text}}}" for text in nodes]) + "]")


def page_info(selection: tuple[Selected, ...], has_next: bool, end: str | None) -> dict[str, Any]:
    """A Relay connection's pageInfo."""
    return object_json(
        selection, "PageInfo", lambda s: has_next if s.field_name == "hasNextPage" else end
    )


def encode(value: Any) -> Preserialized:
    return Preserialized(orjson.dumps(value))
