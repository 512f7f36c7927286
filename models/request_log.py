"""The request log (SPEC §5): one row per API request, WebSocket connection or record pushed
by another platform service.

`application_id` is NULL only when nothing in the request names an application: no
credential, a malformed one, or an organization key on a request that addresses none of its
applications (`organization_id` is kept then). Like the ledger's records, the row has no
foreign keys: the log is written in batches off the request path and must never wait on, or
lock, the rows it mentions, and an entry must be kept even for an application id a forged
token claimed."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

MAX_MESSAGE = 1_000
MAX_ENDPOINT = 300


class Outcome(StrEnum):
    OK = "OK"
    CLIENT_ERROR = "CLIENT_ERROR"
    AUTH_ERROR = "AUTH_ERROR"
    SERVER_ERROR = "SERVER_ERROR"


class LogSource(StrEnum):
    API = "api"  # logged by this service's middleware
    INGEST = "ingest"  # pushed by another platform service to POST /v1/request-logs


class RequestLogEntry(Model):
    """One request. `endpoint` is `METHOD /path`, and for GraphQL `POST /graphql` followed by
    the operation's root field names; `api_key_prefix` is the key id (`ug_<key id>_...`)."""

    id = fields.BigIntField(primary_key=True)
    application_id = fields.BigIntField(null=True)
    organization_id = fields.BigIntField(null=True)
    time = fields.DatetimeField()
    method = fields.CharField(max_length=16)
    endpoint = fields.CharField(max_length=MAX_ENDPOINT)
    operation_name = fields.CharField(max_length=200, null=True)
    end_user_id = fields.BigIntField(null=True)
    end_user_external_id = fields.CharField(max_length=200, null=True)
    api_key_prefix = fields.CharField(max_length=32, null=True)
    status = fields.SmallIntField()
    outcome = fields.CharEnumField(Outcome, max_length=16)
    error_code = fields.CharField(max_length=64, null=True)
    error_message = fields.CharField(max_length=MAX_MESSAGE, null=True)
    latency_ms = fields.FloatField()
    request_id = fields.CharField(max_length=64)
    source = fields.CharEnumField(LogSource, max_length=16)

    class Meta:
        table = "request_log"
        # Newest-first keyset pages per application by (time, id), and one index per
        # selective filter so a filtered page reads only matching rows; `time` alone for
        # the retention job.
        indexes = (
            ("application_id", "time", "id"),
            ("application_id", "outcome", "time", "id"),
            ("application_id", "end_user_id", "time", "id"),
            ("application_id", "api_key_prefix", "time", "id"),
            ("application_id", "endpoint", "time", "id"),
            ("time",),
        )
