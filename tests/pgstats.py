"""What PostgreSQL counted of this transaction's work on a table (``pg_stat_xact_user_tables``)."""

from __future__ import annotations

from django.db import connection, models


def updates_in_place(model: type[models.Model]) -> tuple[int, int]:
    """This transaction's updates of ``model``'s table so far: all of them, and those in place (heap-only:
    the new row version on the old one's page, no index written)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, 0)
