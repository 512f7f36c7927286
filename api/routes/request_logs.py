"""`POST /v1/request-logs`: other platform services (editor launch, email creation) push
their own request records, up to 1,000 a call.

Credentials: an ADMIN API key, of the application the records belong to or of its
organization (then every record names its `applicationId`). Body: `{"records": [...]}`.
Each record is validated alone: the good ones are stored (and published to the live tail),
each bad one gets a typed error naming its index, and the answer is 200 with
`{"accepted": n, "errors": [{"index", "code", "field", "message"}]}`. A body that is not
such an object, or holds more than 1,000 records, is 400 and stores nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import authenticate
from api.request_log import note_error, note_principal
from api.request_log_writer import store_and_publish
from api.unavailable import unavailable_as
from models.access import Principal, require_api_key, require_write
from models.accounts import InvalidCredential
from models.errors import DomainError, Forbidden, NotFound, ValidationFailed
from models.references import organization_of
from models.request_log import (
    MAX_ENDPOINT,
    MAX_MESSAGE,
    LogRow,
    LogSource,
    Outcome,
    outcome_for,
)

MAX_RECORDS = 1_000


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("time must carry a time zone (e.g. 2026-11-25T10:00:00Z)")
    return value.astimezone(UTC)


class IngestRecord(BaseModel):
    """One record as another service sends it (camelCase, as in GraphQL)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    application_id: int | None = Field(None, alias="applicationId", gt=0, lt=2**63)
    time: Annotated[datetime, AfterValidator(_aware)]
    method: str = Field(min_length=1, max_length=16)
    endpoint: str = Field(min_length=1, max_length=MAX_ENDPOINT)
    operation_name: str | None = Field(None, alias="operationName", max_length=200)
    end_user_id: int | None = Field(None, alias="endUserId", gt=0, lt=2**63)
    end_user_external_id: str | None = Field(
        None, alias="endUserExternalId", min_length=1, max_length=200
    )
    api_key_prefix: str | None = Field(None, alias="apiKeyPrefix", min_length=1, max_length=32)
    status: int = Field(ge=100, le=599)
    outcome: Outcome | None = None  # derived from status and errorCode when absent
    error_code: str | None = Field(None, alias="errorCode", min_length=1, max_length=64)
    error_message: str | None = Field(None, alias="errorMessage", max_length=MAX_MESSAGE)
    latency_ms: float = Field(alias="latencyMs", ge=0, le=86_400_000)
    request_id: str | None = Field(None, alias="requestId", min_length=1, max_length=64)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "accepted": 0,
            "errors": [{"index": None, "code": code, "field": None, "message": message}],
        },
        status_code=status,
    )


def _field_of(error: dict[str, Any]) -> str | None:
    location = [str(part) for part in error.get("loc", ())]
    return ".".join(location) or None


def _row(record: IngestRecord, application_id: int, organization_id: int) -> LogRow:
    outcome = record.outcome or outcome_for(record.status, record.error_code)
    return LogRow(
        application_id=application_id,
        organization_id=organization_id,
        time=record.time,
        method=record.method.upper(),
        endpoint=record.endpoint,
        operation_name=record.operation_name,
        end_user_id=record.end_user_id,
        end_user_external_id=record.end_user_external_id,
        api_key_prefix=record.api_key_prefix,
        status=record.status,
        outcome=outcome.value,
        error_code=record.error_code,
        error_message=record.error_message,
        latency_ms=record.latency_ms,
        request_id=record.request_id or uuid.uuid4().hex,
        source=LogSource.INGEST.value,
    )


async def _owner_checked(principal: Principal, record: IngestRecord, owners: dict) -> int:
    """The application a record goes to: the key's own, or (organization key) the one it
    names, when the organization owns it."""
    if principal.application_id is not None:
        if record.application_id not in (None, principal.application_id):
            raise NotFound("application not found", field="applicationId")
        return principal.application_id
    if record.application_id is None:
        raise ValidationFailed(
            "applicationId is required with an organization key", field="applicationId"
        )
    owner = owners.get(record.application_id)
    if owner is None:
        owner = owners[record.application_id] = await organization_of(record.application_id)
    if owner != principal.organization_id:
        raise NotFound("application not found", field="applicationId")
    return record.application_id


def ingest_route(secret: str, broker_of: Any) -> Route:
    @unavailable_as(_error)
    async def ingest(request: Request) -> Response:
        try:
            principal = await authenticate(request.headers.get("authorization"), secret)
        except InvalidCredential as error:
            note_error(request.scope, error.code, error.message)
            return _error(401, "UNAUTHENTICATED", error.message)
        note_principal(request.scope, principal)
        try:
            require_api_key(principal)
            require_write(principal)
        except (NotFound, Forbidden):
            return _error(403, "FORBIDDEN", "records are pushed with an ADMIN API key")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "VALIDATION", 'the body must be JSON: {"records": [...]}')
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            return _error(400, "VALIDATION", "the body must be an object with a records list")
        if len(records) > MAX_RECORDS:
            return _error(400, "VALIDATION", f"at most {MAX_RECORDS:,} records per call")
        rows: list[LogRow] = []
        errors: list[dict[str, Any]] = []
        owners: dict[int, int | None] = {}
        for index, raw in enumerate(records):
            try:
                record = IngestRecord.model_validate(raw)
                application_id = await _owner_checked(principal, record, owners)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                errors.append(
                    {
                        "index": index,
                        "code": "VALIDATION",
                        "field": _field_of(first),
                        "message": first["msg"],
                    }
                )
                continue
            except DomainError as error:
                errors.append(
                    {
                        "index": index,
                        "code": error.code.value,
                        "field": error.field,
                        "message": error.message,
                    }
                )
                continue
            rows.append(_row(record, application_id, principal.organization_id))
        await store_and_publish(rows, broker_of())
        return JSONResponse({"accepted": len(rows), "errors": errors})

    return Route("/v1/request-logs", ingest, methods=["POST"])
