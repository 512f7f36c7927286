"""A page of the request log written as JSON straight from its entries
(resolvers/preserialized.py), each value as the general path serializes it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson

from models.request_log import ENTRY_FIELD_SQL, EntryJson
from resolvers.preserialized import (
    PAGE_INFO_SHAPE,
    Selected,
    Shape,
    checked_float,
    checked_int,
    node_entries,
    object_json,
    optional_text,
    page_info,
    text,
    written_edges,
)

Entry = Mapping[str, Any]

_ENTRY: dict[str, Callable[[Entry], Any]] = {
    "id": lambda e: str(e["id"]),
    "time": lambda e: e["time"].isoformat(),
    "method": lambda e: text(e["method"]),
    "endpoint": lambda e: text(e["endpoint"]),
    "operationName": lambda e: optional_text(e["operation_name"]),
    "endUserExternalId": lambda e: optional_text(e["end_user_external_id"]),
    "apiKeyPrefix": lambda e: optional_text(e["api_key_prefix"]),
    "status": lambda e: checked_int(e["status"]),
    "outcome": lambda e: e["outcome"].name,
    "errorCode": lambda e: optional_text(e["error_code"]),
    "errorMessage": lambda e: optional_text(e["error_message"]),
    "latencyMs": lambda e: checked_float(e["latency_ms"]),
    "requestId": lambda e: text(e["request_id"]),
    "source": lambda e: text(e["source"]),
}

CONNECTION_SHAPE: Shape = (
    "RequestLogConnection",
    {
        "pageInfo": PAGE_INFO_SHAPE,
        "edges": (
            "RequestLogEdge",
            {"cursor": None, "node": ("RequestLogEntry", dict.fromkeys(_ENTRY))},
        ),
    },
)


def entry_entries(selection: tuple[Selected, ...]) -> EntryJson | None:
    """The one node selection of the connection, for the database to write each entry's
    JSON (models.request_log.entry_page), when it can write all of it."""
    return node_entries(selection, ENTRY_FIELD_SQL)


def _node(selection: tuple[Selected, ...], entry: Entry) -> Any:
    written = entry.get("j")  # by the database, for the one node selection
    if written is not None:
        return orjson.Fragment(written)
    return {
        s.response_name: "RequestLogEntry"
        if s.field_name == "__typename"
        else _ENTRY[s.field_name](entry)
        for s in selection
    }


def _edge(selection: tuple[Selected, ...], entry: Entry, cursor: str) -> dict[str, Any]:
    return object_json(
        selection,
        "RequestLogEdge",
        lambda s: cursor if s.field_name == "cursor" else _node(s.below or (), entry),
    )


def connection_json(
    selection: tuple[Selected, ...],
    entries: list[Entry],
    cursor_of: Callable[[Entry], str],
    has_next: bool,
) -> dict[str, Any]:
    """The connection's answer for `selection` (read with CONNECTION_SHAPE); a cursor is
    made only where one is selected."""
    answer: dict[str, Any] = {}
    for part in selection:
        if part.field_name == "__typename":
            answer[part.response_name] = "RequestLogConnection"
        elif part.field_name == "pageInfo":
            end = cursor_of(entries[-1]) if entries else None
            answer[part.response_name] = page_info(part.below or (), has_next, end)
        else:  # edges
            below = part.below or ()
            texts = [entry.get("j") for entry in entries]
            edges = None
            if None not in texts:  # every node written by the database
                edges = written_edges(below, cast(list[str], texts))
            if edges is None:
                wants_cursor = any(s.field_name == "cursor" for s in below)
                edges = [
                    _edge(below, entry, cursor_of(entry) if wants_cursor else "")
                    for entry in entries
                ]
            answer[part.response_name] = edges
    return answer
