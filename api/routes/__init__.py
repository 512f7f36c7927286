"""REST routes beside GraphQL (SPEC §1: export, ingest, health, metrics)."""
