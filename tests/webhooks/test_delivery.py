"""Webhooks end to end in one process, on SQLite and on PostgreSQL with Redis: the events a
committed change announces reach a real receiver on loopback, signed (verified with the
`standardwebhooks` library), with the figures a query shows; none for a rolled-back change;
retried through failures and timeouts, in order, once each after deduplication; the delivery
log, redelivery, the request log, rotation and disabling."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from gql import gql

from api.settings import Settings
from api.webhook_delivery import WebhookDeliverer
from models.billing import close_period, month_start, previous_month
from models.expiry import warn_expiring_lots
from models.outbox import write_events
from models.sql import transaction
from models.tenancy import Application
from models.webhook_queue import Attempt, RetryPolicy, claim_runs, record_attempts, release
from models.webhooks import WebhookMessage
from tests.applications import App, allocation, book, consume_input, keyed_application
from tests.conftest import Backend, Server, serving
from tests.graphql_client import (
    ALLOCATE,
    CONSUME,
    PURCHASE,
    ROTATE_WEBHOOK_SECRET,
    UPDATE_WEBHOOK,
    UPSERT,
    WEBHOOK_DELIVERIES,
)
from tests.subscribing import next_event, subscribed
from tests.webhook_receiver import Receiver, receiving, subscribe

ALL_EVENTS = [
    "BALANCE_LOW",
    "BALANCE_EXHAUSTED",
    "BALANCE_RECOVERED",
    "CREDITS_EXPIRED",
    "PACK_PURCHASED",
    "ALLOCATION_CHANGED",
    "BILLING_PERIOD_CLOSED",
]
LOW_CREDIT_ALERTS = gql("subscription($app: ID!) { lowCreditAlerts(applicationId: $app) { id } }")
ENDPOINT_ALERTS = """
query($id: ID!) {
  application(id: $id) {
    webhookEndpoints { enabled disabledReason failingSince }
    alerts(first: 10) { edges { node { id kind pool remaining acknowledged endUser { id }
                                       webhookEndpoint { id enabled } } } }
  }
}"""
REDELIVER = """
mutation($id: ID!) {
  redeliverWebhook(id: $id) { delivery { messageId status } errors { code } }
}"""
ACKNOWLEDGE_ALERT = """
mutation($id: ID!) { acknowledgeAlert(id: $id) { alert { acknowledged pool } errors { code } } }"""


def webhook_settings(settings: Settings, **changes: object) -> Settings:
    """Loopback receivers allowed, short timeouts and retries (seconds, not days)."""
    fast = {
        "webhooks_allow_private": True,
        "webhook_timeout_seconds": 0.5,
        "webhook_retry_first_seconds": 0.05,
        "webhook_retry_max_seconds": 0.2,
        "webhook_poll_seconds": 0.05,
    }
    return settings.model_copy(update=fast | changes)


@dataclass
class Hooked:
    server: Server
    deliverer: WebhookDeliverer
    http: httpx.AsyncClient


@asynccontextmanager
async def hooking(
    backend: Backend, http: httpx.AsyncClient, **changes: object
) -> AsyncIterator[Hooked]:
    """The server with a deliverer, on `webhook_settings` with `changes`."""
    settings = webhook_settings(backend.settings, **changes)
    async with serving(Backend(backend.name, settings)) as server:
        deliverer = WebhookDeliverer(settings, server.request_log)
        await deliverer.start()
        try:
            yield Hooked(server, deliverer, http)
        finally:
            await deliverer.close()


@pytest.fixture
async def hooked(backend: Backend, http: httpx.AsyncClient) -> AsyncIterator[Hooked]:
    async with hooking(backend, http) as made:
        yield made


async def empty_app(hooked: Hooked) -> App:
    """An application with keys and nothing booked yet (no event before its endpoints)."""
    return await keyed_application(hooked.server, hooked.http)


async def test_committed_events_arrive_signed_with_the_figures_a_query_shows(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        await subscribe(app, receiver, "all", ALL_EVENTS)
        await subscribe(app, receiver, "purchases", ["PACK_PURCHASED"])
        [user] = await book(app, users=1, credits=100, each=10)
        consumed = await app.admin(CONSUME, input=consume_input(app, {"id": user}, 10))
        assert consumed["consumeCredits"]["balance"]["status"] == "EXHAUSTED"

        got = await receiver.wait_for("all", 3)
        assert [m.body["type"] for m in got] == [
            "pack.purchased",
            "allocation.changed",
            "balance.exhausted",
        ]
        for message in got:
            assert message.body["version"] == 1
            assert datetime.fromisoformat(message.body["timestamp"]).tzinfo is not None
            assert message.message_id.startswith("msg_")
        purchased, allocated, exhausted = (m.body["data"] for m in got)
        assert purchased["applicationId"] == app.id and purchased["endUser"] is None
        assert (purchased["pool"], purchased["remaining"], purchased["cause"]) == (
            "ai",
            100,
            "PURCHASE",
        )
        assert allocated["endUser"] == {"id": user, "externalId": "u0"}
        assert (allocated["allocated"], allocated["remaining"], allocated["status"]) == (
            10,
            10,
            "OK",
        )
        assert (exhausted["kind"], exhausted["remaining"]) == ("EXHAUSTED", 0)
        assert exhausted["endUser"]["externalId"] == "u0"
        # the other endpoint gets only what it listens to
        [only] = await receiver.wait_for("purchases", 1)
        assert only.body == got[0].body
        assert only.message_id != got[0].message_id  # one message per endpoint
        await asyncio.sleep(0.3)
        assert len(receiver.unique("purchases")) == 1
        assert len(receiver.unique("all")) == 3
        assert receiver.unverified == []


async def test_a_rolled_back_change_sends_nothing(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        await subscribe(app, receiver, "hook", ALL_EVENTS)
        [user] = await book(app, users=1, credits=20, each=10)
        await receiver.wait_for("hook", 2)
        # Refused whole (more than the pool holds unallocated): rolled back, no event.
        refused = await app.admin(ALLOCATE, input=allocation(app, user, 11))
        assert refused["allocateCredits"]["errors"][0]["code"] == "INSUFFICIENT_CREDITS"

        # A transaction that wrote its events to the outbox and then failed.
        from models.balance_rules import BalanceStatus
        from models.events import BalanceCause, BalanceChanged

        event = BalanceChanged(
            application_id=int(app.id),
            pool_id=1,
            pool="ai",
            end_user_id=None,
            at=datetime.now(UTC).isoformat(),
            version=99,
            cause=BalanceCause.PURCHASE,
            allocated=0,
            used=0,
            remaining=1,
            expired=0,
            status=BalanceStatus.OK,
        )

        async def work(db) -> None:
            await write_events(db, int(app.id), [event])
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await transaction(work)
        # a committed change after both: the only one to arrive
        await app.admin(ALLOCATE, input=allocation(app, user, 5))
        got = await receiver.wait_for("hook", 3)
        await asyncio.sleep(0.3)
        got = receiver.unique("hook")
        assert [m.body["type"] for m in got] == [
            "pack.purchased",
            "allocation.changed",
            "allocation.changed",
        ]
        assert got[-1].body["data"]["allocated"] == 15


async def test_failures_and_timeouts_are_retried_in_order_once_each(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    # Every message waits out a timeout and three retry delays, one message after the
    # other: short ones, the late answer coming about when the message is sent again.
    receiver = Receiver(fail_first=2, slow_attempt=3, slow_seconds=0.3)
    quick = {
        "webhook_timeout_seconds": 0.2,
        "webhook_retry_first_seconds": 0.02,
        "webhook_retry_max_seconds": 0.08,
    }
    async with hooking(backend, http, **quick) as hooked, receiving(receiver):
        app = await empty_app(hooked)
        await subscribe(app, receiver, "flaky", ["ALLOCATION_CHANGED"])
        users = await book(app, users=3, credits=300, each=1)
        for round_ in range(3):
            for user in users:
                await app.admin(ALLOCATE, input=allocation(app, user, 1 + round_))
        got = await receiver.wait_for("flaky", 12, within=60)
        ids = [int(m.message_id.removeprefix("msg_")) for m in got]
        assert ids == sorted(ids), "an endpoint's messages arrive in id order"
        # every message: two 500s, one answered too late (a repeat the receiver drops), one
        # accepted; the receiver saw each at least 3 times and accepted it once or twice
        assert all(receiver.attempts[m.message_id] >= 3 for m in got)
        per_user = {}
        for m in got:
            per_user.setdefault(m.body["data"]["endUser"]["id"], []).append(
                m.body["data"]["allocated"]
            )
        assert per_user == {user: [1, 2, 4, 7] for user in users}

        # the receiver accepted the last one on its late answer: the deliverer sends it again
        delivered = {"status": "DELIVERED"}
        for _ in range(100):
            listing = await app.admin(WEBHOOK_DELIVERIES, id=app.id, first=50, filter=delivered)
            [hook] = listing["application"]["webhookEndpoints"]
            deliveries = hook["deliveries"]
            if deliveries["totalCount"] == 12:
                break
            await asyncio.sleep(0.1)
        assert deliveries["totalCount"] == 12
        for edge in deliveries["edges"]:
            node = edge["node"]
            assert node["status"] == "DELIVERED"
            assert node["attempts"] >= 3 and node["responseStatus"] == 200
            assert node["latencyMs"] > 0 and node["deliveredAt"] is not None


async def test_many_clients_create_endpoints_and_events_at_once(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        paths = [f"e{i}" for i in range(8)]
        await asyncio.gather(
            *(subscribe(app, receiver, p, ["ALLOCATION_CHANGED", "PACK_PURCHASED"]) for p in paths)
        )
        users = await book(app, users=4, credits=1_000, each=1)
        answers = await asyncio.gather(
            *(app.admin(ALLOCATE, input=allocation(app, u, 1)) for u in users for _ in range(6))
        )
        assert all(a["allocateCredits"]["errors"] == [] for a in answers)
        expected = 1 + 4 + 24  # the purchase, the first allocations, the concurrent ones
        bodies = []
        for path in paths:
            got = await receiver.wait_for(path, expected)
            ids = [int(m.message_id.removeprefix("msg_")) for m in got]
            assert ids == sorted(ids)
            per_user: dict[str, list[int]] = {}
            for m in got[1:]:
                data = m.body["data"]
                per_user.setdefault(data["endUser"]["id"], []).append(data["allocated"])
            assert per_user == {u: list(range(1, 8)) for u in users}
            bodies.append([m.body for m in got])
        assert all(b == bodies[0] for b in bodies)  # every endpoint, the same events in order
        await asyncio.sleep(0.3)
        assert {len(receiver.unique(p)) for p in paths} == {expected}


async def test_a_redelivery_asked_for_while_its_message_is_in_flight_is_sent_again(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    """Redelivery asked for between an attempt and its record: the record counts the attempt
    and leaves the message pending and due (delivered or failed), so it is sent again."""
    settings = webhook_settings(backend.settings)
    policy = RetryPolicy(first_delay=60, max_delay=60)
    async with serving(Backend(backend.name, settings)) as server:
        async with receiving(Receiver(fail_first=1)) as receiver:
            app = await keyed_application(server, http)
            await subscribe(app, receiver, "hook", ["PACK_PURCHASED"])
            await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 5})
            sender = WebhookDeliverer(settings)

            async def delivery() -> dict | None:
                listing = await app.admin(WEBHOOK_DELIVERIES, id=app.id, first=1, filter=None)
                edges = listing["application"]["webhookEndpoints"][0]["deliveries"]["edges"]
                return edges[0]["node"] if edges else None

            for _ in range(100):  # the outbox's relay writes the message
                if await delivery() is not None:
                    break
                await asyncio.sleep(0.05)

            async def in_flight_then_redelivered() -> tuple[Attempt, dict]:
                claimed = await claim_runs(100_000, 1, timedelta(minutes=1))
                [[message]] = [r for r in claimed if r[0].url == receiver.endpoint_url("hook")]
                await release([r[0].id for r in claimed if r[0] is not message])
                attempt = await sender.attempt(message)
                node = await delivery()
                assert node is not None and node["status"] == "PENDING"
                again = await app.admin(REDELIVER, id=node["id"])
                assert again["redeliverWebhook"]["errors"] == []
                await record_attempts([attempt], policy, timedelta(days=1))
                node = await delivery()
                assert node is not None
                return attempt, node

            try:
                failed, node = await in_flight_then_redelivered()  # the receiver's 500
                assert (failed.delivered, failed.status) == (False, 500)
                assert (node["status"], node["attempts"]) == ("PENDING", 1)
                delivered, node = await in_flight_then_redelivered()  # due now, not in 60 s
                assert delivered.delivered
                assert (node["status"], node["attempts"]) == ("PENDING", 2)
                await sender.start()
                for _ in range(400):  # accepted: the second attempt and the deliverer's
                    if len(receiver.accepted["hook"]) == 2:
                        break
                    await asyncio.sleep(0.05)
                ids = [m.message_id for m in receiver.accepted["hook"]]
                assert ids == [delivered.message.message_id] * 2
                for _ in range(100):
                    node = await delivery()
                    if node is not None and node["status"] == "DELIVERED":
                        break
                    await asyncio.sleep(0.05)
                assert node is not None and (node["status"], node["attempts"]) == ("DELIVERED", 3)
            finally:
                await sender.close()


async def test_redelivery_and_the_request_log(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        made = await subscribe(app, receiver, "hook", ["PACK_PURCHASED"])
        await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 5})
        [first] = await receiver.wait_for("hook", 1)
        listing = await app.admin(WEBHOOK_DELIVERIES, id=app.id, first=10, filter=None)
        node = listing["application"]["webhookEndpoints"][0]["deliveries"]["edges"][0]["node"]
        again = await app.admin(REDELIVER, id=node["id"])
        assert again["redeliverWebhook"]["errors"] == []
        assert again["redeliverWebhook"]["delivery"]["messageId"] == first.message_id
        for _ in range(400):  # up to 20 s, as Receiver.wait_for
            if len(receiver.accepted["hook"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert [m.message_id for m in receiver.accepted["hook"]] == [first.message_id] * 2
        test = await app.admin(
            """mutation($id: ID!) { sendTestWebhook(id: $id) {
                 delivery { eventType status } errors { code } } }""",
            id=made["id"],
        )
        assert test["sendTestWebhook"]["delivery"] == {"eventType": "TEST", "status": "PENDING"}
        got = await receiver.wait_for("hook", 2)
        assert got[1].body["type"] == "test"

        for _ in range(50):  # logged once the deliverer has seen the answer
            await hooked.server.request_log.flush()
            log = await app.admin(
                """query($id: ID!) { application(id: $id) { requestLog(first: 50) {
                     edges { node { method endpoint operationName status outcome source
                     requestId latencyMs } } } } }""",
                id=app.id,
            )
            calls = [
                e["node"]
                for e in log["application"]["requestLog"]["edges"]
                if e["node"]["source"] == "webhook"
            ]
            if len(calls) == 3:
                break
            await asyncio.sleep(0.1)
        assert len(calls) == 3
        assert {c["operationName"] for c in calls} == {"pack.purchased", "test"}
        assert all(c["endpoint"] == f"POST {receiver.endpoint_url('hook')}" for c in calls)
        assert all(c["status"] == 200 and c["outcome"] == "OK" for c in calls)


async def test_a_rotated_secret_signs_beside_the_new_one_during_the_overlap(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        made = await subscribe(app, receiver, "hook", ["PACK_PURCHASED"])
        old = made["secret"]
        rotated = await app.admin(ROTATE_WEBHOOK_SECRET, id=made["id"], overlap=3600)
        new = rotated["rotateWebhookSecret"]["secret"]
        assert new.startswith("whsec_") and new != old
        assert rotated["rotateWebhookSecret"]["endpoint"]["previousSecretExpiresAt"]
        # During the overlap both sign: a receiver knowing either one verifies.
        for known in ([old], [new]):
            receiver.secrets["hook"] = known
            count = len(receiver.unique("hook")) + 1
            await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 1})
            [*_, last] = await receiver.wait_for("hook", count)
            assert len(last.headers["webhook-signature"].split(" ")) == 2
        # After it (an overlap of 0 ends at once), the old one no longer signs.
        rotated = await app.admin(ROTATE_WEBHOOK_SECRET, id=made["id"], overlap=0)
        newest = rotated["rotateWebhookSecret"]["secret"]
        receiver.secrets["hook"] = [new]
        await app.admin(PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 1})
        for _ in range(400):  # up to 20 s, as Receiver.wait_for
            if receiver.unverified:
                break
            await asyncio.sleep(0.05)
        assert receiver.unverified, "a message signed only by the newest secret"
        receiver.secrets["hook"] = [newest]
        [*_, last] = await receiver.wait_for("hook", 3)
        assert len(last.headers["webhook-signature"].split(" ")) == 1


async def test_an_endpoint_failing_too_long_is_disabled_and_says_so(backend, http, caplog) -> None:
    """Disabled with a warning, a `disabledReason`, an alert in the application's list (not
    in the low-credit subscription) and a webhook to the application's other endpoints."""
    settings = webhook_settings(backend.settings, webhook_disable_after_seconds=0.5)
    receiver = Receiver(fail_first=10**6)
    async with (
        receiving(receiver),
        receiving(Receiver()) as watcher,
        serving(Backend(backend.name, settings)) as server,
    ):
        deliverer = WebhookDeliverer(settings, server.request_log)
        await deliverer.start()
        try:
            app = await keyed_application(server, http)
            made = await subscribe(app, receiver, "down", ["PACK_PURCHASED"])
            await subscribe(app, watcher, "watch", ["WEBHOOK_ENDPOINT_DISABLED"])
            async with subscribed(
                server.graphql, app.reader.key, document=LOW_CREDIT_ALERTS, app=app.id
            ) as low_credit:
                with caplog.at_level(logging.WARNING, logger="usagegraph.webhooks"):
                    await app.admin(
                        PURCHASE, input={"applicationId": app.id, "pool": "ai", "credits": 1}
                    )
                    [announced] = await watcher.wait_for("watch", 1)
                with pytest.raises(TimeoutError):  # not a low-credit alert
                    await next_event(low_credit, wait=0.5)
            # disabled once; the deliverer serves the whole database, where other tests'
            # endpoints (an unreachable address) may fail long enough to be disabled too
            assert caplog.text.count(f"webhook endpoint {made['id']} of application {app.id}") == 1
            assert deliverer.disabled >= 1 and deliverer.failed_attempts >= 1
            listing = await app.admin(ENDPOINT_ALERTS, id=app.id)
            state, watching = listing["application"]["webhookEndpoints"]
            assert state["enabled"] is False and "failing" in state["disabledReason"]
            assert watching["enabled"] is True
            [alert] = [e["node"] for e in listing["application"]["alerts"]["edges"]]
            assert alert["kind"] == "WEBHOOK_ENDPOINT_DISABLED" and not alert["acknowledged"]
            assert (alert["pool"], alert["remaining"], alert["endUser"]) == (None, None, None)
            assert alert["webhookEndpoint"] == {"id": made["id"], "enabled": False}
            assert announced.body["type"] == "webhook_endpoint.disabled"
            assert announced.body["data"] == {
                "applicationId": app.id,
                "alertId": alert["id"],
                "endpointId": made["id"],
                "url": made["url"],
                "disabledReason": state["disabledReason"],
                "failingSince": announced.body["data"]["failingSince"],
            }
            acknowledged = await app.admin(ACKNOWLEDGE_ALERT, id=alert["id"])
            assert acknowledged["acknowledgeAlert"]["alert"]["acknowledged"] is True
            assert acknowledged["acknowledgeAlert"]["alert"]["pool"] is None
            # enabled again: its pending message is tried again, from the oldest
            receiver.fail_first = 0
            enabled = await app.admin(UPDATE_WEBHOOK, input={"id": made["id"], "enabled": True})
            assert enabled["updateWebhookEndpoint"]["endpoint"]["enabled"] is True
            [got] = await receiver.wait_for("down", 1)
            assert got.body["type"] == "pack.purchased"
        finally:
            await deliverer.close()


async def test_a_closed_billing_period_is_announced_once(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        await subscribe(app, receiver, "billing", ["BILLING_PERIOD_CLOSED"])
        # an application dated back two months has an ended period to close
        start = previous_month(month_start(datetime.now(UTC)))
        await Application.filter(id=int(app.id)).update(created_at=previous_month(start))
        written = await asyncio.gather(*(close_period(int(app.id), start) for _ in range(3)))
        assert sum(written) == 1
        [got] = await receiver.wait_for("billing", 1)
        data = got.body["data"]
        assert got.body["type"] == "billing_period.closed"
        assert data["start"] == start.isoformat() and "activeEndUsers" in data
        await asyncio.sleep(0.2)
        assert await WebhookMessage.filter(application_id=int(app.id)).count() == 1


async def test_credits_expiring_soon_are_announced_once(hooked) -> None:
    async with receiving(Receiver()) as receiver:
        app = await empty_app(hooked)
        await subscribe(app, receiver, "expiring", ["CREDITS_EXPIRING"])
        expires_at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        bought = await app.admin(
            PURCHASE,
            input={"applicationId": app.id, "pool": "ai", "credits": 100, "expiresAt": expires_at},
        )
        pack = bought["purchaseCredits"]["pack"]
        upserted = await app.admin(
            UPSERT, input={"applicationId": app.id, "endUsers": [{"externalId": "u0"}]}
        )
        [user] = [u["id"] for u in upserted["upsertEndUsers"]["endUsers"]]
        allocated = await app.admin(ALLOCATE, input=allocation(app, user, 30))  # from the lot
        assert allocated["allocateCredits"]["errors"] == []
        for _ in range(2):
            await warn_expiring_lots(timedelta(days=7))
        pool, held = await receiver.wait_for("expiring", 2)
        assert {pool.body["type"], held.body["type"]} == {"credits.expiring"}
        assert pool.body["version"] == 1
        assert pool.body["data"] == {
            "applicationId": app.id,
            "pool": "ai",
            "endUser": None,
            "packId": pack["id"],
            "remaining": 100,
            "unallocated": 70,
            "expiresAt": pool.body["data"]["expiresAt"],
        }
        assert datetime.fromisoformat(pool.body["data"]["expiresAt"]) == datetime.fromisoformat(
            pack["expiresAt"]
        )
        assert held.body["data"]["endUser"] == {"id": user, "externalId": "u0"}
        assert held.body["data"]["remaining"] == 30
        await asyncio.sleep(0.3)
        assert len(receiver.unique("expiring")) == 2


def test_a_server_that_sends_no_webhook_never_loads_the_http_client() -> None:
    """aiohttp comes with the first delivery: loaded, it grows every idle WebSocket
    connection's memory by about a tenth (bench.ws_fanout)."""
    probe = (
        "import sys\n"
        "from api.app import create_app\n"
        "app = create_app()\n"
        "assert app.state.webhooks.client is None\n"
        "print('aiohttp' in sys.modules)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert answer.stdout.strip() == "False"
