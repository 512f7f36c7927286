"""`GET /v1/applications/{id}/export` (docs/billing-and-export.md#export): one application's
records of a time range as CSV or NDJSON, streamed as they are read (constant memory whatever the
size).

Credentials: `Authorization: Bearer <API key>` (an application key of that application or
an organization key of its organization; anything else answers 404), or the `signature`
of a link made by `Application.exportUrl` (short-lived, bound to the exact parameters).
Bad parameters answer 400 with `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.auth import authenticate
from api.database import plain_postgres_dsn
from api.settings import Settings
from api.unavailable import unavailable_as
from models.access import require_api_key, visible_application
from models.accounts import InvalidCredential
from models.errors import DomainError, NotFound, ValidationFailed
from models.export_links import InvalidLink, same_export, verify_export
from models.exports import (
    Column,
    ColumnKind,
    ExportFormat,
    ExportSpec,
    ExportType,
    columns_of,
    export_batches,
)
from models.tenancy import ApiKey, Application

MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.NDJSON: "application/x-ndjson",
}
# A `+` of an offset left unencoded in a query string arrives as a space.
_SPACED_OFFSET = re.compile(r"^(.*\d) (\d\d:?\d\d)$")


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status)


def _parse_time(text: str | None, name: str) -> datetime:
    if not text:
        raise ValidationFailed(
            f"{name} is required (ISO 8601, e.g. 2026-11-01T00:00:00Z)", field=name
        )
    text = _SPACED_OFFSET.sub(r"\1+\2", text.strip())
    try:
        if len(text) == 10:  # a date: midnight UTC
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{name} is not an ISO 8601 date or time: {text[:40]!r}", field=name
        ) from None
    if moment.tzinfo is None:
        raise ValidationFailed(f"{name} must carry a time zone (e.g. Z)", field=name)
    return moment.astimezone(UTC)


def _choice(enum: type[Any], text: str | None, name: str, default: Any = None) -> Any:
    if text is None and default is not None:
        return default
    try:
        return enum(text)
    except ValueError:
        allowed = "|".join(member.value for member in enum)
        raise ValidationFailed(f"{name} must be one of {allowed}", field=name) from None


def parse_export(application_id: int, params: Any) -> ExportSpec:
    """The export the query string asks for, or ValidationFailed naming the bad field."""
    return ExportSpec(
        application_id=application_id,
        type=_choice(ExportType, params.get("type"), "type"),
        start=_parse_time(params.get("from"), "from"),
        end=_parse_time(params.get("to"), "to"),
        format=_choice(ExportFormat, params.get("format"), "format", ExportFormat.CSV),
    ).validated()


# ------------------------------------------------------------------------------ encoding


async def csv_chunks(
    columns: Sequence[Column], batches: AsyncIterator[Sequence[Sequence[Any]]]
) -> AsyncIterator[bytes]:
    """RFC 4180 CSV (stdlib `csv`), a header row, then one chunk per batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.name for column in columns])
    yield buffer.getvalue().encode()
    async for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(batch)
        yield buffer.getvalue().encode()


async def ndjson_chunks(
    columns: Sequence[Column], batches: AsyncIterator[Sequence[Sequence[Any]]]
) -> AsyncIterator[bytes]:
    """One JSON object per line; JSON columns embedded as values, not as text."""
    names = [column.name for column in columns]
    nested = [i for i, column in enumerate(columns) if column.kind == ColumnKind.JSON]
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    async for batch in batches:
        lines = []
        for row in batch:
            values = list(row)
            for i in nested:
                if values[i] is not None:
                    values[i] = json.loads(values[i])
            lines.append(encode(dict(zip(names, values, strict=True))))
        lines.append("")
        yield "\n".join(lines).encode()


class ExportResponse(StreamingResponse):
    """Streams an export and always closes its row source (and so its database
    connection), whether the download finishes, fails or the client goes away."""

    def __init__(self, spec: ExportSpec, file_name: str, dsn: str | None, release: Any) -> None:
        self.batches = export_batches(spec, dsn)
        self.release = release
        columns = columns_of(spec.type)
        encode = csv_chunks if spec.format == ExportFormat.CSV else ndjson_chunks
        super().__init__(
            encode(columns, self.batches),
            media_type=MEDIA_TYPES[spec.format],
            headers={
                "Content-Disposition": f'attachment; filename="{file_name}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.batches.aclose()  # type: ignore[attr-defined]
            finally:
                self.release()


# ------------------------------------------------------------------------- the endpoint


class ExportEndpoint:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret
        self.dsn = plain_postgres_dsn(settings.database_url) if settings.is_postgres else None
        self.max_running = settings.export_concurrency
        self.running = 0

    @unavailable_as(_error)
    async def handle(self, request: Request) -> Response:
        try:
            spec = await self._authorized_export(request)
        except _Refused as refused:
            return refused.response
        except DomainError as error:
            status = 404 if isinstance(error, NotFound) else 400
            return _error(status, error.code.value, error.message, error.field)
        if self.running >= self.max_running:
            response = _error(
                429, "TOO_MANY_EXPORTS", "too many exports are running: retry in a few seconds"
            )
            response.headers["Retry-After"] = "5"
            return response
        application = await Application.get(id=spec.application_id)
        response = ExportResponse(spec, spec.file_name(application.name), self.dsn, self._release)
        self.running += 1  # released when the response has streamed (or failed)
        return response

    def _release(self) -> None:
        self.running -= 1

    async def _authorized_export(self, request: Request) -> ExportSpec:
        params = request.query_params
        raw_id = request.path_params["application_id"]
        signature = params.get("signature")
        if signature is not None:
            return await self._signed_export(raw_id, signature, params)
        try:
            principal = await authenticate(request.headers.get("authorization"), self.secret)
        except InvalidCredential as error:
            raise _Refused(_unauthenticated(error.message)) from None
        require_api_key(principal)
        application_id = await visible_application(principal, raw_id)
        return parse_export(application_id, params)

    async def _signed_export(self, raw_id: str, signature: str, params: Any) -> ExportSpec:
        try:
            claims = verify_export(self.secret, signature)
        except InvalidLink as error:
            code = "EXPIRED" if error.expired else "FORBIDDEN"
            raise _Refused(_error(403, code, error.message)) from None
        try:
            asked = parse_export(claims.spec.application_id, params)
        except ValidationFailed:
            asked = None
        if (
            asked is None
            or raw_id != str(asked.application_id)
            or not same_export(claims.spec, asked)
        ):
            raise _Refused(
                _error(403, "FORBIDDEN", "the URL's parameters differ from the signed ones")
            )
        if claims.api_key_id is not None and not await ApiKey.exists(
            id=claims.api_key_id, revoked_at=None
        ):
            raise _Refused(_error(403, "FORBIDDEN", "the API key that signed this link is revoked"))
        return claims.spec


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _unauthenticated(message: str) -> Response:
    response = _error(401, "UNAUTHENTICATED", message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def export_route(settings: Settings) -> Route:
    return Route(
        "/v1/applications/{application_id}/export",
        ExportEndpoint(settings).handle,  # a method: Starlette wraps it as request -> response
        methods=["GET"],
    )
