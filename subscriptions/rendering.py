"""Rendering a live event once per selection: the GraphQL `payload` of a subscription's
`next` (or `data`) message, as JSON text, for every subscriber of the same selection.

A selection is the document, the operation and the variables that shape the result.
Variables used only in the subscription field's own arguments choose the topic (which was
authorised for each subscriber) and do not shape the result, so subscribers that differ
only there share renderings. Renderings run with a context without a principal: nothing
under a balance event or an alert depends on who is watching (the topic does)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    Node,
    OperationDefinitionNode,
    VariableNode,
    Visitor,
    execute_subscription_event,
    get_operation_ast,
    visit,
)
from graphql.execution import Executor

from models.events import LiveEvent
from models.transient import is_transient
from resolvers.request_rules import DOCUMENT_CACHE_SIZE, MAX_TOKENS, parsed
from subscriptions.fanout import Selection
from subscriptions.live import LiveClaim


@dataclass(frozen=True, slots=True)
class GraphQLSetup:
    """What rendering needs of the schema in use, supplied by the transport that knows it."""

    schema: GraphQLSchema
    executor_class: type[Executor]
    make_context: Callable[[], Any]  # a selection's renderings' context (no principal)
    is_awaitable: Callable[[Any], bool]
    report_errors: Callable[[list[GraphQLError]], None]  # logged, as Strawberry does
    format_error: Callable[[GraphQLError], dict[str, Any]]  # masked where unexpected


class _CountVariables(Visitor):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.counts[node.name.value] += 1


def _variables_in(node: Node) -> Counter[str]:
    counts: Counter[str] = Counter()
    visit(node, _CountVariables(counts))
    return counts


def _document(query: str) -> DocumentNode:
    """The document as the request rules parsed and validated it (the same cached parse)."""
    return parsed(query, MAX_TOKENS)


@lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def shaping_variables(query: str, operation_name: str | None) -> tuple[str, ...]:
    """Every variable used anywhere but in the subscription field's own arguments (those
    only choose the topic)."""
    document = _document(query)
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return ()
    used = _variables_in(operation.selection_set)
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            used += _variables_in(definition)  # fragments
    topic: Counter[str] = Counter()
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            for argument in selection.arguments:
                topic += _variables_in(argument)
    return tuple(sorted(name for name, count in used.items() if count > topic[name]))


def selection_of(claim: LiveClaim, setup: GraphQLSetup) -> Selection:
    """The claimed operation's selection: equal for every subscriber it renders alike."""
    variables = claim.variables or {}
    shaping = tuple(
        (name, json.dumps(variables[name], sort_keys=True) if name in variables else None)
        for name in shaping_variables(claim.query, claim.operation_name)
    )
    key = (claim.query, claim.operation_name, shaping)
    return Selection(key, lambda: _Renderer(claim, setup))


class _Renderer:
    """One execution of the selection per event: the GraphQL `payload` as JSON text."""

    __slots__ = ("claim", "context", "setup")

    def __init__(self, claim: LiveClaim, setup: GraphQLSetup) -> None:
        self.claim = claim
        self.setup = setup
        self.context = setup.make_context()

    def _executor(self, root: Any) -> Executor:
        # A fresh executor per event: graphql-core's per-event copies share one memo of
        # collected fields, keyed by objects made anew for each event, which never shrinks.
        claim, setup = self.claim, self.setup
        executor = setup.executor_class.build(
            setup.schema,
            _document(claim.query),
            root_value=root,
            context_value=self.context,
            raw_variable_values=claim.variables,
            operation_name=claim.operation_name,
            is_awaitable=setup.is_awaitable,
        )
        if isinstance(executor, list):  # the operation was validated: cannot happen
            raise GraphQLError(f"cannot render the subscription: {executor}")
        return executor

    async def __call__(self, event: LiveEvent) -> str:
        assert self.claim.to_value is not None
        result = execute_subscription_event(self._executor(self.claim.to_value(event)))
        if isawaitable(result):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            for error in result.errors:
                if is_transient(error):  # never sent degraded: the fan-out tries again
                    raise error.original_error or error
            self.setup.report_errors(result.errors)
            payload["errors"] = [self.setup.format_error(error) for error in result.errors]
        return json.dumps(payload, separators=(",", ":"))
