"""API keys are listable (`Organization.apiKeys`, `Application.apiKeys`) over HTTP: never
their secrets, who may list which, revocation shown, and the last use kept cheaply (noted
in memory, written by the flush)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from models.accounts import create_organization
from models.api_key_use import flush_key_use, note_key_use
from models.clock import booked_at
from models.end_user_tokens import sign_token
from tests.graphql_client import CREATE_API_KEY, CREATE_APPLICATION, REVOKE_API_KEY, Caller

FIELDS = "id keyId name role applicationId createdAt lastUsedAt revokedAt"
ORGANIZATION_KEYS = f"{{ viewer {{ organization {{ apiKeys {{ {FIELDS} }} }} }} }}"
APPLICATION_KEYS = f"query($id: ID!) {{ application(id: $id) {{ apiKeys {{ {FIELDS} }} }} }}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@dataclass
class Keys:
    organization: Caller
    application_id: str
    secrets: dict[str, str]  # name -> whole key
    ids: dict[str, str]  # name -> ApiKey.id

    def caller(self, name: str) -> Caller:
        org = self.organization
        return Caller(org.client, org.url, self.secrets[name])


async def _keys(server, http: httpx.AsyncClient, organization_key: str = "") -> Keys:
    """A new application (of the tests' organization unless another's key is given), its
    ADMIN and READ keys, and an organization READ key."""
    org = Caller(http, server.graphql, organization_key or server.organization_key)
    created = await org(CREATE_APPLICATION, input={"name": f"app-{uuid.uuid4().hex[:6]}"})
    app_id = created["createApplication"]["application"]["id"]
    secrets, ids = {}, {}
    for name, role, application in (
        ("app admin", "ADMIN", app_id),
        ("app read", "READ", app_id),
        ("org read", "READ", None),
    ):
        made = await org(
            CREATE_API_KEY, input={"applicationId": application, "name": name, "role": role}
        )
        assert made["createApiKey"]["errors"] == []
        secrets[name] = made["createApiKey"]["secret"]
        ids[name] = made["createApiKey"]["apiKey"]["id"]
    return Keys(org, app_id, secrets, ids)


def _error_code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


async def test_keys_are_listed_without_their_secrets(server, http) -> None:
    keys = await _keys(server, http)
    response = await keys.organization.raw(ORGANIZATION_KEYS)
    listed = response.json()["data"]["viewer"]["organization"]["apiKeys"]
    by_id = {key["id"]: key for key in listed}
    assert set(keys.ids.values()) <= set(by_id)
    ids = [int(key["id"]) for key in listed]
    assert ids == sorted(ids, reverse=True), "newest first"
    app_admin = by_id[keys.ids["app admin"]]
    assert app_admin["name"] == "app admin" and app_admin["role"] == "ADMIN"
    assert app_admin["applicationId"] == keys.application_id
    assert app_admin["keyId"] == keys.secrets["app admin"].split("_")[1]
    assert by_id[keys.ids["org read"]]["applicationId"] is None
    for secret in keys.secrets.values():
        assert secret.split("_", 2)[2] not in response.text
    own = {keys.ids["app admin"], keys.ids["app read"]}
    for caller in (keys.organization, keys.caller("app admin")):
        mine = await caller(APPLICATION_KEYS, id=keys.application_id)
        assert {key["id"] for key in mine["application"]["apiKeys"]} == own
    # an application key sees its application's keys, whichever way it asks
    seen = await keys.caller("app admin")(ORGANIZATION_KEYS)
    assert {key["id"] for key in seen["viewer"]["organization"]["apiKeys"]} == own


async def test_only_admin_keys_list_keys(server, http, backend) -> None:
    keys = await _keys(server, http)
    refusals = [
        (keys.caller("app read"), APPLICATION_KEYS, "FORBIDDEN"),
        (keys.caller("org read"), APPLICATION_KEYS, "FORBIDDEN"),
        (keys.caller("org read"), ORGANIZATION_KEYS, "FORBIDDEN"),
    ]
    upserted = await keys.caller("app admin")(
        "mutation($input: UpsertEndUsersInput!) { upsertEndUsers(input: $input) {"
        " endUsers { id } } }",
        input={"applicationId": keys.application_id, "endUsers": [{"externalId": "u1"}]},
    )
    end_user_id = int(upserted["upsertEndUsers"]["endUsers"][0]["id"])
    token = sign_token(backend.settings.secret, int(keys.application_id), end_user_id, 600)
    widget = Caller(http, server.graphql, token.token)
    refusals.append((widget, APPLICATION_KEYS, "NOT_FOUND"))
    refusals.append((widget, ORGANIZATION_KEYS, "NOT_FOUND"))
    for caller, query, code in refusals:
        body = (await caller.raw(query, {"id": keys.application_id})).json()
        assert _error_code(body) == code, (caller.key, query, body)
        assert body.get("data") in (None, {"application": None}, {"viewer": None})
    _, issued = await create_organization(f"other {uuid.uuid4().hex[:6]}")
    other = await _keys(server, http, issued.secret)  # another organization's application
    body = (await keys.organization.raw(APPLICATION_KEYS, {"id": other.application_id})).json()
    assert body["data"] == {"application": None} or _error_code(body) == "NOT_FOUND"
    mine = await keys.organization(ORGANIZATION_KEYS)
    listed = {key["id"] for key in mine["viewer"]["organization"]["apiKeys"]}
    assert set(keys.ids.values()) <= listed and not set(other.ids.values()) & listed
    bad = (
        await keys.organization.raw("{ viewer { organization { apiKeys(first: 0) { id } } } }")
    ).json()
    assert _error_code(bad) == "VALIDATION"


async def _listed(keys: Keys, name: str) -> dict:
    listed = await keys.organization(APPLICATION_KEYS, id=keys.application_id)
    [key] = [k for k in listed["application"]["apiKeys"] if k["id"] == keys.ids[name]]
    return key


async def test_last_use_is_written_by_the_flush_not_by_the_request(server, http) -> None:
    keys = await _keys(server, http)
    await flush_key_use()
    assert (await _listed(keys, "app read"))["lastUsedAt"] is None  # never used yet
    before = datetime.now(UTC)
    await keys.caller("app read")("{ viewer { role } }")
    assert (await _listed(keys, "app read"))["lastUsedAt"] is None  # not one write per request
    assert await flush_key_use() >= 1
    used = datetime.fromisoformat((await _listed(keys, "app read"))["lastUsedAt"])
    assert before <= used <= datetime.now(UTC)
    # a use noted earlier than the stored one (another process flushing late) is no step back
    with booked_at(before - timedelta(hours=1)):
        note_key_use(int(keys.ids["app read"]))
    await flush_key_use()
    assert datetime.fromisoformat((await _listed(keys, "app read"))["lastUsedAt"]) == used


async def test_revoked_keys_are_listed_as_revoked(server, http) -> None:
    keys = await _keys(server, http)
    revoked = await keys.organization(REVOKE_API_KEY, id=keys.ids["app read"])
    assert revoked["revokeApiKey"]["errors"] == []
    listed = await _listed(keys, "app read")
    assert listed["revokedAt"] is not None
    response = await keys.caller("app read").raw("{ viewer { role } }")
    assert response.status_code == 401
    assert (await _listed(keys, "app admin"))["revokedAt"] is None
