"""Database models, sessions and the append-only audit trail."""
