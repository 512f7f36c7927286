"""Credit pools of an application."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError

from models.accounts import ApplicationLine
from models.balance_rules import PoolFigures
from models.credits import CreditPool
from models.errors import NotFound, ValidationFailed, excerpt
from models.request_log import as_utc
from models.sql import Row, single_statement

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
    return [_pool_line(row) for row in rows]


@dataclass(frozen=True, slots=True)
class PackLine:
    """A pack as a read shows it (what `CreditPack` rows hold, read raw)."""

    id: int
    pool_id: int
    credits: int
    unallocated: int
    used: int
    expired: int
    purchased_at: datetime
    expires_at: datetime | None
    package: str | None
    reference: str | None


_PACK_COLUMNS = ", ".join(PackLine.__slots__)  # type: ignore[attr-defined]


def _numbered_packs(pool_ids: str) -> str:
    """The packs of the pools `pool_ids` (SQL) with `n`: 1 for each pool's newest."""
    return (
        f"SELECT {_PACK_COLUMNS}, ROW_NUMBER() OVER (PARTITION BY pool_id"
        f" ORDER BY purchased_at DESC, id DESC) AS n FROM credit_pack WHERE pool_id IN ({pool_ids})"
    )


def _pool_line(row: Row) -> PoolLine:
    return PoolLine(*(row[name] for name in PoolLine.__slots__))  # type: ignore[attr-defined]


_POOLS_OF_APPLICATION = ", ".join(f"p.{name}" for name in PoolLine.__slots__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ApplicationRead:
    """An application, its pools (by id) and, when asked for, each pool's newest packs."""

    application: ApplicationLine
    pools: list[PoolLine]
    packs: dict[int, list[PackLine]] | None  # by pool id


_PACKS_OF_POOLS = ", ".join(f"k.{name} AS pack_{name}" for name in PackLine.__slots__)  # type: ignore[attr-defined]


async def application_and_pools(application_id: int, packs: int | None = None) -> ApplicationRead:
    """One application and its pools (by id), with the newest `packs` packs of each when
    given, in one statement without ORM objects: every dashboard reads them, and one
    statement reads them at one snapshot."""
    args: tuple[int, ...] = (application_id,)
    pack_columns = pack_join = ""
    if packs is not None:
        args += (packs,)
        pack_columns = f", {_PACKS_OF_POOLS}"
        pools_of_application = "SELECT id FROM credit_pool WHERE application_id = $1"
        pack_join = (
            f" LEFT JOIN ({_numbered_packs(pools_of_application)}) k"
            " ON k.pool_id = p.id AND k.n <= $2"
        )
    statement = (
        "SELECT a.name AS application_name, a.plan AS application_plan,"
        f" a.created_at AS application_created_at, {_POOLS_OF_APPLICATION}{pack_columns}"
        f" FROM application a LEFT JOIN credit_pool p ON p.application_id = a.id{pack_join}"
        " WHERE a.id = $1 ORDER BY p.id"
        + (", k.purchased_at DESC, k.id DESC" if packs is not None else "")
    )
    # (by keys alone: every application is read by the same plan, so it is planned once)
    rows = await single_statement(lambda db: db.records(statement, *args, planned_once=True))
    if not rows:
        raise NotFound("application not found", field="applicationId")
    first = rows[0]
    application = ApplicationLine(
        application_id,
        first["application_name"],
        first["application_plan"],
        as_utc(first["application_created_at"]),
    )
    pools: dict[int, PoolLine] = {}
    found: dict[int, list[PackLine]] = {}
    for row in rows:  # a row per pack (or per pool without any), by pool
        pool_id = row["id"]
        if pool_id is None:
            continue  # an application without pools
        if pool_id not in pools:
            pools[pool_id], found[pool_id] = _pool_line(row), []
        if packs is not None and row["pack_id"] is not None:
            found[pool_id].append(_pack_line(row, "pack_"))
    return ApplicationRead(application, list(pools.values()), None if packs is None else found)


async def newest_packs(pool_ids: Sequence[int], first: int) -> dict[int, list[PackLine]]:
    """The newest `first` packs of each of these pools (by purchase, then id), in one
    statement and without ORM objects: a dashboard reads them on every request."""
    if not pool_ids:
        return {}
    marks = ",".join(f"${i}" for i in range(2, len(pool_ids) + 2))
    statement = (
        f"SELECT {_PACK_COLUMNS} FROM ({_numbered_packs(marks)}) x WHERE n <= $1"
        " ORDER BY pool_id, purchased_at DESC, id DESC"
    )
    rows = await single_statement(lambda db: db.records(statement, first, *pool_ids))
    found: dict[int, list[PackLine]] = {pool_id: [] for pool_id in pool_ids}
    for row in rows:
        found[row["pool_id"]].append(_pack_line(row))
    return found


def _pack_line(row: Row, prefix: str = "") -> PackLine:
    expires_at = row[prefix + "expires_at"]
    return PackLine(
        row[prefix + "id"],
        row[prefix + "pool_id"],
        row[prefix + "credits"],
        row[prefix + "unallocated"],
        row[prefix + "used"],
        row[prefix + "expired"],
        as_utc(row[prefix + "purchased_at"]),
        None if expires_at is None else as_utc(expires_at),
        row[prefix + "package"],
        row[prefix + "reference"],
    )
