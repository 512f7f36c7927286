"""Subscriptions: live balances (docs/realtime.md; docs/ledger.md, rule 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import strawberry

from models.access import require_end_user, visible_application
from models.credits import EndUser as EndUserRow
from models.errors import NotFound
from models.events import BalanceCause, BalanceChanged
from models.references import parse_id
from resolvers.context import Info, principal_of
from resolvers.end_users import EndUser
from resolvers.errors import errors_as_query_errors
from resolvers.pools import BalanceStatus
from subscriptions.fanout import Topic
from subscriptions.live import LiveEvents

# The name stays the ledger's: every value but THRESHOLD is a ledger entry kind.
LedgerEntryKind = strawberry.enum(
    BalanceCause,
    name="LedgerEntryKind",
    description="The kind of a ledger entry; as a balance event's cause, also THRESHOLD: a"
    " threshold change moved the balance's status (no ledger entry, no credit moved).",
)


@strawberry.type(
    description="A balance after a change: the pool's (endUser null) or an End User's."
)
class BalanceEvent:
    application_id: strawberry.ID
    pool: str
    version: int = strawberry.field(description="Increases with every change of this balance.")
    cause: LedgerEntryKind = strawberry.field(
        description="The kind of ledger entry that changed it, or THRESHOLD (for the first"
        " message, the kind of the balance's last ledger entry)."
    )
    at: datetime = strawberry.field(
        description="When this version was made (a re-sent snapshot keeps its version's)."
    )
    allocated: int
    used: int
    remaining: int
    expired: int
    status: BalanceStatus
    end_user_id: strawberry.ID | None
    row_end_user_id: strawberry.Private[int | None]

    @strawberry.field
    async def end_user(self) -> EndUser | None:
        if self.row_end_user_id is None:
            return None
        row = await EndUserRow.get_or_none(id=self.row_end_user_id)
        return None if row is None else EndUser.from_row(row)

    @classmethod
    def from_event(cls, event: BalanceChanged) -> BalanceEvent:
        end_user_id = event.end_user_id
        return cls(
            application_id=strawberry.ID(str(event.application_id)),
            pool=event.pool,
            version=event.version,
            cause=event.cause,
            at=datetime.fromisoformat(event.at),
            allocated=event.allocated,
            used=event.used,
            remaining=event.remaining,
            expired=event.expired,
            status=event.status,
            end_user_id=None if end_user_id is None else strawberry.ID(str(end_user_id)),
            row_end_user_id=end_user_id,
        )


def balance_changed(
    info: Info,
    application_id: strawberry.ID,
    pool: str | None = None,
    end_user_id: strawberry.ID | None = None,
) -> AsyncIterator[BalanceEvent]:
    """With endUserId, that End User's balances; without, the pool balances and every End
    User balance of the application (of `pool`, when given). The first messages are the
    current snapshots; a slow subscriber gets the latest snapshot per balance."""

    async def authorise() -> Topic:
        principal = principal_of(info)
        with errors_as_query_errors():
            application = await visible_application(principal, application_id)
            end_user = principal.end_user_id  # an End User token watches its own balances
            if end_user_id is not None:
                end_user = parse_id(end_user_id)
                if end_user is None or not await EndUserRow.exists(
                    id=end_user, application_id=application
                ):
                    raise NotFound("End User not found", field="endUserId")
                require_end_user(principal, end_user)
        return Topic(application, "balance", pool, end_user)

    return LiveEvents(info.context.realtime, authorise, BalanceEvent.from_event)
