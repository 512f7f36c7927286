"""The executor's side of live subscriptions over our WebSocket transport: a `LiveEvents`
that a subscription resolver returns, in an operation whose root value is a `LiveClaim`
(api/transport/), is handed to the claim instead of iterated (subscriptions/live.py).

Verified against graphql-core 3.3.2 (`resolvers.runtime.versions.VERIFIED`): its
`map_source_to_response_event` passes the resolver's stream through
`Executor.cancellable_iterable` before mapping it, the one place an executor sees it."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, TypeVar

from subscriptions.live import LiveClaim, LiveEvents

T = TypeVar("T")


class ClaimsLiveEvents:
    """A mixin for graphql-core's `Executor`."""

    root_value: Any

    def cancellable_iterable(self, iterable: AsyncIterable[T]) -> AsyncIterable[T]:
        if isinstance(iterable, LiveEvents) and isinstance(self.root_value, LiveClaim):
            iterable = iterable.claimed_by(self.root_value)
        return super().cancellable_iterable(iterable)  # type: ignore[misc]
