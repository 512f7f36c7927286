"""`schema.graphql` is the contract integrators read: it must match the code."""

from __future__ import annotations

from pathlib import Path

from resolvers.schema import schema_sdl

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_schema_graphql_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_sdl(), (
        "schema.graphql is stale: run `usagegraph export-schema -o schema.graphql`"
    )


def test_contract_names_are_present() -> None:
    sdl = schema_sdl()
    for name in (
        "viewer:",
        "applications:",
        "application(id: ID!)",
        "createApplication(",
        "createApiKey(",
        "revokeApiKey(",
        "createCreditPool(",
        "purchaseCredits(",
        "upsertEndUsers(",
        "allocateCredits(",
        "releaseCredits(",
        "consumeCredits(",
        "input EndUserRef",
        "type UserError",
        "enum ErrorCode",
    ):
        assert name in sdl, name
