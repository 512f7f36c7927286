"""Append-only records: ledger entries, usage events, idempotency records and the outbox.

Ledger entries, usage events and outbox rows carry no foreign-key constraints: each insert
would otherwise lock the pool and lot rows it names (FOR KEY SHARE) just before the same
transaction updates their counters, which turns every hot pool row into a queue of shared
lockers. These rows are written only by the ledger operations, in the transaction that
checked what they reference, and pools, lots and End Users are never deleted."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.credits import CreditPack, CreditPool, EndUser
from models.tenancy import Application


class LedgerEntryKind(StrEnum):
    PURCHASE = "PURCHASE"
    ALLOCATE = "ALLOCATE"
    RELEASE = "RELEASE"
    CONSUME = "CONSUME"
    EXPIRE = "EXPIRE"
    ADJUST = "ADJUST"


class LedgerEntry(Model):
    """One movement of credits of one lot. Signs: PURCHASE and ALLOCATE positive, RELEASE,
    CONSUME and EXPIRE negative. Never updated or deleted (a trigger refuses it)."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application",
        related_name="ledger_entries",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool",
        related_name="ledger_entries",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    lot: fields.ForeignKeyRelation[CreditPack] = fields.ForeignKeyField(
        "models.CreditPack",
        related_name="ledger_entries",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    end_user: fields.ForeignKeyNullableRelation[EndUser] = fields.ForeignKeyField(
        "models.EndUser",
        related_name="ledger_entries",
        null=True,
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    kind = fields.CharEnumField(LedgerEntryKind, max_length=16)
    amount = fields.BigIntField()
    feature = fields.CharField(max_length=100, null=True)
    idempotency_key = fields.CharField(max_length=255, null=True)
    actor = fields.CharField(max_length=64, null=True)
    usage_event_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()
    occurred_at = fields.DatetimeField()

    class Meta:
        table = "ledger_entry"
        indexes = (
            ("pool_id", "created_at"),
            ("end_user_id", "pool_id", "created_at"),
            ("application_id", "occurred_at"),
        )


class UsageEvent(Model):
    """One consumption as the integrator sent it."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application",
        related_name="usage_events",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool",
        related_name="usage_events",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    end_user: fields.ForeignKeyRelation[EndUser] = fields.ForeignKeyField(
        "models.EndUser",
        related_name="usage_events",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    credits = fields.BigIntField()
    feature = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255, null=True)
    metadata = fields.JSONField(null=True)
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "usage_event"
        indexes = (("application_id", "occurred_at"), ("end_user_id", "occurred_at"))


class IdempotencyRecord(Model):
    """The result of a write applied under an idempotency key (per application, kept ≥ 30 days)."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="idempotency_records", on_delete=fields.RESTRICT
    )
    key = fields.CharField(max_length=255)
    operation = fields.CharField(max_length=64)
    request_hash = fields.CharField(max_length=64)
    response = fields.JSONField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "idempotency_record"
        unique_together = (("application", "key"),)
        indexes = (("created_at",),)


class OutboxEvent(Model):
    """A balance or alert event written in the transaction that caused it. The relay
    publishes it after commit and then deletes it: a row present is not yet published."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application",
        related_name="outbox_events",
        on_delete=fields.RESTRICT,
        db_constraint=False,
    )
    topic = fields.CharField(max_length=32)
    payload = fields.JSONField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "outbox_event"


class AlertKind(StrEnum):
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"
    RECOVERED = "RECOVERED"
    WEBHOOK_ENDPOINT_DISABLED = "WEBHOOK_ENDPOINT_DISABLED"


class Alert(Model):
    """A low-credit alert (docs/balances.md#statuses), written in the transaction whose change
    moved a balance to another status. Pool alerts have no End User. A
    WEBHOOK_ENDPOINT_DISABLED alert (docs/webhooks.md#delivery) names the endpoint disabled
    for failing, in the transaction that disabled it, and neither pool nor remaining."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="alerts", on_delete=fields.RESTRICT
    )
    pool_id = fields.BigIntField(null=True)  # no foreign key: it would lock the hot pool row
    end_user_id = fields.BigIntField(null=True)
    # no foreign key: deleting an endpoint keeps the alerts that named it
    webhook_endpoint_id = fields.BigIntField(null=True)
    kind = fields.CharEnumField(AlertKind, max_length=32)
    remaining = fields.BigIntField(null=True)
    threshold = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()
    acknowledged_at = fields.DatetimeField(null=True)

    class Meta:
        table = "alert"
        indexes = (("application_id", "id"),)


class TemporaryCode(Model):
    """A one-time, short-lived code a widget exchanges for an End User token. Only a hash
    of the code is kept."""

    id = fields.BigIntField(primary_key=True)
    code_hash = fields.CharField(max_length=64, unique=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="temporary_codes", on_delete=fields.RESTRICT
    )
    end_user_id = fields.BigIntField()
    token_ttl_seconds = fields.IntField()
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "temporary_code"
