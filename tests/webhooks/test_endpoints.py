"""Webhook endpoints over the API: what each credential may do with them, typed errors for
bad input, and the addresses a webhook may be sent to (no private, loopback or link-local
target unless the operator allows it, at creation and again at delivery)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from api.jobs import webhook_retention
from api.webhook_delivery import WebhookDeliverer
from api.webhook_http import WebhookClient, refusal
from models.webhook_events import enqueue_test
from models.webhook_queue import Claimed
from models.webhook_signing import PRIVATE_TARGET, UnsafeTarget, check_target
from models.webhooks import DeliveryStatus, WebhookEventType, WebhookMessage, create_endpoint
from tests.applications import application, keyed_application
from tests.graphql_client import (
    CREATE_WEBHOOK,
    ISSUE,
    ROTATE_WEBHOOK_SECRET,
    UPDATE_WEBHOOK,
    Caller,
)
from tests.webhook_receiver import Receiver, receiving

PUBLIC_URL = "https://93.184.215.14/hooks/usage"  # a public address: no DNS look-up needed
LIST = """
query($id: ID!) { application(id: $id) { webhookEndpoints { id url events enabled } } }"""
DELETE = """
mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { deletedId errors { code field } } }"""
DISABLE = """
mutation($id: ID!) { disableWebhookEndpoint(id: $id) {
  endpoint { enabled disabledReason } errors { code } } }"""
SEND_TEST = """
mutation($id: ID!) { sendTestWebhook(id: $id) { delivery { id } errors { code } } }"""


def create_input(app_id: str, url: str = PUBLIC_URL, events: list[str] | None = None) -> dict:
    return {
        "applicationId": app_id,
        "url": url,
        "events": ["BALANCE_LOW"] if events is None else events,
        "description": "back office",
    }


async def test_an_application_manages_its_endpoints(server, http) -> None:
    app = await keyed_application(server, http)
    made = (await app.admin(CREATE_WEBHOOK, input=create_input(app.id)))["createWebhookEndpoint"]
    assert made["errors"] == [] and made["secret"].startswith("whsec_")
    endpoint = made["endpoint"]
    assert (endpoint["url"], endpoint["events"], endpoint["enabled"]) == (
        PUBLIC_URL,
        ["BALANCE_LOW"],
        True,
    )
    listed = await app.reader(LIST, id=app.id)  # a READ key lists them (no secret there)
    assert [e["id"] for e in listed["application"]["webhookEndpoints"]] == [endpoint["id"]]

    changed = await app.admin(
        UPDATE_WEBHOOK,
        input={"id": endpoint["id"], "events": ["PACK_PURCHASED", "BALANCE_EXHAUSTED"]},
    )
    assert changed["updateWebhookEndpoint"]["endpoint"]["events"] == [
        "PACK_PURCHASED",
        "BALANCE_EXHAUSTED",
    ]
    disabled = await app.admin(DISABLE, id=endpoint["id"])
    assert disabled["disableWebhookEndpoint"]["endpoint"] == {
        "enabled": False,
        "disabledReason": "disabled by the application",
    }
    assert (await app.admin(SEND_TEST, id=endpoint["id"]))["sendTestWebhook"]["errors"] == [
        {"code": "VALIDATION"}
    ]
    rotated = await app.admin(ROTATE_WEBHOOK_SECRET, id=endpoint["id"], overlap=60)
    assert rotated["rotateWebhookSecret"]["secret"] != made["secret"]
    deleted = await app.admin(DELETE, id=endpoint["id"])
    assert deleted["deleteWebhookEndpoint"] == {"deletedId": endpoint["id"], "errors": []}
    assert (await app.admin(LIST, id=app.id))["application"]["webhookEndpoints"] == []


async def test_bad_input_comes_back_as_typed_errors(server, http) -> None:
    app = await keyed_application(server, http)
    cases = [
        (create_input(app.id, events=[]), "events"),
        (create_input(app.id, url="ftp://example.com/hook"), "url"),
        (create_input(app.id, url="https://user:pw@93.184.215.14/"), "url"),
        (create_input(app.id) | {"description": "d" * 501}, "description"),
    ]
    for given, field in cases:
        payload = (await app.admin(CREATE_WEBHOOK, input=given))["createWebhookEndpoint"]
        assert payload["endpoint"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("VALIDATION", field)]
    rotated = await app.admin(ROTATE_WEBHOOK_SECRET, id="1", overlap=10**7)
    assert rotated["rotateWebhookSecret"]["errors"][0]["code"] in ("VALIDATION", "NOT_FOUND")


async def test_no_credential_reaches_another_applications_endpoints(server, http) -> None:
    mine = await application(server, http, users=1, credits_each=5)
    other = await keyed_application(server, http)
    made = (await mine.admin(CREATE_WEBHOOK, input=create_input(mine.id)))["createWebhookEndpoint"]
    endpoint_id = made["endpoint"]["id"]

    for document, variables, field in [
        (UPDATE_WEBHOOK, {"input": {"id": endpoint_id, "enabled": False}}, "updateWebhookEndpoint"),
        (DELETE, {"id": endpoint_id}, "deleteWebhookEndpoint"),
        (DISABLE, {"id": endpoint_id}, "disableWebhookEndpoint"),
        (ROTATE_WEBHOOK_SECRET, {"id": endpoint_id, "overlap": 0}, "rotateWebhookSecret"),
        (SEND_TEST, {"id": endpoint_id}, "sendTestWebhook"),
    ]:
        answer = await other.admin(document, **variables)
        assert answer[field]["errors"][0]["code"] == "NOT_FOUND", field
    refused = await other.admin(CREATE_WEBHOOK, input=create_input(mine.id))
    assert refused["createWebhookEndpoint"]["errors"][0]["code"] == "NOT_FOUND"
    listed = await other.admin.raw(LIST, {"id": mine.id})
    assert listed.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # a READ key of the application itself may look, not change
    read_only = await mine.reader(CREATE_WEBHOOK, input=create_input(mine.id))
    assert read_only["createWebhookEndpoint"]["errors"][0]["code"] == "FORBIDDEN"
    read_delete = await mine.reader(DELETE, id=endpoint_id)
    assert read_delete["deleteWebhookEndpoint"]["errors"][0]["code"] == "FORBIDDEN"

    # an End User token gets nothing
    issued = await mine.admin(
        ISSUE, input={"applicationId": mine.id, "endUser": {"id": mine.end_user_ids[0]}}
    )
    token = Caller(http, server.graphql, issued["issueEndUserToken"]["token"])
    listed = await token.raw(LIST, {"id": mine.id})
    assert listed.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    created = await token(CREATE_WEBHOOK, input=create_input(mine.id))
    assert created["createWebhookEndpoint"]["errors"][0]["code"] == "NOT_FOUND"
    removed = await token(DELETE, id=endpoint_id)
    assert removed["deleteWebhookEndpoint"]["errors"][0]["code"] == "NOT_FOUND"
    assert len((await mine.admin(LIST, id=mine.id))["application"]["webhookEndpoints"]) == 1


async def test_the_delivery_log_has_a_cost(server, http) -> None:
    app = await keyed_application(server, http)
    response = await app.admin.raw(
        "query($id: ID!) { application(id: $id) { webhookEndpoints(first: 500) {"
        " deliveries(first: 500) { edges { node { id payload } } } } } }",
        {"id": app.id},
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
    ],
)
async def test_private_loopback_and_link_local_targets_are_refused(server, http, url) -> None:
    app = await keyed_application(server, http)
    payload = (await app.admin(CREATE_WEBHOOK, input=create_input(app.id, url=url)))[
        "createWebhookEndpoint"
    ]
    assert payload["endpoint"] is None
    assert payload["errors"][0]["code"] == "VALIDATION"
    assert payload["errors"][0]["field"] == "url"
    with pytest.raises(UnsafeTarget):
        await check_target(url, allow_private=False)
    await check_target(url, allow_private=True)  # the operator's setting lets it through


async def test_a_target_is_checked_again_at_delivery(backend, tenant) -> None:
    """An endpoint whose host came to resolve to a private address (here: created while the
    setting allowed it) gets no delivery from a deliverer that does not allow it."""
    async with receiving(Receiver()) as receiver:
        made = await create_endpoint(
            tenant.application_id,
            receiver.endpoint_url("inside"),
            ["test"],
            allow_private=True,
        )
        receiver.secrets["inside"] = [made.secret]
        message_id = await enqueue_test(made)
        settings = backend.settings.model_copy(
            update={"webhook_poll_seconds": 0.05, "webhook_retry_first_seconds": 60}
        )
        deliverer = WebhookDeliverer(settings)
        await deliverer.start()
        try:
            for _ in range(100):
                message = await WebhookMessage.get(id=message_id)
                if message.attempts:
                    break
                await asyncio.sleep(0.05)
        finally:
            await deliverer.close()
        assert message.attempts == 1 and message.response_status is None
        assert "private" in (message.last_error or "")
        assert receiver.attempts == {} and receiver.unverified == []


async def test_a_name_is_checked_again_when_connecting(backend, tenant) -> None:
    """A host checked public before a run may resolve elsewhere when the connection is made
    (DNS rebinding): the client's resolver refuses it then too, unless the setting allows
    private targets. `localhost` stands for such a name: it is resolved, not a literal."""
    async with receiving(Receiver()) as receiver:
        made = await create_endpoint(
            tenant.application_id, receiver.endpoint_url("named"), ["test"], allow_private=True
        )
        receiver.secrets["named"] = [made.secret]
        port = receiver.url.rsplit(":", 1)[1]
        url = f"http://localhost:{port}/named"
        guarded = WebhookClient(4, allow_private=False)
        try:
            with pytest.raises(OSError) as refused:
                await guarded.post(url, {}, b"{}")
            assert refusal(refused.value) == PRIVATE_TARGET
        finally:
            await guarded.close()
        assert receiver.attempts == {}
        # the deliverer, told that its URL was checked for the run, still does not send it
        settings = backend.settings.model_copy(update={"webhooks_allow_private": False})
        deliverer = WebhookDeliverer(settings)
        lease = datetime.now(UTC)
        claimed = Claimed(
            0, made.id, tenant.application_id, "test", "{}", 0, url, [made.secret], lease
        )
        try:
            attempt = await deliverer.attempt(claimed, checked=True)
        finally:
            await deliverer.close()
        assert not attempt.delivered and attempt.status is None
        assert attempt.error == PRIVATE_TARGET and receiver.attempts == {}
        allowed = WebhookClient(4, allow_private=True)
        try:  # with the setting, the same name is posted to (unsigned: the receiver refuses)
            assert await allowed.post(url, {}, b"{}") == 401
        finally:
            await allowed.close()
        assert receiver.unverified == [("named", "")]


async def test_retention_deletes_old_settled_messages_only(backend, tenant) -> None:
    made = await create_endpoint(
        tenant.application_id, PUBLIC_URL, [WebhookEventType.PACK_PURCHASED]
    )
    ids = [await enqueue_test(made) for _ in range(4)]
    old = datetime.now(UTC) - timedelta(days=40)
    statuses = [DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.PENDING]
    for message_id, status in zip(ids, statuses, strict=False):
        await WebhookMessage.filter(id=message_id).update(status=status, created_at=old)
    await WebhookMessage.filter(id=ids[3]).update(status=DeliveryStatus.DELIVERED)
    await asyncio.gather(*(webhook_retention(backend.settings)() for _ in range(2)))
    left = (
        await WebhookMessage.filter(endpoint_id=made.id).order_by("id").values_list("id", flat=True)
    )
    assert left == [ids[2], ids[3]]  # the pending one, and the recent one
