"""Billing periods (docs/billing-and-export.md#billing-periods) over HTTP, on SQLite and
PostgreSQL: the open period is the ledger live, a closed record is written once and never changes,
per-package figures add up."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tortoise.exceptions import BaseORMException

from api.jobs import JobRunner, default_jobs
from api.settings import Settings
from models.billing import (
    as_utc,
    close_ended_periods,
    close_period,
    month_start,
    next_month,
    previous_month,
)
from models.clock import booked_at
from models.credits import CreditPack, CreditPool
from models.end_users import EndUserInput, upsert_end_users
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.records import LedgerEntry
from models.references import EndUserRef
from models.rollups import fold_usage, rebuild_rollups
from models.sql import Sql, single_statement
from tests.usage_history import (
    HttpApp,
    allocate,
    consume,
    new_application,
    purchase,
    record_history,
)

PERIOD_FIELDS = """
  start end status closedAt endUserUsage activeEndUsers
  pools {
    pool name openingRemaining purchased used expired allocated closingRemaining
    endUserUsage activeEndUsers packages { package purchased used expired remaining }
  }
"""
PERIOD = (
    "query($id: ID!, $start: DateTime!) { application(id: $id) {"
    f" billingPeriod(start: $start) {{ {PERIOD_FIELDS} }} }} }}"
)
PERIODS = (
    "query($id: ID!, $first: Int!) { application(id: $id) {"
    f" billingPeriods(first: $first) {{ {PERIOD_FIELDS} }} }} }}"
)


@pytest.fixture
async def http() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def _iso(moment: datetime) -> str:
    return moment.isoformat()  # as GraphQL answers a DateTime


async def _period(app: HttpApp, start: datetime) -> dict[str, Any] | None:
    data = await app.reader(PERIOD, id=app.id, start=_iso(start))
    return data["application"]["billingPeriod"]


async def ledger_period(application_id: int, start: datetime) -> dict[str, Any]:
    """The period's figures summed here from the ledger rows, in the GraphQL shape."""
    end = next_month(start)
    packages = {
        lot.id: lot.package for lot in await CreditPack.filter(pool__application_id=application_id)
    }
    pools = await CreditPool.filter(application_id=application_id).order_by("id")
    sums: dict[int, dict[str | None, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    active: dict[int, set[int]] = defaultdict(set)
    for entry in await LedgerEntry.filter(application_id=application_id):
        booked = as_utc(entry.created_at)
        if booked >= end:
            continue
        figures = sums[entry.pool_id][packages[entry.lot_id]]  # type: ignore[attr-defined]
        if booked < start:
            if entry.kind in ("PURCHASE", "CONSUME", "EXPIRE"):
                figures["opening"] += entry.amount
            continue
        if entry.kind == "PURCHASE":
            figures["purchased"] += entry.amount
        elif entry.kind == "CONSUME":
            figures["used"] -= entry.amount
            active[entry.pool_id].add(entry.end_user_id)  # type: ignore[attr-defined]
        elif entry.kind == "EXPIRE":
            figures["expired"] -= entry.amount
        elif entry.kind in ("ALLOCATE", "RELEASE"):
            figures["allocated"] += entry.amount
    result_pools = []
    for pool in pools:
        if pool.id not in sums and as_utc(pool.created_at) >= end:
            continue  # created after the period
        by_package = sums[pool.id]
        package_rows = []
        for package, f in by_package.items():
            if not any(f.values()):
                continue
            remaining = f["opening"] + f["purchased"] - f["used"] - f["expired"]
            package_rows.append(
                {
                    "package": package,
                    "purchased": f["purchased"],
                    "used": f["used"],
                    "expired": f["expired"],
                    "remaining": remaining,
                }
            )
        package_rows.sort(key=lambda p: (p["package"] is None, p["package"] or ""))

        def total(name: str, by_package: dict = by_package) -> int:
            return sum(f[name] for f in by_package.values())

        opening = total("opening")
        closing = opening + total("purchased") - total("used") - total("expired")
        result_pools.append(
            {
                "pool": pool.key,
                "name": pool.name,
                "openingRemaining": opening,
                "purchased": total("purchased"),
                "used": total("used"),
                "expired": total("expired"),
                "allocated": total("allocated"),
                "closingRemaining": closing,
                "endUserUsage": total("used"),
                "activeEndUsers": len(active[pool.id]),
                "packages": package_rows,
            }
        )
    return {
        "endUserUsage": sum(p["used"] for p in result_pools),
        "activeEndUsers": len(set().union(*active.values())) if active else 0,
        "pools": result_pools,
    }


def _figures(period: dict[str, Any]) -> dict[str, Any]:
    return {k: period[k] for k in ("endUserUsage", "activeEndUsers", "pools")}


async def test_the_open_period_is_the_ledger_live_and_packages_add_up(server, http) -> None:
    app = await record_history(await new_application(server, http))
    start = month_start(datetime.now(UTC))

    period = await _period(app, start)

    assert period is not None
    assert (period["status"], period["closedAt"]) == ("OPEN", None)
    assert (period["start"], period["end"]) == (_iso(start), _iso(next_month(start)))
    assert _figures(period) == await ledger_period(app.row_id, start)
    ai = next(p for p in period["pools"] if p["pool"] == "ai")
    assert (ai["purchased"], ai["used"], ai["allocated"], ai["activeEndUsers"]) == (
        850,
        28,
        360,
        3,
    )
    assert [p["package"] for p in ai["packages"]] == ["Growth", "Starter", None]
    assert period["activeEndUsers"] == 3 and period["endUserUsage"] == 31
    for pool in period["pools"]:  # per-package figures add up to the pool's
        counters = await CreditPool.get(application_id=app.row_id, key=pool["pool"])
        assert pool["closingRemaining"] == counters.remaining
        for name, total in (("purchased", "purchased"), ("used", "used"), ("expired", "expired")):
            assert sum(p[name] for p in pool["packages"]) == pool[total]
        assert sum(p["remaining"] for p in pool["packages"]) == pool["closingRemaining"]
    listed = (await app.reader(PERIODS, id=app.id, first=3))["application"]["billingPeriods"]
    assert listed == [period]  # the application was created this month


async def test_a_closed_period_is_written_once_and_never_changes(server, http) -> None:
    app = await record_history(await new_application(server, http))
    start = month_start(datetime.now(UTC))
    live = await _period(app, start)

    # Many closers at once (as every process's job would): exactly one record.
    written = await asyncio.gather(*(close_period(app.row_id, start) for _ in range(8)))
    assert sorted(written) == [False] * 7 + [True]
    closed = await _period(app, start)
    assert closed is not None and closed["status"] == "CLOSED" and closed["closedAt"]
    assert _figures(closed) == _figures(live)

    # Later activity, a consumption back-dated into the month among it.
    u0, u1, *_ = app.end_user_ids
    await purchase(app, "ai", 70, "Growth")
    await allocate(app, u1, "ai", 30)
    await consume(app, u1, "ai", 9, occurred_at=start + timedelta(seconds=1))
    await consume(app, u0, "inbox_preview", 1, "inbox_preview")
    assert await close_period(app.row_id, start) is False

    assert await _period(app, start) == closed
    rows = await single_statement(
        lambda db: db.rows("SELECT * FROM billing_period WHERE application_id = $1", app.row_id)
    )
    assert len(rows) == 1
    with pytest.raises(BaseORMException):
        await single_statement(
            lambda db: db.run(
                "UPDATE billing_period SET figures = $1 WHERE application_id = $2",
                "{}",
                app.row_id,
            )
        )
    assert await _period(app, start) == closed


async def _back_date_application(application_id: int, created: datetime) -> None:
    async def work(db: Sql) -> None:
        await db.run(
            "UPDATE application SET created_at = $1 WHERE id = $2", created, application_id
        )

    await single_statement(work)


async def test_the_job_closes_every_ended_month_once_and_back_dating_changes_none(
    server, http
) -> None:
    app = await new_application(server, http)
    this_month = month_start(datetime.now(UTC))
    last_month = previous_month(this_month)
    await _back_date_application(app.row_id, previous_month(last_month) + timedelta(days=3))
    app = await record_history(app)

    # The registered job, in two "processes" at once, with no closing delay.
    settings = Settings(
        USAGEGRAPH_BILLING_CLOSE_SECONDS=0.05, USAGEGRAPH_BILLING_CLOSE_DELAY_SECONDS=0
    )
    job = next(j for j in default_jobs(settings) if j.name == "close-billing-periods")
    assert job.interval_seconds == 0.05
    runners = [JobRunner([job]), JobRunner([job])]
    for runner in runners:
        await runner.start()
    try:
        for _ in range(200):
            if (await _period(app, last_month) or {}).get("status") == "CLOSED":
                break
            await asyncio.sleep(0.05)
    finally:
        for runner in runners:
            await runner.close()
    assert await close_ended_periods(delay=timedelta(0)) == 0
    records = await single_statement(
        lambda db: db.rows(
            "SELECT period_start FROM billing_period WHERE application_id = $1"
            " ORDER BY period_start",
            app.row_id,
        )
    )
    assert [as_utc(r["period_start"]) for r in records] == [previous_month(last_month), last_month]

    before = await _period(app, last_month)
    assert before is not None and before["status"] == "CLOSED"
    assert _figures(before) == await ledger_period(app.row_id, last_month)
    # A consumption sent now but dated last month is booked now: last month stays as closed.
    await consume(app, app.end_user_ids[0], "ai", 6, occurred_at=last_month + timedelta(days=2))
    assert await _period(app, last_month) == before
    current = await _period(app, this_month)
    assert current is not None and current["status"] == "OPEN"
    assert _figures(current) == await ledger_period(app.row_id, this_month)
    listed = (await app.reader(PERIODS, id=app.id, first=5))["application"]["billingPeriods"]
    assert [(p["start"], p["status"]) for p in listed] == [
        (_iso(this_month), "OPEN"),
        (_iso(last_month), "CLOSED"),
        (_iso(previous_month(last_month)), "CLOSED"),
    ]


async def test_periods_open_where_the_ledger_stood_at_their_start(server, http) -> None:
    """After months of booked history, each period computed live (none closed) opens with
    the ledger's remaining at its start and has its own flows: lots bought, drawn, expired
    and allocated in earlier, the same and later months, with and without a package."""
    app = await new_application(server, http)
    this_month = month_start(datetime.now(UTC))
    last = previous_month(this_month)
    before = previous_month(last)
    await _back_date_application(app.row_id, before)
    rows = await upsert_end_users(app.row_id, [EndUserInput(f"h{i}") for i in range(3)])
    u0, u1, u2 = (EndUserRef(id=row.id) for row in rows)
    day = timedelta(days=1)
    with booked_at(before + 2 * day):
        await purchase_credits(app.row_id, "ai", 500, package="Growth")
        await purchase_credits(app.row_id, "ai", 80, expires_at=last + 3 * day)
        await allocate_credits(app.row_id, "ai", u0, 200)
        await consume_credits(app.row_id, "ai", u0, 40, "ai_generation")
    with booked_at(last + 2 * day):
        await purchase_credits(app.row_id, "inbox_preview", 60, package="Starter")
        await allocate_credits(app.row_id, "ai", u1, 150)
        await consume_credits(app.row_id, "ai", u1, 25, "ai_generation")
        await consume_credits(app.row_id, "ai", u0, 10, "ai_generation")
    with booked_at(last + 4 * day):
        assert (await expire_lots()).lots == 1
    with booked_at(this_month + timedelta(minutes=1)):
        await purchase_credits(app.row_id, "ai", 300, package="Growth")
        await release_credits(app.row_id, "ai", u1, 20)
        await allocate_credits(app.row_id, "ai", u2, 100)
        await consume_credits(app.row_id, "ai", u2, 7, "ai_generation")
    # history booked behind a fold that already passed it: the rollups summed afresh
    await rebuild_rollups()
    periods = await _periods_match_the_ledger(app, (before, last, this_month))
    for earlier, later in itertools.pairwise(periods):  # each opens where the one before closed
        assert later["ai"]["openingRemaining"] == earlier["ai"]["closingRemaining"] > 0
    assert periods[2]["inbox_preview"]["openingRemaining"] == 60
    # entries booked now are in the tail, then folded: the same figures either way
    await purchase_credits(app.row_id, "ai", 50, package="Growth")
    await allocate_credits(app.row_id, "ai", u0, 30)
    await consume_credits(app.row_id, "ai", u0, 9, "ai_generation")
    await consume_credits(app.row_id, "ai", u2, 3, "ai_generation")
    tail = await _periods_match_the_ledger(app, (before, last, this_month))
    assert tail[2]["ai"]["used"] == periods[2]["ai"]["used"] + 12
    await fold_usage()
    assert await _periods_match_the_ledger(app, (before, last, this_month)) == tail
    await consume_credits(app.row_id, "ai", u1, 1, "ai_generation")  # a tail after the fold
    folded = await _periods_match_the_ledger(app, (before, last, this_month))
    assert folded[2]["ai"]["used"] == tail[2]["ai"]["used"] + 1


async def test_a_fold_that_skips_the_billing_rollups_loses_no_entry(
    server, http, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a rolling upgrade a process of the previous version folds without the billing
    rollups and moves the fold's watermark past entries it never added to them: billing's
    own watermark stays behind, its tail still holds them, and the next fold adds them."""
    app = await new_application(server, http)
    (row,) = await upsert_end_users(app.row_id, [EndUserInput("r0")])
    user = EndUserRef(id=row.id)
    await purchase_credits(app.row_id, "ai", 100, package="Growth")
    await allocate_credits(app.row_id, "ai", user, 60)
    await fold_usage()
    this_month = month_start(datetime.now(UTC))
    await consume_credits(app.row_id, "ai", user, 11, "ai_generation")
    with monkeypatch.context() as patched:
        patched.setattr("models.rollups.fold_billing", _no_billing)
        assert await fold_usage()
    (period,) = await _periods_match_the_ledger(app, (this_month,))
    assert period["ai"]["used"] == 11 and period["ai"]["activeEndUsers"] == 1
    await fold_usage()
    assert await _periods_match_the_ledger(app, (this_month,)) == [period]


async def _no_billing(*_: Any) -> None:
    """A fold of a version without the billing rollups."""


async def _periods_match_the_ledger(
    app: HttpApp, starts: tuple[datetime, ...]
) -> list[dict[str, Any]]:
    """Each period's figures, checked against the ledger's rows summed here; by pool."""
    periods = []
    for start in starts:
        period = await _period(app, start)
        assert period is not None and period["status"] == "OPEN"
        assert _figures(period) == await ledger_period(app.row_id, start), start
        periods.append({p["pool"]: p for p in period["pools"]})
    return periods


async def test_bad_periods_are_typed_errors(server, http) -> None:
    app = await new_application(server, http)
    start = month_start(datetime.now(UTC))
    response = await app.reader.raw(
        PERIOD, {"id": app.id, "start": _iso(start + timedelta(days=3))}
    )
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["VALIDATION"]
    response = await app.reader.raw(PERIODS, {"id": app.id, "first": 0})
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["VALIDATION"]
    assert await _period(app, next_month(start)) is None  # the future
    assert await _period(app, previous_month(start)) is None  # before the application
