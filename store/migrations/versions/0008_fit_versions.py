"""fit versions per pool: artefacts keyed by pool, pins (`profile use`), refit leases, per-call feedback

Revision ID: 0008_fit_versions
Revises: 0007_feedback
"""
import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0008_fit_versions"
down_revision = "0007_feedback"
branch_labels = None
depends_on = None


def _pool_key(pool: list[str]) -> str:
    # The same function as store.records.pool_key, frozen here: a migration must not change
    # when the code it once ran with does.
    return hashlib.sha256("\n".join(sorted(set(pool))).encode()).hexdigest()[:32]


def upgrade() -> None:
    with op.batch_alter_table("artefacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool_key", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_artefacts_pool_key"), ["pool_key"], unique=False)
    # Existing fits keep the pool they were fitted for (it is in their meta).
    conn = op.get_bind()
    artefacts = sa.table("artefacts", sa.column("id", sa.Integer), sa.column("meta", sa.JSON), sa.column("pool_key", sa.String))
    for row_id, meta in conn.execute(sa.select(artefacts.c.id, artefacts.c.meta)).all():
        meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
        pool = meta.get("pool")
        if isinstance(pool, list) and pool:
            conn.execute(artefacts.update().where(artefacts.c.id == row_id).values(pool_key=_pool_key([str(p) for p in pool])))
    op.create_table(
        "fit_pins",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("pool_key", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "pool_key"),
    )
    op.create_table(
        "refit_state",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("pool_key", sa.String(length=32), nullable=False),
        sa.Column("outcomes_used", sa.Integer(), nullable=False),
        sa.Column("refits", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "pool_key"),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("call_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_column("call_seq")
    op.drop_table("refit_state")
    op.drop_table("fit_pins")
    with op.batch_alter_table("artefacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artefacts_pool_key"))
        batch_op.drop_column("pool_key")
