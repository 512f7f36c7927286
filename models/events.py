"""The live events, one typed value per kind, from the ledger transaction that writes them
to the outbox to the subscriber they are rendered for (docs/realtime.md): a balance's new
version, and a low-credit alert. Each crosses processes as JSON (`to_json` / `from_json`);
the outbox row, the broker message and the fan-out carry the same value. A request-log
entry is the third kind: it goes from the log writer to the live tail the same way, without
the outbox."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Self

from models.balance_rules import BalanceStatus
from models.records import AlertKind, LedgerEntryKind
from models.request_log import COLUMNS, LogRow, as_utc


class BalanceCause(StrEnum):
    """What changed a balance: the kind of ledger entry, or THRESHOLD (a threshold change
    moved its status; no ledger entry, no counter moved)."""

    PURCHASE = LedgerEntryKind.PURCHASE.value
    ALLOCATE = LedgerEntryKind.ALLOCATE.value
    RELEASE = LedgerEntryKind.RELEASE.value
    CONSUME = LedgerEntryKind.CONSUME.value
    EXPIRE = LedgerEntryKind.EXPIRE.value
    ADJUST = LedgerEntryKind.ADJUST.value
    THRESHOLD = "THRESHOLD"


@cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(field.name for field in fields(kind))


@dataclass(frozen=True, slots=True, kw_only=True)
class _OfABalance:
    """What every balance event names: the balance (the pool's when `end_user_id` is
    None), and the time `at` of what it announces (ISO 8601, UTC)."""

    # the fields that hold an enum's member, sent as its value
    enums: ClassVar[dict[str, type[StrEnum]]] = {}

    application_id: int
    pool_id: int
    pool: str
    end_user_id: int | None
    at: str

    def to_json(self) -> dict[str, Any]:
        # not `asdict`, which deep-copies every value (this runs in every ledger write)
        values = {name: getattr(self, name) for name in _field_names(type(self))}
        for name in self.enums:
            values[name] = values[name].value
        return values

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values = {name: data[name] for name in _field_names(cls)}
        for name, enum in cls.enums.items():
            values[name] = enum(values[name])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceChanged(_OfABalance):
    """A balance at `version`, made at `at`."""

    topic: ClassVar[str] = "balance"
    enums: ClassVar[dict[str, type[StrEnum]]] = {"cause": BalanceCause, "status": BalanceStatus}

    version: int
    cause: BalanceCause
    allocated: int
    used: int
    remaining: int
    expired: int
    status: BalanceStatus

    @property
    def key(self) -> tuple[Any, ...]:
        """What conflates: a slow subscriber needs only the newest version of a balance."""
        return (self.pool_id, self.end_user_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(_OfABalance):
    """A low-credit alert as written (`id` is the alert's row)."""

    topic: ClassVar[str] = "alert"
    enums: ClassVar[dict[str, type[StrEnum]]] = {"kind": AlertKind}

    id: int
    kind: AlertKind
    remaining: int
    threshold: int | None

    @property
    def version(self) -> int:
        # alerts are never conflated: each is its own key, at its own id
        return self.id

    @property
    def key(self) -> tuple[Any, ...]:
        return ("alert", self.id)


@dataclass(frozen=True, slots=True)
class RequestLogged:
    """A request-log entry as written (`id` is its row), for the live tail; published
    straight by the log writer (the log is no ledger: no outbox)."""

    topic: ClassVar[str] = "request_log"

    id: int
    row: LogRow

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.row._asdict(), "time": self.row.time.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestLogged:
        values = {name: data[name] for name in COLUMNS}
        return cls(data["id"], LogRow(**{**values, "time": as_utc(values["time"])}))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookEndpointDisabled:
    """An endpoint disabled for failing, and the alert that says so (`alert_id`). Written to
    the outbox for webhooks only: the low-credit subscription does not carry it."""

    topic: ClassVar[str] = "webhook_endpoint_alert"

    application_id: int
    alert_id: int
    endpoint_id: int
    url: str
    reason: str
    failing_since: str
    at: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditsExpiring(_OfABalance):
    """A lot's credits that expire at `expires_at`, announced once ahead of it: the lot's
    remaining for the pool (`end_user_id` None), an End User's remaining from the lot for
    each holder. For webhooks only: no subscription carries it."""

    topic: ClassVar[str] = "credits_expiring"

    pack_id: int
    remaining: int
    unallocated: int | None  # the pool's event: the part no End User holds
    expires_at: str


LiveEvent = BalanceChanged | AlertRaised
# What the outbox carries: the live events, and those only webhooks announce.
OutboxItem = LiveEvent | WebhookEndpointDisabled | CreditsExpiring
KINDS: dict[str, type[BalanceChanged] | type[AlertRaised]] = {
    BalanceChanged.topic: BalanceChanged,
    AlertRaised.topic: AlertRaised,
}


def event_from_json(topic: str, data: dict[str, Any]) -> LiveEvent:
    """The event of an outbox row's (or a broker message's) topic and payload; KeyError for
    a topic that is not a live event's, ValueError or TypeError for a malformed payload."""
    return KINDS[topic].from_json(data)
