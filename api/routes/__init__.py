"""REST routes beside GraphQL (export, ingest, health, metrics; docs/operations.md)."""
