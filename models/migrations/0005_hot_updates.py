from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0004_temporary_codes')]

    initial = False

    operations = [
        ops.RemoveIndex(
            model_name='Allocation',
            name=None,
            fields=['lot_id', 'remaining'],
        ),
        ops.AddIndex(
            model_name='Allocation',
            index=Index(fields=['lot_id']),
        ),
        ops.RemoveIndex(
            model_name='EndUserBalance',
            name=None,
            fields=['pool_id', 'remaining'],
        ),
        ops.AddIndex(
            model_name='EndUserBalance',
            index=Index(fields=['pool_id']),
        ),
    ]
