"""Demo data for `usagegraph serve --demo`: one organization whose last 60 days look real.

History is booked in time order, each operation under `models.clock.booked_at` at the moment
it happens, through the ledger's own operations (purchases before the allocations they fund,
allocations before the use they fund, expiry by the sweep, past billing periods closed by
the closer at the start of the next month). The request log is written by real requests to
the app, in this process, including the failures the Usage page exists to troubleshoot."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from api.demo_requests import book_requests
from api.settings import Settings, get_settings
from models.accounts import (
    create_api_key,
    create_application,
    create_organization,
    revoke_api_key,
)
from models.alerts import set_low_balance_threshold
from models.billing import close_period, month_start, next_month
from models.clock import booked_at
from models.consume_batch import Consumption, consume_credits_batch
from models.credits import EndUserBalance
from models.end_users import EndUserInput, upsert_end_users
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits, release_credits
from models.references import EndUserRef
from models.rollups import rebuild_rollups
from models.tenancy import ApiKey, ApiKeyRole, Application, Organization

DEMO_ORGANIZATION = "usagegraph demo"
# The organization's name while its history is being booked: renamed once complete, so a
# booking cut short (the process killed) is not taken for the demo, and the next start
# books it afresh.
BOOKING_ORGANIZATION = "usagegraph demo (booking interrupted)"
DEMO_KEY_NAME = "demo key"
END_USERS = 90
FIRST_WAVE = 50  # End Users there from the first day; the others join over the weeks
TRIAL_USERS = 6  # End Users never given credits in any pool (NO_ALLOCATION)
HISTORY_DAYS = 60
SPIKE_DAY = 12  # days ago: a launch day, six times the usual use
REPORTING_HOURS = 8  # the integrator reports use in batches, every 8 hours
AI_THRESHOLD = 60  # the End Users' default low-balance threshold in `ai`
PREVIEW_THRESHOLD = 10
EXAMPLE_END_USER = 42  # the documentation's examples use customer-042: it keeps its credits
FEATURES = {"ai": ("ai_generation", "ai_rewrite"), "inbox_preview": ("inbox_preview",)}

Step = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Demo:
    application_id: int
    api_key: str
    created: bool


@dataclass
class _Timeline:
    """What happens when: steps are run in time order, each booked at its moment."""

    steps: list[tuple[datetime, int, Step]] = field(default_factory=list)

    def at(self, moment: datetime, step: Step) -> None:
        self.steps.append((moment, len(self.steps), step))

    async def run(self) -> None:
        for moment, _, step in sorted(self.steps, key=lambda s: (s[0], s[1])):
            with booked_at(moment):
                await step()


async def seed_demo(settings: Settings | None = None) -> Demo:
    """Books the demo once per database; every call issues a fresh ADMIN key for it and
    revokes the demo keys issued before, so keys do not pile up. `settings` (default: the
    environment's) are those of the app its requests go to."""
    settings = settings or get_settings()
    organization = await Organization.get_or_none(name=DEMO_ORGANIZATION)
    created = organization is None
    if organization is None:
        application_id = await _book_history(settings, datetime.now(UTC))
        organization = await Organization.get(name=DEMO_ORGANIZATION)
    else:
        application = await Application.filter(organization_id=organization.id).first()
        assert application is not None
        application_id = application.id
    return Demo(application_id, await _reissue_demo_key(organization.id, application_id), created)


async def _reissue_demo_key(organization_id: int, application_id: int) -> str:
    for previous in await ApiKey.filter(
        application_id=application_id, name=DEMO_KEY_NAME, revoked_at__isnull=True
    ):
        await revoke_api_key(previous)
    issued = await create_api_key(
        organization_id, DEMO_KEY_NAME, ApiKeyRole.ADMIN, application_id=application_id
    )
    return issued.secret


async def _book_history(settings: Settings, now: datetime) -> int:
    start = (now - timedelta(days=HISTORY_DAYS)).replace(hour=9, minute=0, second=0, microsecond=0)
    with booked_at(start):
        organization, _ = await create_organization(BOOKING_ORGANIZATION)
        application = await create_application(organization.id, "Acme Mail Studio", "Growth")
        backend_key = await create_api_key(
            organization.id, "Acme backend (production)", ApiKeyRole.ADMIN, application.id
        )
    history = _History(application.id, start, now)
    await history.book()
    await book_requests(settings, application.id, backend_key.secret, now, history.rng)
    # reports read the rollups: the history summed in, also where a fold already passed it
    await rebuild_rollups()
    organization.name = DEMO_ORGANIZATION
    await organization.save(update_fields=["name"])
    return application.id


@dataclass(frozen=True)
class _Joined:
    """An End User (by number: `customer-<number>`), when they joined, the credits they
    were given per pool on joining, and how much they use relative to others."""

    number: int
    at: datetime
    grants: dict[str, int]
    weight: float


class _History:
    """The application's 60 days, planned on a timeline, then booked in time order."""

    def __init__(self, app: int, start: datetime, now: datetime) -> None:
        self.app = app
        self.start = start
        self.now = now
        self.rng = random.Random(7)
        self.timeline = _Timeline()
        self.ids: dict[int, int] = {}  # End User number -> id, once created

    async def book(self) -> None:
        self._plan_purchases()
        joined = self._plan_end_users()
        self._plan_use(joined)
        self._plan_closings()
        await self.timeline.run()
        await self._bring_to_today()

    def _plan_purchases(self) -> None:
        """Packs bought ahead of the allocations they fund; a launch bonus that expires."""
        start, at = self.start, self.timeline.at
        bonus_end = start + timedelta(days=14)
        at(start + timedelta(minutes=5), self._thresholds)
        at(start + timedelta(minutes=10), self._buy("ai", 3_000, "Launch bonus", bonus_end))
        at(start + timedelta(minutes=11), self._buy("ai", 40_000, "AI credits 40k"))
        at(start + timedelta(minutes=12), self._buy("inbox_preview", 4_000, "Preview pack"))
        at(start + timedelta(days=26, hours=2), self._buy("ai", 40_000, "AI credits 40k"))
        at(start + timedelta(days=41, hours=3), self._buy("inbox_preview", 4_000, "Preview pack"))
        at(bonus_end + timedelta(minutes=5), expire_lots)  # the sweep job's run

    def _buy(self, pool: str, credits: int, package: str, expires: datetime | None = None) -> Step:
        order = f"A-{1001 + len(self.timeline.steps)}"
        return lambda: purchase_credits(
            self.app, pool, credits, package=package, reference=order, expires_at=expires
        )

    async def _thresholds(self) -> None:
        await set_low_balance_threshold(self.app, "ai", AI_THRESHOLD, end_user_default=True)
        await set_low_balance_threshold(
            self.app, "inbox_preview", PREVIEW_THRESHOLD, end_user_default=True
        )
        await set_low_balance_threshold(self.app, "ai", 8_000)

    def _plan_end_users(self) -> list[_Joined]:
        """End Users join (a first wave, then a few a day), each given credits on joining;
        trial users get none, and some never get inbox previews."""
        rng = self.rng
        by_day: dict[int, list[int]] = defaultdict(list)
        for number in range(END_USERS):
            day = 0 if number < FIRST_WAVE else rng.randint(1, HISTORY_DAYS - 10)
            by_day[day].append(number)
        joined: list[_Joined] = []
        for day, numbers in sorted(by_day.items()):
            moment = self.start + timedelta(days=day, minutes=30)
            wave = []
            for number in numbers:
                grants = {"ai": rng.choice((200, 300, 500))}
                if rng.random() < 0.6:
                    grants["inbox_preview"] = rng.choice((20, 40))
                weight = rng.paretovariate(1.3)
                if number < TRIAL_USERS:
                    grants = {}
                if number == EXAMPLE_END_USER:
                    grants, weight = {"ai": 500, "inbox_preview": 40}, 1.0
                wave.append(_Joined(number, moment, grants, weight))
            self.timeline.at(moment, lambda wave=wave: self._join(wave))
            joined.extend(wave)
        return joined

    async def _join(self, wave: list[_Joined]) -> None:
        users = await upsert_end_users(
            self.app,
            [
                EndUserInput(
                    f"customer-{j.number:03d}",
                    name=f"Customer {j.number:03d}",
                    email=f"team{j.number:03d}@example.com",
                )
                for j in wave
            ],
        )
        for planned, user in zip(wave, users, strict=True):
            self.ids[planned.number] = user.id
            for pool, credits in planned.grants.items():
                await allocate_credits(self.app, pool, EndUserRef(id=user.id), credits)

    def _plan_use(self, joined: list[_Joined]) -> None:
        """Use on weekdays and, less, at weekends, with one spike, reported in 8-hour
        batches (each booked when it is sent, with the time each use occurred)."""
        rng = self.rng
        batches: dict[datetime, list[tuple[datetime, _Joined, str]]] = defaultdict(list)
        latest = self.now - timedelta(hours=3)
        for day in range(HISTORY_DAYS + 1):
            midnight = (self.start + timedelta(days=day)).replace(hour=0)
            count = 45 if midnight.weekday() < 5 else 12
            if HISTORY_DAYS - day == SPIKE_DAY:
                count *= 6
            active = [user for user in joined if user.grants and user.at < midnight]
            if not active:
                continue
            for user in rng.choices(active, [user.weight for user in active], k=count):
                occurred = midnight + timedelta(minutes=rng.randint(9 * 60, 23 * 60 + 59))
                sent = occurred.replace(minute=0) + timedelta(
                    hours=REPORTING_HOURS - occurred.hour % REPORTING_HOURS
                )
                if sent <= latest:
                    batches[sent].append((occurred, user, rng.choice(list(user.grants))))
        for sent, uses in batches.items():
            self.timeline.at(sent, self._report(uses))

    def _report(self, uses: list[tuple[datetime, _Joined, str]]) -> Step:
        rng = self.rng
        consumptions = [
            (occurred, user.number, pool, rng.randint(1, 6) if pool == "ai" else 1)
            for occurred, user, pool in uses
        ]
        features = [rng.choice(FEATURES[pool]) for _, _, pool in uses]

        async def step() -> None:
            # a use that no longer fits fails alone (INSUFFICIENT_CREDITS), as it would live
            await consume_credits_batch(
                self.app,
                [
                    Consumption(
                        EndUserRef(id=self.ids[number]), pool, credits, feature, None, occurred
                    )
                    for (occurred, number, pool, credits), feature in zip(
                        consumptions, features, strict=True
                    )
                ],
            )

        return step

    def _plan_closings(self) -> None:
        """Each month that ended closes shortly after midnight, as the closing job does."""
        period = month_start(self.start)
        while next_month(period) + timedelta(minutes=10) < self.now:
            self.timeline.at(
                next_month(period) + timedelta(minutes=10),
                lambda period=period: close_period(self.app, period),
            )
            period = next_month(period)

    async def _bring_to_today(self) -> None:
        """The last hours: a churned customer's credits go back to the pool, a few End
        Users run low and a few run out (the statuses the Usage page flags)."""
        ai = (
            await EndUserBalance.filter(
                pool__application_id=self.app, pool__key="ai", remaining__gt=2 * AI_THRESHOLD
            )
            .exclude(end_user_id=self.ids[EXAMPLE_END_USER])
            .order_by("end_user_id")
        )
        self.rng.shuffle(ai)
        churned, running_low, running_out = ai[:1], ai[1:7], ai[7:11]
        moment = self.now - timedelta(hours=2)
        for balance in churned:
            with booked_at(moment):
                ref = EndUserRef(id=balance.end_user_id)  # type: ignore[attr-defined]
                await release_credits(self.app, "ai", ref, balance.remaining)
        for balances, left in ((running_low, AI_THRESHOLD // 2), (running_out, 0)):
            for balance in balances:
                moment += timedelta(minutes=7)
                with booked_at(moment):
                    await consume_credits(
                        self.app,
                        "ai",
                        EndUserRef(id=balance.end_user_id),  # type: ignore[attr-defined]
                        balance.remaining - left,
                        self.rng.choice(FEATURES["ai"]),
                    )
