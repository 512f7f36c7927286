"""usagegraph domain layer: Tortoise models and the ledger operations."""
