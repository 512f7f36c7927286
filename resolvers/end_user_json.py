"""The End User connection written as JSON straight from the report's lines
(resolvers/preserialized.py): each value as the general path serializes it (IDs as
strings, DateTime by `isoformat`, enums by name, Int within 32 bits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from models.allocation_report import (
    BALANCE_FIELD_COLUMNS,
    BURN_MARKS,
    END_USER_FIELD_SQL,
    BalanceLine,
    EndUserLine,
    PageJson,
    RankedEntries,
)
from resolvers.preserialized import (
    PAGE_INFO_SHAPE,
    Arguments,
    NotPlain,
    Selected,
    Shape,
    checked_float,
    checked_int,
    node_entries,
    object_json,
    optional_int,
    optional_text,
    optional_time,
    page_info,
    text,
    written_edges,
)

_BALANCE: dict[str, Callable[[BalanceLine], Any]] = {
    "pool": lambda b: text(b.pool_key),
    "allocated": lambda b: checked_int(b.allocated),
    "used": lambda b: checked_int(b.used),
    "remaining": lambda b: checked_int(b.remaining),
    "expired": lambda b: checked_int(b.expired),
    "status": lambda b: b.status.name,
    "version": lambda b: checked_int(b.version),
    "lowBalanceThreshold": lambda b: optional_int(b.threshold),
    "burnRatePerDay": lambda b: checked_float(b.burn.rate_per_day),
    "projectedExhaustionAt": lambda b: optional_time(b.burn.exhaustion_at),
}
_END_USER: dict[str, Callable[[EndUserLine], Any]] = {
    "id": lambda e: str(e.id),
    "externalId": lambda e: text(e.external_id),
    "name": lambda e: optional_text(e.name),
    "email": lambda e: optional_text(e.email),
    "createdAt": lambda e: e.created_at.isoformat(),
}


@dataclass(frozen=True, slots=True)
class Balances:
    """Each End User's balance lines, or (on PostgreSQL, when it can) the JSON text of its
    balances as the database wrote it for the one balances selection, and of its whole node
    for the one node selection."""

    lines: dict[int, list[BalanceLine]] = field(default_factory=dict)
    texts: dict[int, str] | None = None
    # each End User's node of the one node selection, as the database wrote it
    nodes: dict[int, str] | None = None


BALANCE_SHAPE: Shape = ("EndUserBalance", dict.fromkeys(_BALANCE))
END_USER_SHAPE: Shape = (
    "EndUser",
    {**dict.fromkeys(_END_USER), "balances": BALANCE_SHAPE, "balance": BALANCE_SHAPE},
)
# A ranked balance (the allocation summary's rankings) with its End User's plain fields.
RANKED_SHAPE: Shape = (
    "EndUserBalance",
    {**dict.fromkeys(_BALANCE), "endUser": ("EndUser", dict.fromkeys(_END_USER))},
)
# A node's `balance(pool:)`: its balance in the pool of that key (null when the application
# has no such pool), read from the same lines as `balances`.
CONNECTION_ARGUMENTS: Arguments = {("EndUser", "balance"): frozenset({"pool"})}
CONNECTION_SHAPE: Shape = (
    "EndUserConnection",
    {
        "totalCount": None,
        "pageInfo": PAGE_INFO_SHAPE,
        "edges": ("EndUserEdge", {"cursor": None, "node": END_USER_SHAPE}),
    },
)


def _node_fields(selection: tuple[Selected, ...], name: str) -> list[Selected]:
    """The entries of the nodes' field `name` (any alias) in a connection's selection."""
    return [
        node
        for edge_part in selection
        if edge_part.field_name == "edges" and edge_part.below
        for node_part in edge_part.below
        if node_part.field_name == "node" and node_part.below
        for node in node_part.below
        if node.field_name == name
    ]


def _balance_selections(selection: tuple[Selected, ...]) -> list[Selected]:
    return _node_fields(selection, "balances")


def selects_balances(selection: tuple[Selected, ...]) -> bool:
    return bool(_balance_selections(selection))


def selects_pool_balance(selection: tuple[Selected, ...]) -> bool:
    """Whether a node selects `balance(pool:)`."""
    return bool(_node_fields(selection, "balance"))


def balance_entries(selection: tuple[Selected, ...]) -> tuple[tuple[str, str], ...] | None:
    """(name in the answer, field) of the one balances selection, when the database can
    write all of it (BALANCE_FIELD_COLUMNS, and the burn as marks: BURN_MARKS); else None."""
    found = _balance_selections(selection)
    if len(found) != 1:
        return None
    entries = tuple((s.response_name, s.field_name) for s in found[0].below or ())
    if all(f == "__typename" or f in BALANCE_FIELD_COLUMNS or f in BURN_MARKS for _, f in entries):
        return entries
    return None


def page_json(selection: tuple[Selected, ...]) -> PageJson | None:
    """What of a page of `selection` the database can write as JSON (on PostgreSQL)."""
    balances = balance_entries(selection)
    node = node_entries(selection, ("balances", *END_USER_FIELD_SQL))
    if node is not None and balances is None and selects_balances(selection):
        node = None  # its balances are not the database's to write
    if balances is None and node is None:
        return None
    return PageJson(None if balances is None else (balances, "EndUserBalance"), node)


def selects_burn(selection: tuple[Selected, ...]) -> bool:
    """Whether any balance selected asks for what the burn window gives."""
    pending = list(selection)
    while pending:
        entry = pending.pop()
        if entry.field_name in BURN_MARKS:
            return True
        pending.extend(entry.below or ())
    return False


def _typename(_: BalanceLine) -> str:
    return "EndUserBalance"


@lru_cache(maxsize=64)
def _balance_readers(
    selection: tuple[Selected, ...],
) -> tuple[tuple[str, Callable[[BalanceLine], Any]], ...]:
    # a balance's fields are all leaves (endUser is outside the shape)
    return tuple(
        (s.response_name, _typename if s.field_name == "__typename" else _BALANCE[s.field_name])
        for s in selection
    )


def _balances(selection: tuple[Selected, ...], lines: list[BalanceLine]) -> list[dict[str, Any]]:
    readers = _balance_readers(selection)
    return [{name: read(line) for name, read in readers} for line in lines]


def ranked_json(selection: tuple[Selected, ...], lines: list[EndUserLine]) -> list[dict[str, Any]]:
    """Ranked balances (read with RANKED_SHAPE), each line's balance with its End User."""
    return [
        object_json(
            selection,
            "EndUserBalance",
            lambda s, line=line: _ranked_value(s, line),
        )
        for line in lines
    ]


def _ranked_value(selected: Selected, line: EndUserLine) -> Any:
    if selected.below is None:
        return _BALANCE[selected.field_name](line.balance)  # type: ignore[arg-type]
    return object_json(selected.below, "EndUser", lambda s: _END_USER[s.field_name](line))


_RANKED_WRITTEN = {"__typename", *BALANCE_FIELD_COLUMNS, *BURN_MARKS}


def ranked_entries(selection: tuple[Selected, ...]) -> RankedEntries | None:
    """The entries of a ranked balance's selection (read with RANKED_SHAPE) when the
    database can write all of it (`models.allocation_report.RankedEntries`); else None."""
    entries = []
    for s in selection:
        if s.below is None:  # a balance's field
            if s.field_name not in _RANKED_WRITTEN:
                return None
            entries.append((s.response_name, s.field_name, None))
            continue
        below = tuple((e.response_name, e.field_name) for e in s.below)  # endUser
        if not all(f == "__typename" or f in END_USER_FIELD_SQL for _, f in below):
            return None
        entries.append((s.response_name, s.field_name, below))
    return tuple(entries)


def _node(selection: tuple[Selected, ...], line: EndUserLine, balances: Balances) -> Any:
    node: dict[str, Any] = {}
    for s in selection:
        if s.field_name == "__typename":
            node[s.response_name] = "EndUser"
        elif s.field_name == "balance":
            node[s.response_name] = _pool_balance(s, balances.lines.get(line.id) or [])
        elif s.below is not None:  # balances
            if balances.texts is not None:
                node[s.response_name] = orjson.Fragment(balances.texts.get(line.id, "[]"))
            else:
                node[s.response_name] = _balances(s.below, balances.lines.get(line.id) or [])
        else:
            node[s.response_name] = _END_USER[s.field_name](line)
    return node


def _pool_balance(selected: Selected, lines: list[BalanceLine]) -> dict[str, Any] | None:
    """`balance(pool:)`: the line of that pool, as the general path finds it."""
    pool = dict(selected.arguments).get("pool")
    if type(pool) is not str:
        raise NotPlain
    for line in lines:
        if line.pool_key == pool:
            return _balances(selected.below or (), [line])[0]
    return None


def connection_json(
    selection: tuple[Selected, ...],
    lines: list[EndUserLine],
    cursor_of: Callable[[int], str],
    count: int,
    balances: Balances,
    has_next: bool,
    total: int,
) -> dict[str, Any]:
    """The connection's answer for `selection` (read with CONNECTION_SHAPE): the nodes the
    database wrote (`balances.nodes`, in the cursors' order; no lines then), or each
    line's."""
    answer: dict[str, Any] = {}
    for part in selection:
        name = part.field_name
        if name == "__typename":
            answer[part.response_name] = "EndUserConnection"
        elif name == "totalCount":
            answer[part.response_name] = checked_int(total)
        elif name == "pageInfo":
            end = cursor_of(count - 1) if count else None
            answer[part.response_name] = page_info(part.below or (), has_next, end)
        else:  # edges
            below = part.below or ()
            nodes = balances.nodes
            edges = None if nodes is None else written_edges(below, nodes.values())
            if edges is None and nodes is not None:
                written = [orjson.Fragment(text) for text in nodes.values()]
                edges = [
                    _edge(below, i, cursor_of, lambda _, node=node: node)
                    for i, node in enumerate(written)
                ]
            elif edges is None:
                edges = [
                    _edge(below, i, cursor_of, lambda node, i=i: _node(node, lines[i], balances))
                    for i in range(count)
                ]
            answer[part.response_name] = edges
    return answer


def _edge(
    selection: tuple[Selected, ...],
    index: int,
    cursor_of: Callable[[int], str],
    node_of: Callable[[tuple[Selected, ...]], Any],
) -> dict[str, Any]:
    # a cursor is only made when selected: most pages ask for pageInfo's end cursor alone
    return object_json(
        selection,
        "EndUserEdge",
        lambda s: cursor_of(index) if s.field_name == "cursor" else node_of(s.below or ()),
    )
