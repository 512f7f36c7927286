"""What every resolver gets: the request and the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from strawberry.types import Info as StrawberryInfo

from models.access import Principal
from resolvers.cost_budgets import DEFAULT_BUDGETS, CostBudgets
from resolvers.operation_summary import OperationSummary


@dataclass
class Context:
    request: Any
    response: Any
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None
    realtime: Any = None  # subscriptions.realtime.Realtime, wired by the app
    secret: str = ""  # signs End User tokens
    public_url: str | None = None  # base of the links handed out; None: the request's
    cost_budgets: CostBudgets = DEFAULT_BUDGETS  # the most an operation may cost
    webhooks_allow_private: bool = False  # webhook URLs may name private addresses
    cache: dict[str, Any] = field(default_factory=dict)
    # the answer is encoded by api/http_answer.py, which splices preserialized values
    preserialized: bool = False
    operation_name: str | None = None  # as the request gave it
    # For the request log of an HTTP request: the operation as it ran (noted when
    # `notes_operation`), and the application a request without a credential concerned
    # (both read by the view after the operation).
    notes_operation: bool = False
    operation: OperationSummary | None = None
    noted_application_id: int | None = None


Info = StrawberryInfo[Context, None]


def principal_of(info: Info) -> Principal:
    """The caller; a request without credentials gets 401 (only exchangeTemporaryCode
    works without one)."""
    principal = info.context.principal
    if principal is None:
        response = info.context.response
        if response is not None and hasattr(response, "status_code"):
            response.status_code = 401
        raise GraphQLError(
            "missing Authorization header: send 'Bearer <API key or End User token>'",
            extensions={"code": "UNAUTHENTICATED"},
        )
    return principal


def note_application(info: Info, application_id: int | None) -> None:
    """Tells the request log which application a request without a credential concerned
    (exchangeTemporaryCode: the code names it)."""
    if application_id is not None and info.context.noted_application_id is None:
        info.context.noted_application_id = application_id
