"""The GraphQL schema: thin entry points assembled from the domain modules."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
    max_aliases,
    query_depth_limiter,
)
from strawberry.schema.config import StrawberryConfig

from resolvers.alerts import low_credit_alerts, resolve_acknowledge, resolve_set_threshold
from resolvers.api_keys import resolve_create_api_key, resolve_revoke_api_key
from resolvers.applications import (
    resolve_application,
    resolve_applications,
    resolve_create_application,
    resolve_create_pool,
    resolve_upsert_end_users,
)
from resolvers.credits import (
    resolve_allocate,
    resolve_consume,
    resolve_consume_batch,
    resolve_purchase,
    resolve_release,
)
from resolvers.end_user_tokens import (
    resolve_create_code,
    resolve_exchange_code,
    resolve_issue_token,
)
from resolvers.execution import PlainListExecutor
from resolvers.input_rules import NoNulInStringLiterals, NoNulInVariables
from resolvers.realtime import balance_changed
from resolvers.request_log import request_log_tail
from resolvers.viewer import resolve_viewer

MAX_DEPTH = 12
MAX_TOKENS = 5_000
MAX_ALIASES = 30
DOCUMENT_CACHE_SIZE = 1_000


@strawberry.type
class Query:
    viewer = strawberry.field(resolver=resolve_viewer)
    applications = strawberry.field(resolver=resolve_applications)
    application = strawberry.field(resolver=resolve_application)


@strawberry.type
class Mutation:
    create_application = strawberry.mutation(resolver=resolve_create_application)
    create_api_key = strawberry.mutation(resolver=resolve_create_api_key)
    revoke_api_key = strawberry.mutation(resolver=resolve_revoke_api_key)
    create_credit_pool = strawberry.mutation(resolver=resolve_create_pool)
    purchase_credits = strawberry.mutation(resolver=resolve_purchase)
    upsert_end_users = strawberry.mutation(resolver=resolve_upsert_end_users)
    allocate_credits = strawberry.mutation(resolver=resolve_allocate)
    release_credits = strawberry.mutation(resolver=resolve_release)
    consume_credits = strawberry.mutation(resolver=resolve_consume)
    consume_credits_batch = strawberry.mutation(resolver=resolve_consume_batch)
    set_low_balance_threshold = strawberry.mutation(resolver=resolve_set_threshold)
    acknowledge_alert = strawberry.mutation(resolver=resolve_acknowledge)
    issue_end_user_token = strawberry.mutation(resolver=resolve_issue_token)
    create_temporary_code = strawberry.mutation(resolver=resolve_create_code)
    exchange_temporary_code = strawberry.mutation(resolver=resolve_exchange_code)


@strawberry.type
class Subscription:
    balance_changed = strawberry.subscription(resolver=balance_changed)
    low_credit_alerts = strawberry.subscription(resolver=low_credit_alerts)
    request_log_tail = strawberry.subscription(resolver=request_log_tail)


def _unexpected(error: GraphQLError) -> bool:
    """Errors we did not raise on purpose: their text (a stack, SQL) never reaches a client."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class MaskUnexpectedErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected, error_message="Internal error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked


# Built once: the validation cache is keyed by the rule classes, and the limiter extensions
# would make new classes on every request (the cache would never hit).
LIMIT_RULES = [
    query_depth_limiter.create_validator(MAX_DEPTH, None),
    max_aliases.create_validator(MAX_ALIASES),
    NoNulInStringLiterals,
]


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(),
        execution_context_class=PlainListExecutor,
        # Factories, not instances; bounded document caches (values go in variables).
        extensions=[
            lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
            lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
            lambda: AddValidationRules(LIMIT_RULES),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            NoNulInVariables,
            MaskUnexpectedErrors,
        ],
    )


schema = build_schema()


def schema_sdl() -> str:
    """The SDL as committed in `schema.graphql`."""
    return schema.as_str() + "\n"
