"""Credit pools of an application."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError

from models.balance_rules import PoolFigures
from models.credits import CreditPool
from models.errors import ValidationFailed, excerpt
from models.sql import single_statement

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _threshold(value: int | None, field: str) -> int | None:
    if value is not None and not 0 <= value <= 2_147_483_647:
        raise ValidationFailed(f"{field} must be between 0 and 2,147,483,647", field=field)
    return value


async def create_pool(
    application_id: int,
    key: str,
    name: str,
    *,
    low_balance_threshold: int | None = None,
    end_user_low_balance_threshold: int | None = None,
) -> CreditPool:
    """A custom pool; its key is lower-case letters, digits and `_`, unique per application."""
    if not _KEY.match(key):
        raise ValidationFailed(
            "key must start with a letter and hold only a-z, 0-9 and _ (at most 64)", field="key"
        )
    name = name.strip()
    if not 0 < len(name) <= 200:
        raise ValidationFailed("name must be 1 to 200 characters", field="name")
    try:
        return await CreditPool.create(
            application_id=application_id,
            key=key,
            name=name,
            low_balance_threshold=_threshold(low_balance_threshold, "lowBalanceThreshold"),
            end_user_low_balance_threshold=_threshold(
                end_user_low_balance_threshold, "endUserLowBalanceThreshold"
            ),
        )
    except IntegrityError:
        raise ValidationFailed(f"a pool {excerpt(key)} exists already", field="key") from None


@dataclass(frozen=True, slots=True)
class PoolLine(PoolFigures):
    """A pool's counters as a read shows them (what `CreditPool` rows hold, read raw)."""

    id: int
    application_id: int
    key: str
    name: str
    purchased: int
    allocated: int
    used: int
    expired: int
    end_user_remaining: int
    low_balance_threshold: int | None
    end_user_low_balance_threshold: int | None
    version: int


_POOL_COLUMNS = ", ".join(PoolLine.__slots__)  # type: ignore[attr-defined]


async def pool_lines(application_ids: list[int]) -> list[PoolLine]:
    """The pools of these applications, by id, in one statement (no ORM objects: a
    dashboard reads them on every request)."""
    if not application_ids:
        return []
    marks = ",".join(f"${i}" for i in range(1, len(application_ids) + 1))
    statement = (
        f"SELECT {_POOL_COLUMNS} FROM credit_pool WHERE application_id IN ({marks}) ORDER BY id"
    )
    rows = await single_statement(lambda db: db.records(statement, *application_ids))
    return [PoolLine(*(row[name] for name in PoolLine.__slots__)) for row in rows]  # type: ignore[attr-defined]
