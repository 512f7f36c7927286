"""The service's one logging setup (docs/logging.md): a handler on the root logger that
every logger of ours, Strawberry's and uvicorn's reaches. Each line carries the id of the
request it was written for (the request log's, `X-Request-Id`), no line carries more than
a few KB of client input, and lines are text or JSON (`USAGEGRAPH_LOG_FORMAT=json`), one
object per line. Applied by `usagegraph serve` before uvicorn starts and by the app's
start-up (so a worker process, or uvicorn run by hand, logs the same way)."""

from __future__ import annotations

import logging
import logging.config
import sys
import traceback
from contextvars import ContextVar
from types import TracebackType
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

LogFormat = Literal["text", "json"]

# The request (or WebSocket connection) being served in this task; set by the request
# log middleware, inherited by the tasks a request starts.
REQUEST_ID: ContextVar[str | None] = ContextVar("usagegraph_request_id", default=None)
NO_REQUEST = "-"
# A log message is cut here: client input (a query, a variable, a credential) can reach
# a message through an error's text.
MAX_MESSAGE_CHARS = 2_000
# Likewise each line of a traceback (its last line is the exception's text).
MAX_TRACEBACK_LINE_CHARS = 2_000
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# uvicorn's own loggers: their handlers, when uvicorn's default configuration set them,
# give way to ours.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Libraries that write a DEBUG line per statement or frame (with its values): INFO at
# most, whatever the level, so DEBUG shows the service's own lines.
_CHATTY_LIBRARIES = ("tortoise", "aiosqlite", "asyncpg", "websockets")


def clip_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _clipped_traceback(exc_info: ExcInfo) -> str:
    text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    return "\n".join(clip_text(line, MAX_TRACEBACK_LINE_CHARS) for line in text.split("\n"))


class RequestContext(logging.Filter):
    """Gives every record its `request_id` and cuts an over-long message and traceback
    (replacing a whole traceback another handler's formatter may have left on it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or NO_REQUEST
        message = record.getMessage()
        if len(message) > MAX_MESSAGE_CHARS:
            record.msg, record.args = clip_text(message, MAX_MESSAGE_CHARS), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = _clipped_traceback(record.exc_info)
        return True


class _ClipsTracebacks(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:
        return _clipped_traceback(ei)


class TextFormatter(_ClipsTracebacks):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


class JsonLinesFormatter(_ClipsTracebacks, OrjsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id, and
    `traceback` when there is one."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "request_id"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "traceback"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's colored copy
        )


def log_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """The handler the setup installs (writing to stderr unless told otherwise)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestContext())
    handler.setFormatter(JsonLinesFormatter() if log_format == "json" else TextFormatter())
    return handler


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """The setup as `logging.config.dictConfig` takes it: also uvicorn's `log_config`, which
    uvicorn applies in every worker process before its first line."""
    quieter = max(logging.INFO, logging.getLevelNamesMapping()[level])
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"usagegraph": {"()": log_handler, "log_format": log_format}},
        "root": {"handlers": ["usagegraph"], "level": level},
        "loggers": {name: {"level": quieter} for name in _CHATTY_LIBRARIES},
    }


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Applies the setup in this process (again, when it already was). A uvicorn logger
    with handlers of its own (uvicorn's default configuration) sends its records to ours
    instead; one uvicorn silenced (`--no-access-log`) stays silent."""
    logging.config.dictConfig(logging_config(log_format, level))
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.handlers = []
            logger.propagate = True
