"""Which operation of a document a request runs. GraphQL's GetOperation: a request without
an operation name may only send a document with one operation; Strawberry would run the
first of several."""

from __future__ import annotations

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode

from resolvers.input_rules import VALIDATION

AMBIGUOUS_MESSAGE = "Must provide operation name if query contains multiple operations."


def ambiguous_operation(document: DocumentNode, operation_name: str | None) -> GraphQLError | None:
    """The request error for a document of several operations sent without a name."""
    if operation_name is not None:
        return None
    operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
    return GraphQLError(AMBIGUOUS_MESSAGE, extensions=VALIDATION) if operations > 1 else None
