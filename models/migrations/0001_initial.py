from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint

from enum import StrEnum


# The values as they stood when this migration was written (a later change of the live
# enums is a later migration).
class BalanceStatus(StrEnum):
    OK = "OK"
    LOW = "LOW"
    EXHAUSTED = "EXHAUSTED"


class LedgerEntryKind(StrEnum):
    PURCHASE = "PURCHASE"
    ALLOCATE = "ALLOCATE"
    RELEASE = "RELEASE"
    CONSUME = "CONSUME"
    EXPIRE = "EXPIRE"
    ADJUST = "ADJUST"


class ApiKeyRole(StrEnum):
    ADMIN = "ADMIN"
    READ = "READ"


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Organization',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'organization', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Application',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='applications', on_delete=OnDelete.RESTRICT)),
                ('name', fields.CharField(max_length=200)),
                ('plan', fields.CharField(null=True, max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'application', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApiKey',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key_id', fields.CharField(unique=True, max_length=32)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='api_keys', on_delete=OnDelete.RESTRICT)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', null=True, db_constraint=True, to_field='id', related_name='api_keys', on_delete=OnDelete.RESTRICT)),
                ('name', fields.CharField(max_length=200)),
                ('role', fields.CharEnumField(description='ADMIN: ADMIN\nREAD: READ', enum_type=ApiKeyRole, max_length=16)),
                ('secret_hash', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_key', 'app': 'models', 'pk_attr': 'id', 'table_description': 'An API key `ug_<key_id>_<secret>`: the key id is public, the secret is kept as a hash.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CreditPool',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='pools', on_delete=OnDelete.RESTRICT)),
                ('key', fields.CharField(max_length=64)),
                ('name', fields.CharField(max_length=200)),
                ('purchased', fields.BigIntField(default=0)),
                ('allocated', fields.BigIntField(default=0)),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('end_user_remaining', fields.BigIntField(default=0)),
                ('low_balance_threshold', fields.BigIntField(null=True)),
                ('end_user_low_balance_threshold', fields.BigIntField(null=True)),
                ('version', fields.BigIntField(default=0)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'credit_pool', 'app': 'models', 'unique_together': (('application', 'key'),), 'constraints': [CheckConstraint(check='purchased >= 0 AND allocated >= 0 AND used >= 0 AND expired >= 0 AND end_user_remaining >= 0', name='credit_pool_counters_non_negative'), CheckConstraint(check='purchased <= 2147483647 AND allocated <= 2147483647', name='credit_pool_totals_fit_int'), CheckConstraint(check='purchased - used - expired - end_user_remaining >= 0', name='credit_pool_unallocated_non_negative')], 'pk_attr': 'id', 'table_description': 'Counters of one pool. `end_user_remaining` is Σ End User remaining, so'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CreditPack',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('pool', fields.ForeignKeyField('models.CreditPool', source_field='pool_id', db_constraint=True, to_field='id', related_name='packs', on_delete=OnDelete.RESTRICT)),
                ('credits', fields.BigIntField()),
                ('unallocated', fields.BigIntField()),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('purchased_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('package', fields.CharField(null=True, max_length=200)),
                ('reference', fields.CharField(null=True, max_length=200)),
                ('swept_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'credit_pack', 'app': 'models', 'constraints': [CheckConstraint(check='credits > 0 AND unallocated >= 0 AND used >= 0 AND expired >= 0 AND unallocated + used + expired <= credits', name='credit_pack_counters_valid')], 'indexes': [Index(fields=['pool_id', 'expires_at']), Index(fields=['expires_at', 'swept_at'])], 'pk_attr': 'id', 'table_description': 'A lot: credits bought at once. credits = unallocated + Σ allocation remaining + used'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='EndUser',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='end_users', on_delete=OnDelete.RESTRICT)),
                ('external_id', fields.CharField(max_length=200)),
                ('name', fields.CharField(null=True, max_length=200)),
                ('email', fields.CharField(null=True, max_length=320)),
                ('metadata', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'end_user', 'app': 'models', 'unique_together': (('application', 'external_id'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Allocation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('end_user', fields.ForeignKeyField('models.EndUser', source_field='end_user_id', db_constraint=True, to_field='id', related_name='allocations', on_delete=OnDelete.RESTRICT)),
                ('pool', fields.ForeignKeyField('models.CreditPool', source_field='pool_id', db_constraint=True, to_field='id', related_name='allocations', on_delete=OnDelete.RESTRICT)),
                ('lot', fields.ForeignKeyField('models.CreditPack', source_field='lot_id', db_constraint=True, to_field='id', related_name='allocations', on_delete=OnDelete.RESTRICT)),
                ('allocated', fields.BigIntField(default=0)),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('remaining', fields.BigIntField(default=0)),
            ],
            options={'table': 'allocation', 'app': 'models', 'unique_together': (('end_user', 'lot'),), 'constraints': [CheckConstraint(check='allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0 AND remaining = allocated - used - expired', name='allocation_counters_valid')], 'indexes': [Index(fields=['end_user_id', 'pool_id']), Index(fields=['lot_id', 'remaining'])], 'pk_attr': 'id', 'table_description': 'Credits of one lot held by one End User (net of releases).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='EndUserBalance',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('end_user', fields.ForeignKeyField('models.EndUser', source_field='end_user_id', db_constraint=True, to_field='id', related_name='balances', on_delete=OnDelete.RESTRICT)),
                ('pool', fields.ForeignKeyField('models.CreditPool', source_field='pool_id', db_constraint=True, to_field='id', related_name='end_user_balances', on_delete=OnDelete.RESTRICT)),
                ('allocated', fields.BigIntField(default=0)),
                ('used', fields.BigIntField(default=0)),
                ('expired', fields.BigIntField(default=0)),
                ('remaining', fields.BigIntField(default=0)),
                ('low_balance_threshold', fields.BigIntField(null=True)),
                ('status', fields.CharEnumField(default=BalanceStatus.EXHAUSTED, description='OK: OK\nLOW: LOW\nEXHAUSTED: EXHAUSTED', enum_type=BalanceStatus, max_length=16)),
                ('version', fields.BigIntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'end_user_balance', 'app': 'models', 'unique_together': (('end_user', 'pool'),), 'constraints': [CheckConstraint(check='allocated >= 0 AND used >= 0 AND expired >= 0 AND remaining >= 0 AND remaining = allocated - used - expired', name='end_user_balance_counters_valid'), CheckConstraint(check='allocated <= 2147483647', name='end_user_balance_total_fits_int')], 'indexes': [Index(fields=['pool_id', 'remaining'])], 'pk_attr': 'id', 'table_description': 'The counters of an End User in one pool: remaining = allocated - used - expired.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IdempotencyRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='idempotency_records', on_delete=OnDelete.RESTRICT)),
                ('key', fields.CharField(max_length=255)),
                ('operation', fields.CharField(max_length=64)),
                ('request_hash', fields.CharField(max_length=64)),
                ('response', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'idempotency_record', 'app': 'models', 'unique_together': (('application', 'key'),), 'indexes': [Index(fields=['created_at'])], 'pk_attr': 'id', 'table_description': 'The result of a write applied under an idempotency key (per application, kept ≥ 30 days).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LedgerEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=False, to_field='id', related_name='ledger_entries', on_delete=OnDelete.RESTRICT)),
                ('pool', fields.ForeignKeyField('models.CreditPool', source_field='pool_id', db_constraint=False, to_field='id', related_name='ledger_entries', on_delete=OnDelete.RESTRICT)),
                ('lot', fields.ForeignKeyField('models.CreditPack', source_field='lot_id', db_constraint=False, to_field='id', related_name='ledger_entries', on_delete=OnDelete.RESTRICT)),
                ('end_user', fields.ForeignKeyField('models.EndUser', source_field='end_user_id', null=True, db_constraint=False, to_field='id', related_name='ledger_entries', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='PURCHASE: PURCHASE\nALLOCATE: ALLOCATE\nRELEASE: RELEASE\nCONSUME: CONSUME\nEXPIRE: EXPIRE\nADJUST: ADJUST', enum_type=LedgerEntryKind, max_length=16)),
                ('amount', fields.BigIntField()),
                ('feature', fields.CharField(null=True, max_length=100)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('actor', fields.CharField(null=True, max_length=64)),
                ('usage_event_id', fields.BigIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'ledger_entry', 'app': 'models', 'indexes': [Index(fields=['pool_id', 'created_at']), Index(fields=['end_user_id', 'pool_id', 'created_at']), Index(fields=['application_id', 'occurred_at'])], 'pk_attr': 'id', 'table_description': 'One movement of credits of one lot. Signs: PURCHASE and ALLOCATE positive, RELEASE,'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OutboxEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=False, to_field='id', related_name='outbox_events', on_delete=OnDelete.RESTRICT)),
                ('topic', fields.CharField(max_length=32)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('published_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbox_event', 'app': 'models', 'indexes': [Index(fields=['published_at', 'id'])], 'pk_attr': 'id', 'table_description': 'A balance or alert event written in the transaction that caused it. The relay'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsageEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=False, to_field='id', related_name='usage_events', on_delete=OnDelete.RESTRICT)),
                ('pool', fields.ForeignKeyField('models.CreditPool', source_field='pool_id', db_constraint=False, to_field='id', related_name='usage_events', on_delete=OnDelete.RESTRICT)),
                ('end_user', fields.ForeignKeyField('models.EndUser', source_field='end_user_id', db_constraint=False, to_field='id', related_name='usage_events', on_delete=OnDelete.RESTRICT)),
                ('credits', fields.BigIntField()),
                ('feature', fields.CharField(max_length=100)),
                ('idempotency_key', fields.CharField(null=True, max_length=255)),
                ('metadata', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'usage_event', 'app': 'models', 'indexes': [Index(fields=['application_id', 'occurred_at']), Index(fields=['end_user_id', 'occurred_at'])], 'pk_attr': 'id', 'table_description': 'One consumption as the integrator sent it.'},
            bases=['Model'],
        ),
    ]
