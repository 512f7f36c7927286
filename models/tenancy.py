"""Tenancy: organizations, their applications and the API keys that reach them."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class ApiKeyRole(StrEnum):
    ADMIN = "ADMIN"
    READ = "READ"


class Organization(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "organization"


class Application(Model):
    id = fields.BigIntField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="applications", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=200)
    plan = fields.CharField(max_length=200, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "application"


class ApiKey(Model):
    """An API key `ug_<key_id>_<secret>`: the key id is public, the secret is kept as a hash.

    Without an application the key is organization-scoped."""

    id = fields.BigIntField(primary_key=True)
    key_id = fields.CharField(max_length=32, unique=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="api_keys", on_delete=fields.RESTRICT
    )
    application: fields.ForeignKeyNullableRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="api_keys", null=True, on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=200)
    role = fields.CharEnumField(ApiKeyRole, max_length=16)
    secret_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    # written from each process's memory now and then (models.api_key_use), not per request
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_key"
