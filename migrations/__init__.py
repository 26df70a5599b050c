"""Alembic environment and revisions of the node database."""
