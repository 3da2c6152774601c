"""api key roles; idempotency keys of batch submits

Revision ID: 0004_key_roles_idempotency
Revises: 0003_gw_batches
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_key_roles_idempotency"
down_revision = "0003_gw_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        # existing keys become `user` keys: nobody gains admin rights by upgrading
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="user"))
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
