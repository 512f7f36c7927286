"""What every operation goes through before and after execution, as one schema extension
(`RequestRules`): a document length limit, cached parsing with a token limit, cached
validation with the depth, alias and string rules (resolvers/input_rules.py), the same
string rules on the variables, the choice of the operation, the query cost limit
(resolvers/query_cost.py), masking of unexpected errors and a bound on every error
message's length.
Strawberry builds extensions anew for every request and runs a context manager per hook
and extension: one extension instead of six keeps that per-request cost small on the
hottest path (`consumeCredits`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, validate
from strawberry.extensions import MaskErrors, max_aliases, query_depth_limiter
from strawberry.types import ExecutionContext

from models.transient import is_transient
from resolvers.context import Context
from resolvers.errors import unavailable_error
from resolvers.input_rules import (
    MAX_DOCUMENT,
    BoundedStringLiterals,
    too_long,
    variable_error,
    variable_uses,
)
from resolvers.operation_choice import ambiguous_operation
from resolvers.operation_summary import OperationSummary, summarize
from resolvers.query_cost import check_query_cost
from resolvers.runtime.strawberry_internals import graphql_schema_of, provided_operation_name

MAX_DEPTH = 12
MAX_TOKENS = 5_000
MAX_ALIASES = 30
MAX_MESSAGE = 500
DOCUMENT_CACHE_SIZE = 1_000
UNPARSED = parse("{ __typename }")  # stands for a document refused before parsing

# Built once: validation results are cached per rule set.
LIMIT_RULES = (
    query_depth_limiter.create_validator(MAX_DEPTH, None),
    max_aliases.create_validator(MAX_ALIASES),
    BoundedStringLiterals,
)


@lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def parsed(query: str, max_tokens: int | None) -> DocumentNode:
    """One document per query text (values come in variables), so later requests find it."""
    return parse(query, max_tokens=max_tokens)


# Validation errors per (schema, document, rules), the document found by identity (a
# document's own hash walks its whole tree); entries hold their schema and document, so
# the ids in a key cannot be reused while it is cached.
_VALIDATED: OrderedDict[tuple[int, int, tuple], tuple[Any, Any, list[GraphQLError]]] = OrderedDict()


def validated(schema: GraphQLSchema, document: DocumentNode, rules: tuple) -> list[GraphQLError]:
    key = (id(schema), id(document), rules)
    found = _VALIDATED.get(key)
    if found is not None and found[0] is schema and found[1] is document:
        _VALIDATED.move_to_end(key)
        return found[2]
    errors = validate(schema, document, rules)
    _VALIDATED[key] = (schema, document, errors)
    if len(_VALIDATED) > DOCUMENT_CACHE_SIZE:
        _VALIDATED.popitem(last=False)
    return errors


def _unexpected(error: GraphQLError) -> bool:
    """Errors we did not raise on purpose: their text (a stack, SQL) never reaches a client."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def _bounded(error: GraphQLError) -> GraphQLError:
    """The error with its message cut to MAX_MESSAGE characters: a message that quotes a
    client's value (a syntax error quotes a whole token) never sends it all back."""
    if len(error.message) <= MAX_MESSAGE:
        return error
    return GraphQLError(
        error.message[:MAX_MESSAGE] + "...",
        error.nodes,
        error.source,
        error.positions,
        error.path,
        error.original_error,
        error.extensions,
    )


class MaskUnexpectedErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected, error_message="Internal error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if is_transient(error):
            return unavailable_error(error)
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked

    def _process_result(self, result: object) -> None:
        # as MaskErrors does, without its isinstance check against a runtime Protocol
        # (which inspects the class on every call, on the hottest path)
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [_bounded(e) for e in self._process_errors(errors)]  # type: ignore[attr-defined]


def _note_operation(execution: ExecutionContext) -> None:
    """The operation as the request log sees it, on our context (api/ moves it to the
    request's draft): from the document parsed here, never parsed again."""
    ours = execution.context
    if not isinstance(ours, Context) or not ours.notes_operation:
        return
    wanted = provided_operation_name(execution)
    document = execution.graphql_document
    if document is None or document is UNPARSED:
        ours.operation = OperationSummary(wanted, ())
    else:
        ours.operation = summarize(document, wanted, execution.variables)


class RequestRules(MaskUnexpectedErrors):
    """Everything in the one hook Strawberry runs around the whole operation: each hook an
    extension implements costs a context manager per request. Parsing and validation done
    here leave Strawberry's own steps nothing to do (it skips a parsed document and a
    validation with a result), in the same order: parse, the operation type, validation,
    then the variables."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        standard_rules = tuple(context.validation_rules)
        context.validation_rules = standard_rules + LIMIT_RULES
        if context.graphql_document is None and context.query:
            if len(context.query) > MAX_DOCUMENT:
                # not parsed (lexing a long string literal costs per character): a
                # stand-in document carries the refusal through Strawberry's steps
                context.graphql_document = UNPARSED
                error = too_long("the document", MAX_DOCUMENT, context.query)
                context.pre_execution_errors = [error]
            else:
                try:
                    context.graphql_document = parsed(context.query, MAX_TOKENS)
                except GraphQLError:
                    pass  # Strawberry parses it again and answers the error its own way
        if context.graphql_document is not None and context.pre_execution_errors is None:
            # The limits first, alone: a document past them is not worth the standard rules'
            # work (OverlappingFieldsCanBeMerged compares fields pairwise): an alias-heavy
            # document is refused in half the CPU.
            schema = graphql_schema_of(context)
            document = context.graphql_document
            context.pre_execution_errors = validated(schema, document, LIMIT_RULES) or validated(
                schema, document, standard_rules
            )
            # the name the request gave (Strawberry's `operation_name` falls back to the first)
            ambiguous = ambiguous_operation(document, provided_operation_name(context))
            if ambiguous is not None and not context.pre_execution_errors:
                context.pre_execution_errors = [ambiguous]
            # variable values are JSON, not seen by validation: refused as validation
            # errors are (Strawberry runs nothing, a subscription included)
            if not context.pre_execution_errors and context.variables:
                error = variable_error(context.variables, variable_uses(document))
                if error is not None:
                    context.pre_execution_errors = [error]
        _note_operation(context)
        check_query_cost(context)  # after validation: a valid document's static cost
        yield from super().on_operation()  # masks the result's unexpected errors
