"""Preserialized reads (resolvers/preserialized.py) answer exactly what the general path
answers: 150 generated selections on each backend (each draws its own) over an application
(its pools, End Users with their balances, series, request log, billing periods, and the
allocation summary with its rankings; aliases, fragments, inline fragments, repeated fields,
directives, arguments, `__typename`) run as an HTTP request's answer is made (preserialized
values spliced by the encoder) and through the general path, and through a stock Strawberry
schema; the decoded answers must be equal."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import strawberry

from api.http_answer import encode_json
from models.access import Principal
from models.accounts import create_application, create_organization
from models.alerts import set_low_balance_threshold
from models.allocation_report import BURN_MARKS, window_days
from models.clock import booked_at
from models.credits import EndUser
from models.end_users import EndUserInput, upsert_end_users
from models.expiry import expire_lots
from models.ledger import allocate_credits, consume_credits, purchase_credits
from models.references import EndUserRef
from models.request_log import LogRow, insert_entries
from models.rollups import fold_usage, rebuild_rollups, window_start
from models.sql import Sql, single_statement
from models.tenancy import ApiKeyRole
from resolvers import (
    allocation_summary,
    consumption,
    end_user_json,
    end_users,
    pool_json,
    request_log,
    request_log_json,
)
from resolvers.context import Context
from resolvers.preserialized import NotPlain
from resolvers.runtime.versions import fast_paths_enabled
from resolvers.schema import Mutation, Query, Subscription, schema
from resolvers.selection import PerField
from tests.conftest import Backend

# Each backend draws its own selections (300 distinct in all); 150 take every writer at
# least 16 times on each, past what the test asks (5 or 10).
SELECTIONS = 150
SEEDS = {"sqlite": 20261203, "postgres": 20261204}

BALANCE_FIELDS = [
    "pool",
    "allocated",
    "used",
    "remaining",
    "expired",
    "status",
    "version",
    "lowBalanceThreshold",
    "burnRatePerDay",
    "projectedExhaustionAt",
    "__typename",
]
END_USER_FIELDS = ["id", "externalId", "name", "email", "createdAt", "__typename"]
POOL_FIELDS = [
    "key",
    "name",
    "purchased",
    "allocated",
    "used",
    "remaining",
    "expired",
    "unallocated",
    "status",
    "lowBalanceThreshold",
    "version",
    "__typename",
]
SUMMARY_FIELDS = [
    "pool",
    "endUsersTotal",
    "withAllocation",
    "withCredits",
    "low",
    "exhausted",
    "allocated",
    "used",
    "remaining",
    "unallocated",
    "burnRatePerDay",
    "projectedShortfall",
    "needsAllocation",
    "__typename",
]
PACK_FIELDS = [
    "id",
    "credits",
    "unallocated",
    "used",
    "expired",
    "remaining",
    "purchasedAt",
    "expiresAt",
    "package",
    "reference",
    "__typename",
]
SERIES_FIELDS = ["granularity", "totalUsed", "totalExpired", "__typename"]
BUCKET_FIELDS = ["start", "used", "expired", "purchased", "remaining", "spike", "__typename"]
LOG_FIELDS = [
    "id",
    "time",
    "method",
    "endpoint",
    "operationName",
    "endUserExternalId",
    "apiKeyPrefix",
    "status",
    "outcome",
    "errorCode",
    "errorMessage",
    "latencyMs",
    "requestId",
    "source",
    "__typename",
]


class Writer:
    """One random document: fields, aliases, fragments (collected to define at the end)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fragments: list[str] = []

    def pick(self, fields: list[str], least: int = 1) -> list[str]:
        chosen = self.rng.sample(fields, self.rng.randint(least, len(fields)))
        if chosen and self.rng.random() < 0.2:
            chosen.append(self.rng.choice(chosen))  # the same field twice
        return [self.alias(name) for name in chosen]

    def alias(self, name: str) -> str:
        if name != "__typename" and self.rng.random() < 0.15:
            return f"{name}_{self.rng.randint(0, 2)}: {name}"
        return name

    def wrap(self, type_name: str, body: str) -> str:
        """The body as it is, in an inline fragment, a named fragment or under a directive."""
        roll = self.rng.random()
        if roll < 0.15:
            return f"... on {type_name} {{ {body} }}"
        if roll < 0.3:
            name = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {name} on {type_name} {{ {body} }}")
            return f"...{name}"
        if roll < 0.35:
            return f"... @include(if: true) {{ {body} }}"
        if roll < 0.38:
            return f"... {{ {body} }}"
        return body

    def balances(self) -> str:
        fields = self.pick(BALANCE_FIELDS)
        if self.rng.random() < 0.1:
            fields.append("endUser { externalId }")
        return f"balances {{ {self.wrap('EndUserBalance', ' '.join(fields))} }}"

    def pool_balance(self) -> str:
        """`balance(pool:)`: a literal pool, one given by a variable, or none by that key."""
        pool = self.rng.choice(['"ai"', '"inbox_preview"', '"nowhere"', "$pool", "$pool"])
        fields = " ".join(self.pick(BALANCE_FIELDS))
        return f"{self.alias('balance')}(pool: {pool}) {{ {self.wrap('EndUserBalance', fields)} }}"

    def ranked(self) -> str:
        fields = self.pick(BALANCE_FIELDS)
        if self.rng.random() < 0.6:
            owner = self.wrap("EndUser", " ".join(self.pick(END_USER_FIELDS)))
            fields.append(f"endUser {{ {owner} }}")
        if self.rng.random() < 0.08:
            fields.append("endUser { balances { pool remaining } }")  # left to the general path
        return self.wrap("EndUserBalance", " ".join(fields))

    def allocation_summary(self) -> str:
        parts = self.pick(SUMMARY_FIELDS, least=0)
        for name in ("topConsumers", "closeToRunningOut"):
            if self.rng.random() < 0.7:
                first = self.rng.choice([0, 1, 3, 10])
                parts.append(f"{self.alias(name)}(first: {first}) {{ {self.ranked()} }}")
        body = self.wrap("AllocationSummary", " ".join(parts or ["endUsersTotal"]))
        return f'allocationSummary(pool: "ai") {{ {body} }}'

    def series(self) -> str:
        parts = self.pick(SERIES_FIELDS, least=0)
        if self.rng.random() < 0.8 or not parts:
            bucket = self.wrap("ConsumptionBucket", " ".join(self.pick(BUCKET_FIELDS)))
            parts.append(f"buckets {{ {bucket} }}")
        granularity = self.rng.choice(["DAY", "WEEK", "MONTH"])
        body = self.wrap("ConsumptionSeries", " ".join(parts))
        span = "from: $from, to: $to"
        roll = self.rng.random()
        if roll < 0.1:  # moments as literals
            span = 'from: "2026-01-01T00:00:00Z", to: "2026-01-03T12:00:00Z", feature: "x"'
        elif roll < 0.3:
            span += ", feature: " + self.rng.choice(['"ai_generation"', '"x"', "null"])
        return f"consumption({span}, granularity: {granularity}) {{ {body} }}"

    def end_user(self) -> str:
        fields = self.pick(END_USER_FIELDS, least=0)
        if self.rng.random() < 0.75 or not fields:
            fields.append(self.balances())
        if self.rng.random() < 0.2:
            fields.append(self.balances())  # merged with the first
        if self.rng.random() < 0.25:
            fields.append(self.pool_balance())
        if self.rng.random() < 0.06:
            fields.append(self.series())
        return self.wrap("EndUser", " ".join(fields))

    def connection(self) -> str:
        parts: list[str] = []
        if self.rng.random() < 0.6:
            parts.append(self.alias("totalCount"))
        if self.rng.random() < 0.5:
            parts.append(f"pageInfo {{ {' '.join(self.pick(['hasNextPage', 'endCursor']))} }}")
        edge = []
        if self.rng.random() < 0.4:
            edge.append("cursor")
        if self.rng.random() < 0.1:
            edge.append("__typename")
        edge.append(f"node {{ {self.end_user()} }}")
        parts.append(f"edges {{ {' '.join(edge)} }}")
        if self.rng.random() < 0.1:
            parts.append("__typename")
        return self.wrap("EndUserConnection", " ".join(parts))

    def end_users_arguments(self) -> str:
        arguments = [f"first: {self.rng.choice([0, 1, 3, 7, 15])}"]
        roll = self.rng.random()
        if roll < 0.15:
            arguments.append('filter: { pool: "ai", status: [LOW, OK, EXHAUSTED] }')
        elif roll < 0.3:
            field = self.rng.choice(["USED", "REMAINING", "PROJECTED_EXHAUSTION"])
            direction = self.rng.choice(["ASC", "DESC"])
            arguments.append(f'orderBy: {{ field: {field}, direction: {direction}, pool: "ai" }}')
        return ", ".join(arguments)

    def request_log(self) -> str:
        node = self.pick(LOG_FIELDS)
        if self.rng.random() < 0.1:
            node.append("endUser { externalId }")
        edge = [f"node {{ {self.wrap('RequestLogEntry', ' '.join(node))} }}"]
        if self.rng.random() < 0.4:
            edge.append("cursor")
        parts = [f"edges {{ {' '.join(edge)} }}"]
        if self.rng.random() < 0.4:
            parts.append(f"pageInfo {{ {' '.join(self.pick(['hasNextPage', 'endCursor']))} }}")
        first = self.rng.choice([0, 1, 4, 20])
        return (
            f"requestLog(first: {first}) {{ {self.wrap('RequestLogConnection', ' '.join(parts))} }}"
        )

    def application(self) -> str:
        parts = self.pick(["id", "name", "plan", "__typename"], least=0)
        if self.rng.random() < 0.4:
            pool = self.pick(POOL_FIELDS)
            if self.rng.random() < 0.4:
                pool.append(self.series())
            if self.rng.random() < 0.3:
                first = self.rng.choice(["", "(first: 0)", "(first: 1)", "(first: 3)"])
                packs = self.wrap("CreditPack", " ".join(self.pick(PACK_FIELDS)))
                pool.append(f"{self.alias('packs')}{first} {{ {packs} }}")
            parts.append(f"pools {{ {self.wrap('CreditPool', ' '.join(pool))} }}")
        for i in range(self.rng.choice([1, 1, 1, 2])):
            alias = f"list{i}: " if i or self.rng.random() < 0.2 else ""
            parts.append(f"{alias}endUsers({self.end_users_arguments()}) {{ {self.connection()} }}")
        if self.rng.random() < 0.5:
            parts.append(self.request_log())
        if self.rng.random() < 0.25:
            parts.append(self.series())
        if self.rng.random() < 0.15:
            parts.append("billingPeriods(first: 2) { start end status endUserUsage }")
        if self.rng.random() < 0.3:
            parts.append(self.allocation_summary())
        return self.wrap("Application", " ".join(parts))

    def document(self) -> str:
        body = self.application()
        fragments = "\n".join(self.fragments)
        span = ", $from: DateTime!, $to: DateTime!" if "$from" in body + fragments else ""
        if "$pool" in body + fragments:
            span += ", $pool: String!"
        return f"query($id: ID!{span}) {{ application(id: $id) {{ {body} }} }}\n{fragments}"


async def _application() -> int:
    organization, _ = await create_organization(f"org {uuid.uuid4().hex[:6]}")
    app = (await create_application(organization.id, "preserialized")).id
    await purchase_credits(app, "ai", 100_000)
    await purchase_credits(app, "inbox_preview", 10_000)
    later = datetime.now(UTC) + timedelta(days=30)
    await purchase_credits(app, "ai", 500, expires_at=later, package="starter", reference="inv 1")
    with booked_at(datetime.now(UTC) - timedelta(days=2)):  # a pack that expired yesterday
        await purchase_credits(app, "ai", 70, expires_at=datetime.now(UTC) - timedelta(days=1))
    await rebuild_rollups()  # booked behind a fold that passed it (another test's)
    assert (await expire_lots()).lots == 1
    rows = await upsert_end_users(
        app,
        [EndUserInput(f"u{i}", f"User {i}" if i % 3 else None, None) for i in range(12)],
    )
    for i, row in enumerate(rows[:10]):  # two End Users hold nothing
        await allocate_credits(app, "ai", EndUserRef(id=row.id), 100 + 40 * i)
        if i % 2:
            await allocate_credits(app, "inbox_preview", EndUserRef(id=row.id), 50)
    for i, row in enumerate(rows[:8]):
        await consume_credits(app, "ai", EndUserRef(id=row.id), 90 + 3 * i, "ai_generation")
    # one End User runs out and two run low: the summary's counts differ
    await consume_credits(app, "ai", EndUserRef(id=rows[9].id), 100 + 40 * 9, "ai_generation")
    await set_low_balance_threshold(app, "ai", 20, end_user=EndUserRef(id=rows[0].id))
    await set_low_balance_threshold(app, "ai", 50, end_user=EndUserRef(id=rows[1].id))
    now = datetime.now(UTC)
    await insert_entries(
        [
            LogRow(
                app,
                organization.id,
                now - timedelta(minutes=i, microseconds=0 if i % 4 else 123_456),
                "POST",
                "POST /graphql consumeCredits",
                "Consume" if i % 2 else None,
                rows[i % 3].id if i % 3 else None,
                rows[i % 3].external_id if i % 3 else None,
                "ug_abc" if i % 5 else None,
                (200, 400, 401, 500)[i % 4],
                "OK" if i % 4 == 0 else "CLIENT_ERROR",
                None if i % 4 == 0 else "VALIDATION",
                None if i % 4 == 0 else f'bad "input" ü {i}',
                (1.0, 2.5, 12, 0.125)[i % 4],
                f"req-{i}",
                "api" if i % 6 else "ingest",
            )
            for i in range(15)
        ],
        returning=False,
    )
    await fold_usage()
    return app


def _answer(result: Any) -> Any:
    """The answer as a client decodes it: data through the HTTP encoder, and the errors."""
    errors = sorted((error.message, str(error.path)) for error in result.errors or ())
    return orjson.loads(encode_json(result.data)), errors


async def test_generated_selections_answer_the_same_preserialized_or_not(
    backend: Backend, frozen_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = frozen_now
    spliced: Counter[str] = Counter()
    writers = (
        (end_users, "_preserialized"),
        (request_log, "connection_json"),
        (consumption, "series_json"),
        (allocation_summary, "summary_json"),
        (pool_json, "encode"),
    )
    for module, name in writers:
        writer = getattr(module, name)

        def counted(*args: Any, _writer: Any = writer, _name: str = name) -> Any:
            spliced[_name] += 1
            return _writer(*args)

        monkeypatch.setattr(module, name, counted)
    read_page = request_log.entry_page

    async def entry_page(*args: Any) -> Any:
        entries = await read_page(*args)
        if entries and "j" in entries[0]:
            spliced["entries written by the database"] += 1
        return entries

    monkeypatch.setattr(request_log, "entry_page", entry_page)
    read_end_users = end_users.report_page

    async def report_page(*args: Any) -> Any:
        page = await read_end_users(*args)
        if page.node_texts is not None and page.keys:
            spliced["End User nodes written by the database"] += 1
            if any(name in current_document for name in BURN_MARKS):
                # the burn values are the database's own text, not marks for the server
                marks = any("\x1e" in text for text in page.node_texts.values())
                spliced["End User burns marked" if marks else "End User burns written"] += 1
        return page

    monkeypatch.setattr(end_users, "report_page", report_page)
    read_summary = allocation_summary.summary_and_ranked

    async def summary_and_ranked(*args: Any) -> Any:
        figures, ranked = await read_summary(*args)
        if ranked.texts:
            spliced["rankings written by the database"] += 1
        return figures, ranked

    monkeypatch.setattr(allocation_summary, "summary_and_ranked", summary_and_ranked)
    for module in (end_user_json, request_log_json):
        write_edges = module.written_edges

        def edges_counted(
            *args: Any, _write: Any = write_edges, _name: str = module.__name__
        ) -> Any:
            edges = _write(*args)
            if edges is not None:
                spliced[f"{_name} edges as one text"] += 1
            return edges

        monkeypatch.setattr(module, "written_edges", edges_counted)
    app = await _application()
    stock = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    variables = {
        "id": str(app),
        "from": (frozen - timedelta(days=3)).isoformat(),
        "to": frozen.isoformat(),
    }
    rng = random.Random(SEEDS[backend.name])
    current_document = ""
    for _ in range(SELECTIONS):
        document = current_document = Writer(rng).document()
        if "$pool" in document:
            variables["pool"] = rng.choice(["ai", "inbox_preview"])
        else:
            variables.pop("pool", None)
        answers = []
        # (twice preserialized: the second reads its selections as kept by the first)
        runs = ((schema, True), (schema, True), (schema, False), (stock, False))
        for each, preserialized in runs:
            context = Context(None, None, principal, preserialized=preserialized)
            result = await each.execute(document, variable_values=variables, context_value=context)
            answers.append(_answer(result))
        assert answers[0] == answers[1] == answers[2] == answers[3], document
        assert not answers[0][1], (document, answers[0][1])
    if fast_paths_enabled():
        # most selections are plain enough to be written preserialized, by every writer
        assert sum(spliced.values()) > SELECTIONS // 3, spliced
        assert all(spliced[name] >= 10 for _, name in writers), spliced
        if backend.postgres:
            assert spliced["entries written by the database"] >= 10, spliced
            assert spliced["End User nodes written by the database"] >= 10, spliced
            assert spliced["End User burns written"] >= 5, spliced
            assert spliced["End User burns marked"] == 0, spliced  # small values: none
            assert spliced["rankings written by the database"] >= 10, spliced
            assert spliced["resolvers.end_user_json edges as one text"] >= 5, spliced
            assert spliced["resolvers.request_log_json edges as one text"] >= 5, spliced


async def test_a_page_of_written_nodes_the_writer_refuses_is_read_whole(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection the JSON writer refuses (an Int past 32 bits, here every Int) after the
    database wrote its nodes is answered by the general path, its page read again whole."""

    def refuse(value: int) -> int:
        raise NotPlain

    monkeypatch.setattr(end_user_json, "checked_int", refuse)
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    document = (
        "query($id: ID!) { application(id: $id) { endUsers(first: 5) { totalCount"
        " edges { cursor node { externalId name balances { pool remaining status } } } } } }"
    )
    answers = []
    for preserialized in (True, False):
        context = Context(None, None, principal, preserialized=preserialized)
        result = await schema.execute(
            document, variable_values={"id": str(app)}, context_value=context
        )
        answers.append(_answer(result))
    assert answers[0] == answers[1]
    assert len(answers[0][0]["application"]["endUsers"]["edges"]) == 5


async def test_a_selection_is_read_once_per_operation_and_field(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read selections are kept per operation and field: a document sent again reads none,
    and two documents, or two aliases, selecting differently at one place keep their own."""
    from resolvers import preserialized

    # (another test may have sent these documents)
    monkeypatch.setattr(preserialized, "_READ", PerField())
    reads = Counter[str]()
    collect = preserialized._collect

    def counted(*args: Any) -> Any:
        reads["collect"] += 1
        return collect(*args)

    monkeypatch.setattr(preserialized, "_collect", counted)
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    documents = [
        "query($id: ID!) { application(id: $id) { endUsers(first: 3) { totalCount } } }",
        "query($id: ID!) { application(id: $id) { endUsers(first: 3) {"
        " edges { node { externalId } } } other: endUsers(first: 2) { totalCount } } }",
        # arguments given by literals are the document's too
        'query($id: ID!) { application(id: $id) { allocationSummary(pool: "ai") { low'
        " topConsumers(first: 2) { used endUser { externalId } } } } }",
    ]
    expected = []
    for document in documents:
        context = Context(None, None, principal, preserialized=False)
        result = await schema.execute(
            document, variable_values={"id": str(app)}, context_value=context
        )
        expected.append(_answer(result))
    for round_ in range(3):
        for document, answer in zip(documents, expected, strict=True):
            context = Context(None, None, principal, preserialized=True)
            result = await schema.execute(
                document, variable_values={"id": str(app)}, context_value=context
            )
            assert _answer(result) == answer, document
        if round_ == 0:
            first_reads = reads["collect"]
            # with the fast paths off, nothing is preserialized: no selection is read
            assert (first_reads > 0) == fast_paths_enabled()
    assert reads["collect"] == first_reads  # the later rounds read none


async def test_a_balance_given_its_pool_by_a_variable_is_read_for_each_request(
    backend: Backend, frozen_now: datetime
) -> None:
    """`balance(pool: $pool)` under a page's nodes is written preserialized, and read again
    for every request: the same document asks for another pool with another variable."""
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    document = (
        "query($id: ID!, $pool: String!) { application(id: $id) { endUsers(first: 4,"
        " orderBy: {field: USED, direction: DESC, pool: $pool}) { edges { node { externalId"
        " balance(pool: $pool) { pool used remaining status burnRatePerDay } } } } } }"
    )
    answers: dict[str, Any] = {}
    for pool in ("ai", "inbox_preview", "ai"):
        answers[pool] = await _both_paths(document, {"id": str(app), "pool": pool}, principal)
        edges = answers[pool][0]["application"]["endUsers"]["edges"]
        assert edges and all(edge["node"]["balance"]["pool"] == pool for edge in edges)
    assert answers["ai"] != answers["inbox_preview"]


async def _both_paths(document: str, variables: dict[str, Any], principal: Principal) -> Any:
    """The answer preserialized, which must equal the general path's."""
    answers = []
    for preserialized in (True, False):
        context = Context(None, None, principal, preserialized=preserialized)
        result = await schema.execute(document, variable_values=variables, context_value=context)
        answers.append(_answer(result))
    assert answers[0] == answers[1], (document, variables)
    return answers[0]


async def test_edges_asking_for_their_node_alone_come_as_one_text_under_its_alias(
    backend: Backend,
) -> None:
    """Edges that ask for their node alone, aliased or not, are written as one text of the
    database's nodes; the answer equals the general path's, alias and all, and so does one
    whose edges ask for more (a cursor)."""
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    for edge in ("n: node", "node", "cursor node"):
        document = (
            f"query($id: ID!) {{ application(id: $id) {{"
            f" endUsers(first: 3) {{ edges {{ {edge} {{ externalId balances {{ used }} }} }} }}"
            f" requestLog(first: 2) {{ edges {{ {edge} {{ endpoint status }} }} }} }} }}"
        )
        answer = (await _both_paths(document, {"id": str(app)}, principal))[0]["application"]
        name = edge.split(":")[0] if ":" in edge else "node"
        users = answer["endUsers"]["edges"]
        assert len(users) == 3 and all(set(e) >= {name} for e in users), users
        assert [u[name]["externalId"] for u in users] == sorted(
            u[name]["externalId"] for u in users
        )
        entries = answer["requestLog"]["edges"]
        assert all(set(e) >= {name} for e in entries), entries


async def test_a_ranking_given_its_size_by_a_variable_is_read_for_each_request(
    backend: Backend,
) -> None:
    """A ranking's `first` given by a variable is read again for every request (sizes
    differ from one request to the next), absent included (the default size)."""
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    document = (
        'query($id: ID!, $n: Int) { application(id: $id) { allocationSummary(pool: "ai") {'
        " endUsersTotal closeToRunningOut(first: $n) { remaining endUser { externalId } }"
        " topConsumers(first: 3) { used } } } }"
    )
    sizes = []
    for n in (None, 1, 4, None, 2):
        variables: dict[str, Any] = {"id": str(app)} | ({} if n is None else {"n": n})
        answer = await _both_paths(document, variables, principal)
        summary = answer[0]["application"]["allocationSummary"]
        sizes.append((len(summary["closeToRunningOut"]), len(summary["topConsumers"])))
    assert sizes == [(sizes[0][0], 3), (1, 3), (4, 3), (sizes[0][0], 3), (2, 3)]
    assert sizes[0][0] > 4  # the default size, 10, of the End Users running out


async def test_a_ranking_holding_an_int_past_32_bits_is_answered_as_the_general_path_does(
    backend: Backend, frozen_now: datetime
) -> None:
    """A ranked balance with an Int past 32 bits is not written by the database: the answer
    (an error where a selected field cannot be an Int, the values where none is) equals the
    general path's, and the other End Users' rows are written alike."""
    app = await _application()
    big = (await upsert_end_users(app, [EndUserInput("big", "Big", None)]))[0].id
    await purchase_credits(app, "ai", 1_000_000)
    await allocate_credits(app, "ai", EndUserRef(id=big), 1_000_000)
    await consume_credits(app, "ai", EndUserRef(id=big), 1_000, "ai_generation")

    async def past_32_bits(db: Sql) -> None:  # (a balance's version counts every change)
        statement = "UPDATE end_user_balance SET version = 3000000000 WHERE end_user_id = $1"
        await db.run(statement, big)

    await single_statement(past_32_bits)
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    for fields, fails in (("used burnRatePerDay", False), ("version", True)):
        document = (
            'query($id: ID!) { application(id: $id) { allocationSummary(pool: "ai") {'
            f" topConsumers(first: 3) {{ {fields} endUser {{ externalId }} }} }} }} }}"
        )
        data, errors = await _both_paths(document, {"id": str(app)}, principal)
        assert bool(errors) == fails, errors
        if not fails:
            ranked = data["application"]["allocationSummary"]["topConsumers"]
            assert ranked[0] == {
                "used": 1_000,
                "burnRatePerDay": 1_000 / window_days(frozen_now),
                "endUser": {"externalId": "big"},
            }


async def test_a_page_written_by_the_database_reads_the_tail_of_the_pools_that_have_one(
    backend: Backend, frozen_now: datetime
) -> None:
    """The written page looks up the tail only in the pools with entries in it
    (models.rollups `tail_pools`): with a tail in one pool and none in the other, then in
    both, then in neither after a fold, its burn values equal the general path's, and
    each balance's rate is its use over the window as the ledger has it."""
    app = await _application()  # folded: no tail in either pool
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    document = (
        "query($id: ID!) { application(id: $id) { endUsers(first: 12) { edges { node {"
        " externalId balances { pool used burnRatePerDay projectedExhaustionAt } } } } } }"
    )
    users = [u.id for u in await _end_users(app)]
    window = window_days(frozen_now)
    steps = (
        ("ai", 7),  # a tail in "ai" only
        ("inbox_preview", 3),  # in both
        (None, 0),  # folded: in neither
    )
    for pool, amount in steps:
        if pool is None:
            await fold_usage()
        else:
            await consume_credits(app, pool, EndUserRef(id=users[1]), amount, "ai_generation")
        answer = await _both_paths(document, {"id": str(app)}, principal)
        used = await _window_use(app, frozen_now)
        for edge in answer[0]["application"]["endUsers"]["edges"]:
            external = edge["node"]["externalId"]
            for balance in edge["node"]["balances"]:
                expected = used.get((external, balance["pool"]), 0)
                assert balance["burnRatePerDay"] == expected / window, (pool, external)
                assert (balance["projectedExhaustionAt"] is None) == (expected == 0)


async def _end_users(app: int) -> list[Any]:
    return await EndUser.filter(application_id=app).order_by("id")


async def _window_use(app: int, now: datetime) -> dict[tuple[str, str], int]:
    """Each End User's consumption since the burn window's start, straight from the ledger."""
    rows = await single_statement(
        lambda db: db.rows(
            "SELECT e.external_id, p.key, -SUM(l.amount) AS used FROM ledger_entry l"
            " JOIN end_user e ON e.id = l.end_user_id JOIN credit_pool p ON p.id = l.pool_id"
            " WHERE l.application_id = $1 AND l.kind = 'CONSUME' AND l.occurred_at >= $2"
            " GROUP BY e.external_id, p.key",
            app,
            window_start(now),
        )
    )
    return {(row["external_id"], row["key"]): int(row["used"]) for row in rows}


async def test_a_series_written_once_is_written_again_when_its_facts_change(
    backend: Backend, frozen_now: datetime
) -> None:
    """A pool's series read again unchanged answers the JSON written before (kept with the
    series, resolvers/consumption.py `series_text`); a consumption in its tail or a fold
    makes a new series, whose JSON shows it, on both paths alike."""
    app = await _application()
    principal = Principal(0, app, ApiKeyRole.READ, None, None)
    start = (frozen_now - timedelta(days=3)).isoformat()
    document = (
        "query($id: ID!, $from: DateTime!, $to: DateTime!) { application(id: $id) { pools {"
        " key consumption(from: $from, to: $to, granularity: DAY) { totalUsed buckets { used"
        " remaining } } } } }"
    )
    variables = {"id": str(app), "from": start, "to": frozen_now.isoformat()}

    def used(answer: Any) -> dict[str, int]:
        pools = answer[0]["application"]["pools"]
        return {pool["key"]: pool["consumption"]["totalUsed"] for pool in pools}

    first = await _both_paths(document, variables, principal)
    assert await _both_paths(document, variables, principal) == first
    user = (await _end_users(app))[1].id  # (it holds credits in both pools)
    await consume_credits(app, "ai", EndUserRef(id=user), 9, "ai_generation")
    consumed = await _both_paths(document, variables, principal)
    assert used(consumed) == {**used(first), "ai": used(first)["ai"] + 9}
    await fold_usage()
    assert await _both_paths(document, variables, principal) == consumed
    await consume_credits(app, "inbox_preview", EndUserRef(id=user), 2, "ai_generation")
    later = await _both_paths(document, variables, principal)
    assert used(later) == {**used(consumed), "inbox_preview": used(consumed)["inbox_preview"] + 2}
