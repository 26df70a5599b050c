"""Review console: users, their sessions, radiologists' reviews and corrected report versions.

`reviews` is append-only like `audit_events` (triggers refuse UPDATE and DELETE): every
confirmation or correction is a label the node learns from, so none may be rewritten.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY_PG = """
CREATE OR REPLACE FUNCTION reviews_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'reviews is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER reviews_no_update_delete BEFORE UPDATE OR DELETE ON reviews
    FOR EACH ROW EXECUTE FUNCTION reviews_append_only();
"""
APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews "
    "BEGIN SELECT RAISE(ABORT, 'reviews is append-only: UPDATE refused'); END",
    "CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews "
    "BEGIN SELECT RAISE(ABORT, 'reviews is append-only: DELETE refused'); END",
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_user_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_user_sessions_token_sha256")),
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_sessions_expires_at"), ["expires_at"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_user_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "report_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("analysis_job_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("supersedes_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["analysis_job_id"], ["jobs.id"],
                                name=op.f("fk_report_versions_analysis_job_id_jobs")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"],
                                name=op.f("fk_report_versions_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_versions")),
    )
    with op.batch_alter_table("report_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_versions_analysis_job_id"),
                              ["analysis_job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_report_versions_study_instance_uid"),
                              ["study_instance_uid"], unique=False)

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("finding_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=True),
        sa.Column("node_value", sa.String(length=32), nullable=True),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("corrected_value", sa.String(length=32), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_reviews_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_study_instance_uid"),
                              ["study_instance_uid"], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(APPEND_ONLY_PG)
    elif dialect == "sqlite":
        for statement in APPEND_ONLY_SQLITE:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS reviews_no_update_delete ON reviews")
        op.execute("DROP FUNCTION IF EXISTS reviews_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS reviews_no_update")
        op.execute("DROP TRIGGER IF EXISTS reviews_no_delete")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_reviews_job_id"))
        batch_op.drop_index(batch_op.f("ix_reviews_at"))
    op.drop_table("reviews")
    with op.batch_alter_table("report_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_versions_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_report_versions_analysis_job_id"))
    op.drop_table("report_versions")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_user_sessions_expires_at"))
    op.drop_table("user_sessions")
    op.drop_table("users")
