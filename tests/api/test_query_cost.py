"""The query cost limit (docs/query-cost.md) over HTTP and WebSocket: an operation costing
more than the caller's budget is refused before it runs with QUERY_TOO_COSTLY, whatever
form its selection takes; every answer reports its cost in `extensions.cost`; every list
field taking `first` or a range, found in the schema, counts its items."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from gql import gql
from gql.transport.exceptions import TransportQueryError
from graphql import (
    DocumentNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    OperationDefinitionNode,
    get_named_type,
    parse,
    type_from_ast,
)

from bench.dashboard_query import DASHBOARD
from models.consumption import Granularity, bucket_range
from resolvers.cost_budgets import DEFAULT_MAX_QUERY_COST
from resolvers.pools import MAX_PAGE
from resolvers.query_cost import QUERY_TOO_COSTLY, operation_cost
from resolvers.request_rules import MAX_ALIASES
from resolvers.schema import schema
from tests.applications import App, application, consume_input
from tests.graphql_client import CONSUME, ISSUE, Caller
from tests.schema_operations import fields_with_argument, operations
from tests.subscribing import next_event, subscribed

T = TypeVar("T")
# "Refused in well under 50 ms": CPU seconds of this process (client and server: the server
# fixture runs in it); wall-clock time only loosely, the machine being shared.
FAST_CPU = 0.05
FAST_WALL = 0.5
NOW = datetime.now(UTC).replace(microsecond=0)
THIRTEEN_MONTHS_AGO = NOW - timedelta(days=395)
HOURS = bucket_range(THIRTEEN_MONTHS_AGO, NOW, Granularity.HOUR).count
END_USERS = 50

STALLING = f"""query Stall($id: ID!) {{ application(id: $id) {{ endUsers(first: 50) {{ edges {{
  node {{ consumption(from: "{THIRTEEN_MONTHS_AGO.isoformat()}", to: "{NOW.isoformat()}",
  granularity: HOUR) {{ buckets {{ start used }} }} }} }} }} }} }}"""


@dataclass
class Callers:
    app: App
    end_user: Caller  # an End User token of u0


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def callers(server, http: httpx.AsyncClient) -> Callers:
    """An application with 50 End Users holding credits, its keys and u0's End User token."""
    app = await application(server, http, users=END_USERS, credits_each=10)
    issued = await app.admin(
        ISSUE, input={"applicationId": app.id, "endUser": {"externalId": "u0"}}
    )
    token = issued["issueEndUserToken"]["token"]
    return Callers(app, Caller(http, server.graphql, token))


@pytest.fixture(scope="module")
def budgets(backend) -> tuple[int, int]:
    """The budgets the served app runs with: API keys', End User tokens'."""
    settings = backend.settings
    return settings.max_query_cost, settings.max_query_cost_end_user


async def _timed(call: Awaitable[T]) -> tuple[T, float, float]:
    """The call's result, and the CPU and wall seconds it took (earlier garbage collected
    first, so that a collection of the session's heap is not counted here)."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = await call
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _refused(response: httpx.Response, limit: int) -> int:
    """The cost of an operation refused as too costly (checked as such)."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == QUERY_TOO_COSTLY, error
    requested = body["extensions"]["cost"]["requested"]
    assert body["extensions"]["cost"] == {"requested": requested, "limit": limit}
    assert requested > limit
    assert str(requested) in error["message"] and str(limit) in error["message"]
    assert (error["extensions"]["cost"], error["extensions"]["limit"]) == (requested, limit)
    return requested


def _served(response: httpx.Response, limit: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert body["extensions"]["cost"]["limit"] == limit
    assert 0 < body["extensions"]["cost"]["requested"] <= limit
    return body


async def test_the_stalling_query_is_refused_fast_for_api_keys(server, http, callers, budgets):
    """50 End Users' hourly series over 13 months (~475,000 buckets): refused before any
    work, for an application key and an organization key."""
    api_key_budget, _ = budgets
    org = Caller(http, server.graphql, server.organization_key)
    for caller in (callers.app.admin, callers.app.reader, org):
        response, cpu, wall = await _timed(caller.raw(STALLING, {"id": callers.app.id}))
        requested = _refused(response, api_key_budget)
        assert requested >= END_USERS * HOURS
        assert cpu < FAST_CPU and wall < FAST_WALL, (cpu, wall)


async def test_the_refusal_is_a_request_error_under_graphql_response_json(
    server, http, callers, budgets
) -> None:
    """Nothing ran: 400 without `data` when the client prefers that media type."""
    api_key_budget, _ = budgets
    response = await http.post(
        server.graphql,
        json={"query": STALLING, "variables": {"id": callers.app.id}},
        headers={
            "Authorization": f"Bearer {callers.app.reader.key}",
            "Accept": "application/graphql-response+json",
        },
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == QUERY_TOO_COSTLY
    assert body["extensions"]["cost"]["limit"] == api_key_budget


async def test_the_same_query_over_a_week_of_days_is_served(callers, budgets) -> None:
    api_key_budget, _ = budgets
    query = STALLING.replace("HOUR", "DAY").replace(
        THIRTEEN_MONTHS_AGO.isoformat(), (NOW - timedelta(days=7)).isoformat()
    )
    body = _served(await callers.app.reader.raw(query, {"id": callers.app.id}), api_key_budget)
    edges = body["data"]["application"]["endUsers"]["edges"]
    assert len(edges) == END_USERS
    assert {len(e["node"]["consumption"]["buckets"]) for e in edges} == {8}


def _aliased_series(count: int, granularity: str, since: datetime) -> str:
    series = " ".join(
        f'a{i}: consumption(from: "{since.isoformat()}", to: "{NOW.isoformat()}",'
        f" granularity: {granularity}) {{ buckets {{ start used }} }}"
        for i in range(count)
    )
    return f"{{ viewer {{ endUser {{ {series} }} }} }}"


async def test_an_end_user_token_cannot_ask_30_hourly_series(callers, budgets) -> None:
    """The End User budget is lower: 30 aliased hourly series of its own consumption are
    refused fast; one month of days is served."""
    _, end_user_budget = budgets
    query = _aliased_series(MAX_ALIASES, "HOUR", THIRTEEN_MONTHS_AGO)
    response, cpu, wall = await _timed(callers.end_user.raw(query))
    assert _refused(response, end_user_budget) >= MAX_ALIASES * HOURS
    assert cpu < FAST_CPU and wall < FAST_WALL, (cpu, wall)
    month = _aliased_series(1, "DAY", NOW - timedelta(days=30))
    body = _served(await callers.end_user.raw(month), end_user_budget)
    assert len(body["data"]["viewer"]["endUser"]["a0"]["buckets"]) == 31


SERIES = "consumption(from: $from, to: $to, granularity: HOUR) { buckets { start used } }"
PLAIN = f"""query($id: ID!, $from: DateTime!, $to: DateTime!) {{ application(id: $id) {{
  endUsers(first: 50) {{ edges {{ node {{ {SERIES} }} }} }} }} }}"""
# The plain form's selection written every other way a client can: each costs the same.
FORMS = {
    "fragment": """query($id: ID!, $from: DateTime!, $to: DateTime!) { application(id: $id) {
      ...Users } }
      fragment Users on Application { endUsers(first: 50) { edges { node { ...Series } } } }
      fragment Series on EndUser { SERIES }""",
    "inline fragment": """query($id: ID!, $from: DateTime!, $to: DateTime!) {
      application(id: $id) { ... on Application { endUsers(first: 50) { edges {
      ... { node { ... on EndUser { SERIES } } } } } } } }""",
    "alias": """query($id: ID!, $from: DateTime!, $to: DateTime!) { app: application(id: $id) {
      people: endUsers(first: 50) { list: edges { one: node { s: SERIES } } } } }""",
    "first in a variable": """query($id: ID!, $from: DateTime!, $to: DateTime!, $n: Int!) {
      application(id: $id) { endUsers(first: $n) { edges { node { SERIES } } } } }""",
    "first from a variable's default": """query($id: ID!, $from: DateTime!, $to: DateTime!,
      $n: Int = 50) { application(id: $id) { endUsers(first: $n) { edges { node { SERIES
      } } } } }""",
    "first absent (its default, 50)": """query($id: ID!, $from: DateTime!, $to: DateTime!) {
      application(id: $id) { endUsers { edges { node { SERIES } } } } }""",
    "@include(if: true)": """query($id: ID!, $from: DateTime!, $to: DateTime!, $yes: Boolean!) {
      application(id: $id) { endUsers(first: 50) { edges { node {
      consumption(from: $from, to: $to, granularity: HOUR) @include(if: $yes) {
      buckets { start used } } } } } } }""",
    "@skip(if: false)": """query($id: ID!, $from: DateTime!, $to: DateTime!) {
      application(id: $id) { endUsers(first: 50) @skip(if: false) { edges { node {
      SERIES } } } } }""",
    "a fragment spread twice": """query($id: ID!, $from: DateTime!, $to: DateTime!) {
      application(id: $id) { endUsers(first: 50) { edges { node { ...S ...S } } } } }
      fragment S on EndUser { SERIES }""",
}


@pytest.mark.parametrize("form", list(FORMS))
async def test_no_form_of_a_selection_escapes_its_cost(callers, budgets, form: str) -> None:
    api_key_budget, _ = budgets
    variables = {
        "id": callers.app.id,
        "from": THIRTEEN_MONTHS_AGO.isoformat(),
        "to": NOW.isoformat(),
    }
    plain = _refused(await callers.app.reader.raw(PLAIN, variables), api_key_budget)
    document = FORMS[form].replace("s: SERIES", f"s: {SERIES}").replace("SERIES", SERIES)
    extra = {"n": 50} if "$n: Int!" in document else {"yes": True} if "$yes" in document else {}
    response = await callers.app.reader.raw(document, {**variables, **extra})
    assert _refused(response, api_key_budget) == plain


async def test_a_skipped_or_excluded_selection_costs_nothing(callers, budgets) -> None:
    api_key_budget, _ = budgets
    variables = {
        "id": callers.app.id,
        "from": THIRTEEN_MONTHS_AGO.isoformat(),
        "to": NOW.isoformat(),
        "yes": False,
    }
    document = FORMS["@include(if: true)"]
    body = _served(await callers.app.reader.raw(document, variables), api_key_budget)
    assert len(body["data"]["application"]["endUsers"]["edges"]) == END_USERS
    assert body["extensions"]["cost"]["requested"] < 1_000
    skipped = document.replace("@include(if: $yes)", "@skip(if: true)")
    skipped = skipped.replace(", $yes: Boolean!", "")
    body = _served(await callers.app.reader.raw(skipped, variables), api_key_budget)
    assert body["extensions"]["cost"]["requested"] < 1_000


# ----------------------------------------------------------- every sized list of the schema


def _holds_list(field: Any) -> bool:
    named = get_named_type(field.type)
    return isinstance(named, GraphQLObjectType) and any(
        "[" in str(f.type) for f in named.fields.values()
    )


def _sized_fields() -> list[tuple[list[tuple[str, str]], str]]:
    """Every field taking `first` (a list or a connection), and every field taking a range
    (`from` and `to`) whose value holds a list (a series), with a path to it."""
    paged = [(path, "first") for path, _ in fields_with_argument("first")]
    ranged = [
        (path, "range")
        for path, field in fields_with_argument("from")
        if "to" in field.args and _holds_list(field)
    ]
    assert paged and ranged, "no sized list field found: the schema changed, so must this test"
    return paged + ranged


def _sizing(kind: str, large: bool) -> tuple[dict[str, Any], int]:
    """The arguments asking for the most (or the fewest) items, and how many that is."""
    if kind == "first":
        return {"first": MAX_PAGE if large else 1}, MAX_PAGE if large else 1
    since = THIRTEEN_MONTHS_AGO if large else NOW - timedelta(hours=1)
    count = bucket_range(since, NOW, Granularity.HOUR).count
    return {"from": since.isoformat(), "to": NOW.isoformat(), "granularity": "HOUR"}, count


def _aliased(document: str, count: int) -> str:
    """The operation's root selection `count` times, aliased."""
    head, body = document.split("{", 1)
    body = body.rsplit("}", 1)[0].strip()
    return head + "{ " + " ".join(f"a{i}: {body}" for i in range(count)) + " }"


_SIZED = _sized_fields()
ADMIN_ONLY = {("Organization", "apiKeys"), ("Application", "apiKeys")}


@pytest.mark.parametrize(("path", "kind"), _SIZED, ids=[".".join(path[-1]) for path, _ in _SIZED])
async def test_every_sized_list_counts_its_items(callers, budgets, path, kind) -> None:
    """From the schema: each field's items are counted (its largest page or range costs at
    least one per item more than its smallest), and 30 copies of its largest are refused
    when they pass the budget, served (and reported) otherwise."""
    api_key_budget, _ = budgets
    objects = {
        "application": callers.app.id,
        "pool": "ai",
        "external_id": "u0",
        "end_user": callers.app.end_user_ids[0],
        "key_prefix": (callers.app.reader.key or "").split("_")[1],
    }
    # listing API keys needs an ADMIN key (docs/api-keys.md): a READ key is refused
    caller = callers.app.admin if tuple(path[-1]) in ADMIN_ONLY else callers.app.reader
    costs = {}
    for large in (False, True):
        overrides, count = _sizing(kind, large)
        operation = next(operations("query", path, objects, overrides))
        response = await caller.raw(operation.document, operation.variables)
        assert response.status_code == 200, response.text
        costs[large] = (response.json()["extensions"]["cost"]["requested"], count)
    (small, few), (large, many) = costs[False], costs[True]
    assert large - small >= many - few, costs
    aliased = _aliased(operation.document, MAX_ALIASES)
    response = await caller.raw(aliased, operation.variables)
    requested = response.json()["extensions"]["cost"]["requested"]
    assert requested >= MAX_ALIASES * many
    if requested > api_key_budget:
        _refused(response, api_key_budget)
    else:
        _served(response, api_key_budget)


# -------------------------------------------------------------------- every answer's cost


async def test_every_answer_reports_its_cost(server, http, callers, budgets) -> None:
    """Queries, mutations (the JSON fast path), GET (Strawberry's view), refusals and
    errors all carry `extensions.cost`; a document that did not validate costs 0."""
    api_key_budget, _ = budgets
    app = callers.app
    consumed = await app.admin.raw(CONSUME, {"input": consume_input(app, {"externalId": "u1"})})
    body = _served(consumed, api_key_budget)
    assert body["data"]["consumeCredits"]["errors"] == []
    got = await http.get(
        server.graphql,
        params={
            "query": "query($id: ID!) { application(id: $id) { name } }",
            "variables": f'{{"id": "{app.id}"}}',
        },
        headers={"Authorization": f"Bearer {app.reader.key}"},
    )
    assert _served(got, api_key_budget)["extensions"]["cost"]["requested"] == 1
    for broken in ("{ viewer { nope } }", "{ viewer {"):
        response = await app.reader.raw(broken)
        assert response.json()["extensions"]["cost"] == {"requested": 0, "limit": api_key_budget}
    now = datetime.now(UTC)
    dashboard = await app.reader.raw(
        DASHBOARD,
        {"id": app.id, "from": (now - timedelta(days=90)).isoformat(), "to": now.isoformat()},
    )
    assert _served(dashboard, api_key_budget)["extensions"]["cost"]["requested"] * 4 < (
        api_key_budget
    )


COSTLY_SUBSCRIPTION = f"""subscription($app: ID!) {{ balanceChanged(applicationId: $app) {{
  endUser {{ consumption(from: "{THIRTEEN_MONTHS_AGO.isoformat()}", to: "{NOW.isoformat()}",
  granularity: HOUR) {{ buckets {{ start used }} }} }} }} }}"""


async def test_a_costly_subscription_is_refused(server, callers) -> None:
    """A subscription's selection is rendered for every event: one over the budget is
    refused before it starts."""
    async with subscribed(
        server.graphql,
        callers.end_user.key or "",
        document=gql(COSTLY_SUBSCRIPTION),
        app=callers.app.id,
    ) as events:
        with pytest.raises(TransportQueryError) as refused:
            await next_event(events)
    assert refused.value.errors is not None
    assert refused.value.errors[0]["extensions"]["code"] == QUERY_TOO_COSTLY


# ------------------------------------------------- the examples of the README and docs/

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_LIST_INPUT = 1_000


def _example_value(name: str, type_: Any) -> Any:
    """A value of `type_` for a variable or input field called `name`: lists at their
    largest (1,000 items), ranges of 30 days."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return [_example_value(name, type_.of_type)] * MAX_LIST_INPUT
    if isinstance(type_, GraphQLInputObjectType):
        return {
            field_name: _example_value(field_name, field.type)
            for field_name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull)
        }
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if type_.name == "DateTime":
        since = name in ("from", "start")
        return (NOW - timedelta(days=30) if since else NOW).isoformat()
    return {"Int": 1, "Float": 1.0, "Boolean": True}.get(type_.name, "1")


def _documented_operations() -> list[tuple[DocumentNode, str]]:
    blocks = [
        block
        for page in EXAMPLE_PAGES
        for block in re.findall(r"```graphql\n(.*?)```", page.read_text(), re.S)
    ]
    found = []
    for block in blocks:
        document = parse(block)
        found += [
            (document, definition.name.value)
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode) and definition.name is not None
        ]
    assert found, "the documentation shows no named GraphQL operation"
    return found


def test_the_documented_examples_stay_well_inside_the_budgets() -> None:
    """Each operation shown in the README and docs/, with lists at their largest and 30-day
    ranges, costs less than a quarter of the API key budget (and something: its variables
    were valid)."""
    graphql_schema = schema._schema
    for document, name in _documented_operations():
        [operation] = [
            d
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode) and d.name and d.name.value == name
        ]
        variables = {
            d.variable.name.value: _example_value(
                d.variable.name.value, type_from_ast(graphql_schema, d.type)
            )
            for d in operation.variable_definitions or ()
        }
        cost = operation_cost(graphql_schema, document, name, variables)
        assert 0 < cost * 4 < DEFAULT_MAX_QUERY_COST, (name, cost)


async def test_the_budgets_are_settings(backend, server) -> None:
    """USAGEGRAPH_MAX_QUERY_COST and USAGEGRAPH_MAX_QUERY_COST_END_USER set the budgets."""
    from api.app import create_app

    settings = backend.settings.model_copy(
        update={"max_query_cost": 9, "max_query_cost_end_user": 3}
    )
    app = create_app(settings, migrate=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        org = Caller(client, "http://test/graphql", server.organization_key)
        assert (await org.raw("{ viewer { role } }")).json()["extensions"]["cost"] == {
            "requested": 1,
            "limit": 9,
        }
        _refused(await org.raw("{ applications { name } }"), 9)  # 10 assumed applications
        anonymous = Caller(client, "http://test/graphql", None)
        _refused(
            await anonymous.raw(
                "{ a: viewer { role } b: viewer { role } c: viewer { role } d: viewer { role } }"
            ),
            3,
        )
