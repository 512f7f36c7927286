"""Live events for the fan-out's own tests: whole, typed events with plausible defaults."""

from __future__ import annotations

from models.balance_rules import BalanceStatus
from models.events import AlertRaised, BalanceCause, BalanceChanged
from models.records import AlertKind

AT = "2026-01-01T00:00:00+00:00"


def balance_event(
    end_user_id: int | None = None, version: int = 1, pool_id: int = 1, application_id: int = 1
) -> BalanceChanged:
    return BalanceChanged(
        application_id=application_id,
        pool_id=pool_id,
        pool="ai",
        end_user_id=end_user_id,
        version=version,
        cause=BalanceCause.CONSUME,
        at=AT,
        allocated=10,
        used=1,
        remaining=9,
        expired=0,
        status=BalanceStatus.OK,
    )


def alert_event(alert_id: int, application_id: int = 1) -> AlertRaised:
    return AlertRaised(
        id=alert_id,
        application_id=application_id,
        pool_id=1,
        pool="ai",
        end_user_id=None,
        kind=AlertKind.LOW,
        remaining=2,
        threshold=5,
        at=AT,
    )
