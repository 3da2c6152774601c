"""replicas: batch leases, the shared registry's version counter, and where each expert comes from

Revision ID: 0005_replicas
Revises: 0004_key_roles_idempotency
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_replicas"
down_revision = "0004_key_roles_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_batches_lease_expires_at"), ["lease_expires_at"], unique=False)
    # "config" (a replica's config file), "api" (registered through the gateway: every replica
    # serves it) or "deleted" (a tombstone: deleted through the gateway). Rows written before
    # this revision came from config files.
    with op.batch_alter_table("experts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="config"))
    registry_state = op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(registry_state, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("registry_state")
    with op.batch_alter_table("experts", schema=None) as batch_op:
        batch_op.drop_column("origin")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_lease_expires_at"))
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
