"""Credit balances: pools, lots (packs), End Users, their per-pool balances and per-lot allocations.

Every counter here is kept in the same transaction as the ledger entries that change it
(see `models.ledger`); CHECK constraints make an overdraw impossible whatever the code does."""

from __future__ import annotations

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint
from tortoise.models import Model

from models.balance_rules import BalanceStatus, PoolFigures
from models.tenancy import Application

MAX_TOTAL = 2_147_483_647  # no total may pass a GraphQL Int (docs/ledger.md#rules)


class CreditPool(PoolFigures, Model):
    """Counters of one pool. `end_user_remaining` is Σ End User remaining, so
    unallocated = purchased - used - expired - end_user_remaining."""

    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="pools", on_delete=fields.RESTRICT
    )
    key = fields.CharField(max_length=64)
    name = fields.CharField(max_length=200)
    purchased = fields.BigIntField(default=0)
    allocated = fields.BigIntField(default=0)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    end_user_remaining = fields.BigIntField(default=0)
    low_balance_threshold = fields.BigIntField(null=True)
    end_user_low_balance_threshold = fields.BigIntField(null=True)
    version = fields.BigIntField(default=0)
    # when the balance took its current version (its last event's `at`); null: never changed
    changed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "credit_pool"
        unique_together = (("application", "key"),)
        constraints = (
            CheckConstraint(
                check="purchased >= 0 AND allocated >= 0 AND used >= 0 AND expired >= 0"
                " AND end_user_remaining >= 0",
                name="credit_pool_counters_non_negative",
            ),
            CheckConstraint(
                check=f"purchased <= {MAX_TOTAL} AND allocated <= {MAX_TOTAL}",
                name="credit_pool_totals_fit_int",
            ),
            CheckConstraint(
                check="purchased - used - expired - end_user_remaining >= 0",
                name="credit_pool_unallocated_non_negative",
            ),
        )


class CreditPack(Model):
    """A lot: credits bought at once. credits = unallocated + Σ allocation remaining + used
    + expired; `swept_at` marks the one expiry sweep that turned its remainder into EXPIRE,
    `expiry_warned_at` the one announcement that its credits expire soon."""

    id = fields.BigIntField(primary_key=True)
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool", related_name="packs", on_delete=fields.RESTRICT
    )
    credits = fields.BigIntField()
    unallocated = fields.BigIntField()
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    purchased_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(null=True)
    package = fields.CharField(max_length=200, null=True)
    reference = fields.CharField(max_length=200, null=True)
    swept_at = fields.DatetimeField(null=True)
    expiry_warned_at = fields.DatetimeField(null=True)

    class Meta:
        table = "credit_pack"
        indexes = (("pool_id", "expires_at"), ("expires_at", "swept_at"))
        constraints = (
            CheckConstraint(
                check="credits > 0 AND unallocated >= 0 AND used >= 0 AND expired >= 0"
                " AND unallocated + used + expired <= credits",
                name="credit_pack_counters_valid",
            ),
        )


class EndUser(Model):
    id = fields.BigIntField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="end_users", on_delete=fields.RESTRICT
    )
    external_id = fields.CharField(max_length=200)
    name = fields.CharField(max_length=200, null=True)
    email = fields.CharField(max_length=320, null=True)
    metadata = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "end_user"
        unique_together = (("application", "external_id"),)


class EndUserBalance(Model):
    """The counters of an End User in one pool: remaining = allocated - used - expired."""

    id = fields.BigIntField(primary_key=True)
    end_user: fields.ForeignKeyRelation[EndUser] = fields.ForeignKeyField(
        "models.EndUser", related_name="balances", on_delete=fields.RESTRICT
    )
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool", related_name="end_user_balances", on_delete=fields.RESTRICT
    )
    allocated = fields.BigIntField(default=0)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    remaining = fields.BigIntField(default=0)
    low_balance_threshold = fields.BigIntField(null=True)
    status = fields.CharEnumField(BalanceStatus, max_length=16, default=BalanceStatus.NO_ALLOCATION)
    version = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "end_user_balance"
        unique_together = (("end_user", "pool"),)
        # No counter in an index: balance updates stay HOT (no index writes per debit).
        indexes = (("pool_id",),)
        constraints = (
            CheckConstraint(
                check="allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0"
                " AND remaining = allocated - used - expired",
                name="end_user_balance_counters_valid",
            ),
            CheckConstraint(
                check=f"allocated <= {MAX_TOTAL}", name="end_user_balance_total_fits_int"
            ),
        )


class Allocation(Model):
    """Credits of one lot held by one End User (net of releases)."""

    id = fields.BigIntField(primary_key=True)
    end_user: fields.ForeignKeyRelation[EndUser] = fields.ForeignKeyField(
        "models.EndUser", related_name="allocations", on_delete=fields.RESTRICT
    )
    pool: fields.ForeignKeyRelation[CreditPool] = fields.ForeignKeyField(
        "models.CreditPool", related_name="allocations", on_delete=fields.RESTRICT
    )
    lot: fields.ForeignKeyRelation[CreditPack] = fields.ForeignKeyField(
        "models.CreditPack", related_name="allocations", on_delete=fields.RESTRICT
    )
    allocated = fields.BigIntField(default=0)
    used = fields.BigIntField(default=0)
    expired = fields.BigIntField(default=0)
    remaining = fields.BigIntField(default=0)

    class Meta:
        table = "allocation"
        unique_together = (("end_user", "lot"),)
        # No counter in an index: allocation updates stay HOT (no index writes per debit).
        indexes = (("end_user_id", "pool_id"), ("lot_id",))
        constraints = (
            CheckConstraint(
                check="allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0"
                " AND remaining = allocated - used - expired",
                name="allocation_counters_valid",
            ),
        )
