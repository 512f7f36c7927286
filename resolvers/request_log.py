"""The request log in GraphQL (docs/request-log.md): `Application.requestLog` (newest first, keyset
pages), `Application.requestVolume` (requests and errors per bucket, with spikes) and the
`requestLogTail` subscription. API keys only: an End User token sees none of it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from typing import Any, cast

import strawberry

from models.access import require_api_key, visible_application
from models.consumption import Granularity as DomainGranularity
from models.credits import EndUser as EndUserRow
from models.errors import NotFound
from models.events import RequestLogged
from models.request_log import LogFilter, Outcome, entry_dict, entry_page, request_volume
from resolvers.consumption import Granularity
from resolvers.context import Info, principal_of
from resolvers.cursors import cursor_value, encode_cursor, whole_number
from resolvers.end_users import EndUser, EndUserRef, PageInfo
from resolvers.errors import errors_as_query_errors
from resolvers.loaders import SharedLoader
from resolvers.preserialized import NotPlain, encode, read_selection, splicing
from resolvers.request_log_json import CONNECTION_SHAPE, connection_json, entry_entries
from subscriptions.request_log_tail import tail_entries

RequestOutcome = strawberry.enum(Outcome, name="RequestOutcome")


@strawberry.type(description="One request to the API, or one pushed by a platform service.")
class RequestLogEntry:
    id: strawberry.ID
    time: datetime
    method: str
    endpoint: str = strawberry.field(
        description="`METHOD /path`; for GraphQL `POST /graphql` and the root field names."
    )
    operation_name: str | None
    end_user_external_id: str | None
    api_key_prefix: str | None = strawberry.field(description="The key id of the API key.")
    status: int = strawberry.field(description="HTTP status (101: an accepted WebSocket).")
    outcome: RequestOutcome
    error_code: str | None
    error_message: str | None
    latency_ms: float
    request_id: str
    source: str = strawberry.field(
        description="`api` (this service), `ingest` (pushed) or `webhook` (a"
        " webhook delivery this service made)."
    )
    end_user_row_id: strawberry.Private[int | None]
    application_id: strawberry.Private[int]

    @strawberry.field(description="The End User the request was about, when known.")
    async def end_user(self, info: Info) -> EndUser | None:
        if self.end_user_row_id is None:
            return None
        loader = info.context.cache.get("request_log_end_users")
        if loader is None:
            loader = info.context.cache["request_log_end_users"] = SharedLoader(_load_end_users)
        row = await loader.load((self.application_id, self.end_user_row_id))
        return None if row is None else EndUser.from_row(row)

    @classmethod
    def from_logged(cls, logged: RequestLogged) -> RequestLogEntry:
        return cls.from_entry({"id": logged.id, **entry_dict(logged.row._asdict())})

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> RequestLogEntry:
        return cls(
            id=strawberry.ID(str(entry["id"])),
            time=entry["time"],
            method=entry["method"],
            endpoint=entry["endpoint"],
            operation_name=entry["operation_name"],
            end_user_external_id=entry["end_user_external_id"],
            api_key_prefix=entry["api_key_prefix"],
            status=entry["status"],
            outcome=entry["outcome"],
            error_code=entry["error_code"],
            error_message=entry["error_message"],
            latency_ms=entry["latency_ms"],
            request_id=entry["request_id"],
            source=entry["source"],
            end_user_row_id=entry["end_user_id"],
            application_id=entry["application_id"],
        )


async def _load_end_users(keys: list[tuple[int, int]]) -> list[EndUserRow | None]:
    """End Users by (application, id) in one query; another application's id finds none."""
    rows = await EndUserRow.filter(id__in=[end_user for _, end_user in keys])
    found = {(row.application_id, row.id): row for row in rows}  # type: ignore[attr-defined]
    return [found.get(key) for key in keys]


@strawberry.input
class RequestLogFilter:
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    status_class: int | None = strawberry.field(
        default=None, description="The hundreds digit of the status: 2 for 2xx, 4 for 4xx..."
    )
    outcome: RequestOutcome | None = None
    endpoint: str | None = strawberry.field(default=None, description="Exact endpoint.")
    end_user: EndUserRef | None = None
    api_key_prefix: str | None = None


async def _domain_filter(application_id: int, given: RequestLogFilter | None) -> LogFilter:
    if given is None:
        return LogFilter()
    end_user_id = None
    if given.end_user is not None:
        ref = given.end_user.to_domain()
        ref.validate()
        query = EndUserRow.filter(application_id=application_id)
        if ref.id is not None:
            query = query.filter(id=ref.id)
        else:
            query = query.filter(external_id=ref.external_id)
        found = await query.values_list("id", flat=True)
        if not found:  # as everywhere: an End User not in the application is NOT_FOUND
            raise NotFound("End User not found.")
        end_user_id = found[0]
    where = LogFilter(
        since=given.from_,
        until=given.to,
        status_class=given.status_class,
        outcome=None if given.outcome is None else Outcome(given.outcome),
        endpoint=given.endpoint,
        end_user_id=end_user_id,
        api_key_prefix=given.api_key_prefix,
    )
    where.validate()
    return where


@strawberry.type
class RequestLogEdge:
    node: RequestLogEntry

    @strawberry.field
    def cursor(self) -> str:
        """Made when asked for: a dashboard's page of 50 selects none."""
        return _cursor(self.node.time, self.node.id)


@strawberry.type
class RequestLogConnection:
    edges: list[RequestLogEdge]
    page_info: PageInfo


_CURSOR_KIND = "RequestLog"


def _cursor(time: datetime, entry_id: object) -> str:
    return encode_cursor(_CURSOR_KIND, f"{time.isoformat()}|{entry_id}")


def _entry_cursor(entry: Mapping[str, Any]) -> str:
    return _cursor(entry["time"], entry["id"])


def _keyset(value: str) -> tuple[datetime, int]:
    moment, _, entry_id = value.rpartition("|")
    at = datetime.fromisoformat(moment)
    if at.tzinfo is None:
        raise ValueError(moment)
    return at, whole_number(entry_id)


async def request_log_page(
    info: Info,
    application_id: int,
    first: int,
    after: str | None,
    given: RequestLogFilter | None,
) -> RequestLogConnection:
    """Newest first; a page costs one indexed read whatever its depth (keyset)."""
    with errors_as_query_errors():
        where = await _domain_filter(application_id, given)
        keyset = None if after is None else cursor_value(after, _CURSOR_KIND, _keyset)
        selection = read_selection(info, CONNECTION_SHAPE) if splicing(info) else None
        as_json = None if selection is None else entry_entries(selection)
        entries = await entry_page(application_id, first, keyset, where, as_json)
    page = entries[:first]
    if selection is not None:
        try:
            answer = connection_json(selection, page, _entry_cursor, len(entries) > first)
            return cast(RequestLogConnection, encode(answer))
        except NotPlain:
            pass  # the general path answers, and reports what it reports
    edges = [RequestLogEdge(node=RequestLogEntry.from_entry(e)) for e in page]
    return RequestLogConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(entries) > first, end_cursor=edges[-1].cursor() if edges else None
        ),
    )


@strawberry.type
class RequestVolumeBucket:
    start: datetime
    requests: int
    ok: int
    client_errors: int
    auth_errors: int
    server_errors: int
    errors: int = strawberry.field(description="clientErrors + authErrors + serverErrors")
    spike: bool = strawberry.field(
        description="Requests well above the series' median (the consumption series' rule)."
    )


@strawberry.type
class RequestVolume:
    granularity: Granularity
    buckets: list[RequestVolumeBucket]
    total_requests: int
    total_errors: int


async def request_volume_series(
    application_id: int, since: datetime, until: datetime, granularity: DomainGranularity
) -> RequestVolume:
    with errors_as_query_errors():
        buckets = await request_volume(application_id, since, until, granularity)
    shaped = []
    for bucket in buckets:
        ok = bucket.by_outcome.get(Outcome.OK, 0)
        shaped.append(
            RequestVolumeBucket(
                start=bucket.start,
                requests=bucket.requests,
                ok=ok,
                client_errors=bucket.by_outcome.get(Outcome.CLIENT_ERROR, 0),
                auth_errors=bucket.by_outcome.get(Outcome.AUTH_ERROR, 0),
                server_errors=bucket.by_outcome.get(Outcome.SERVER_ERROR, 0),
                errors=bucket.requests - ok,
                spike=bucket.spike,
            )
        )
    return RequestVolume(
        granularity=granularity,
        buckets=shaped,
        total_requests=sum(b.requests for b in shaped),
        total_errors=sum(b.errors for b in shaped),
    )


async def request_log_tail(
    info: Info, application_id: strawberry.ID, filter: RequestLogFilter | None = None
) -> AsyncGenerator[RequestLogEntry, None]:
    """Every entry of the application written from now on (by any process) that matches
    the filter. A subscriber that falls behind loses the oldest entries, never the newest."""
    with errors_as_query_errors():
        principal = principal_of(info)
        require_api_key(principal)
        application = await visible_application(principal, application_id)
        where = await _domain_filter(application, filter)

    def accept(logged: RequestLogged) -> bool:
        return where.matches(logged.row)

    async for logged in tail_entries(info.context.realtime.broker, application, accept):
        yield RequestLogEntry.from_logged(logged)
