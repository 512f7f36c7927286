"""The most one GraphQL operation may cost (resolvers/query_cost.py, docs/query-cost.md),
apart from the cost model so that settings and the request context can name it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.access import Principal

DEFAULT_MAX_QUERY_COST = 25_000
DEFAULT_MAX_QUERY_COST_END_USER = 5_000


@dataclass(frozen=True, slots=True)
class CostBudgets:
    """End User tokens (held in browsers) and requests without a credential get the lower
    budget."""

    api_key: int = DEFAULT_MAX_QUERY_COST
    end_user: int = DEFAULT_MAX_QUERY_COST_END_USER

    def for_principal(self, principal: Principal | None) -> int:
        if principal is None or principal.end_user_id is not None:
            return self.end_user
        return self.api_key


DEFAULT_BUDGETS = CostBudgets()
