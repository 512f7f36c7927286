"""The GraphQL schema: thin entry points assembled from the domain modules."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

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
from resolvers.error_logging import log_errors
from resolvers.realtime import balance_changed
from resolvers.request_log import request_log_tail
from resolvers.request_rules import DOCUMENT_CACHE_SIZE, MaskUnexpectedErrors, RequestRules
from resolvers.runtime.input_conversion import install as install_input_conversion
from resolvers.runtime.plain_lists import PlainListExecutor
from resolvers.runtime.versions import fast_paths_enabled
from resolvers.viewer import resolve_viewer
from resolvers.webhooks import (
    resolve_create_endpoint,
    resolve_delete_endpoint,
    resolve_disable_endpoint,
    resolve_redeliver,
    resolve_rotate_secret,
    resolve_send_test,
    resolve_update_endpoint,
)

__all__ = ["DOCUMENT_CACHE_SIZE", "MaskUnexpectedErrors", "schema", "schema_sdl"]


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
    create_webhook_endpoint = strawberry.mutation(resolver=resolve_create_endpoint)
    update_webhook_endpoint = strawberry.mutation(resolver=resolve_update_endpoint)
    disable_webhook_endpoint = strawberry.mutation(resolver=resolve_disable_endpoint)
    delete_webhook_endpoint = strawberry.mutation(resolver=resolve_delete_endpoint)
    rotate_webhook_secret = strawberry.mutation(resolver=resolve_rotate_secret)
    send_test_webhook = strawberry.mutation(resolver=resolve_send_test)
    redeliver_webhook = strawberry.mutation(resolver=resolve_redeliver)


@strawberry.type
class Subscription:
    balance_changed = strawberry.subscription(resolver=balance_changed)
    low_credit_alerts = strawberry.subscription(resolver=low_credit_alerts)
    request_log_tail = strawberry.subscription(resolver=request_log_tail)


class UsageSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)  # not Strawberry's: a traceback and the query for every error


def build_schema(fast: bool | None = None) -> strawberry.Schema:
    """The schema; with the fast paths (resolvers/runtime/, on unless `fast_paths()` turns
    them off) its plain lists complete without graphql-core's per-field steps and its
    inputs convert by compiled converters, else graphql-core and Strawberry do both."""
    if fast is None:
        fast = fast_paths_enabled()
    built = UsageSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(),
        execution_context_class=PlainListExecutor if fast else None,
        extensions=[RequestRules],  # a class: Strawberry makes one per request
    )
    if fast:
        install_input_conversion(built)
    return built


schema = build_schema()


def schema_sdl() -> str:
    """The SDL as committed in `schema.graphql`."""
    return schema.as_str() + "\n"
