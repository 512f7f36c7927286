"""Every GraphQL example of the README and docs/ runs, as printed, against the service a
newcomer starts (`usagegraph serve --demo` on a fresh SQLite file): queries and mutations over
HTTP without errors (payload errors included), subscriptions over graphql-transport-ws with
no error in their first second. An example is a ```graphql block; the ```json block right
after it holds its variables (one object for every operation of the block)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, OperationType, parse
from websockets.asyncio.client import connect

from tests.demo_server import DemoServer, demo_server

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```graphql\n(.*?)```(?:\s*```json\n(.*?)```)?", re.DOTALL)


@dataclass(frozen=True)
class Example:
    where: str
    operation: str  # its name
    kind: OperationType
    document: str
    variables: dict[str, Any]


def _examples() -> list[Example]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            document, variables = match.group(1), match.group(2)
            line = text[: match.start()].count("\n") + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            for definition in parse(document).definitions:
                assert isinstance(definition, OperationDefinitionNode), where
                assert definition.name is not None, f"{where}: name every example operation"
                found.append(
                    Example(
                        where,
                        definition.name.value,
                        definition.operation,
                        document,
                        json.loads(variables) if variables else {},
                    )
                )
    return found


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    with demo_server(tmp_path_factory.mktemp("docs-demo")) as server:
        yield server


def test_the_docs_hold_examples_of_every_kind() -> None:
    kinds = {example.kind for example in EXAMPLES}
    assert kinds == {OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION}


def _payload_errors(value: Any) -> list[Any]:
    """The `errors` lists of mutation payloads anywhere in an answer."""
    if isinstance(value, dict):
        found = list(value.get("errors") or []) if "errors" in value else []
        return found + [e for v in value.values() for e in _payload_errors(v)]
    if isinstance(value, list):
        return [e for v in value for e in _payload_errors(v)]
    return []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.where} {e.operation}")
def test_the_example_runs(demo: DemoServer, example: Example) -> None:
    if example.kind is OperationType.SUBSCRIPTION:
        asyncio.run(_subscribe(demo, example))
        return
    response = httpx.post(
        f"{demo.url}/graphql",
        json={
            "query": example.document,
            "variables": example.variables,
            "operationName": example.operation,
        },
        headers={"Authorization": f"Bearer {demo.key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert not _payload_errors(body["data"]), body["data"]


async def _subscribe(demo: DemoServer, example: Example) -> None:
    url = demo.url.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {demo.key}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {
            "query": example.document,
            "variables": example.variables,
            "operationName": example.operation,
        }
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        try:
            async with asyncio.timeout(1):
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] == "next", message
                    assert "errors" not in message["payload"], message
        except TimeoutError:
            pass  # a second without an error: subscribed
