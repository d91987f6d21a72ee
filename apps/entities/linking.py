"""Entity resolution by exact keys: set-based UPDATEs that link synced records to each other.

What is matched, all exactly (equal keys, no similarity scores):

* a client's owner: the CRM owner of the same connection whose id is the client's ``owner_ref``;
* a CRM owner's Fulcrum login: the one user whose email equals the owner's, ignoring case;
* an accounting customer's client: the one live client whose (lower-cased) domain equals the customer's
  ``match_key`` (method ``domain``);
* an accounting job's project: the one live project whose ``accounting_ref`` is the job's id (``origin_id``),
  else the one whose number equals the job's ``match_key`` (``project_number``);
* a project's client: the client of its job's parent customer;
* money, milestones, change orders and submittals: the record their ``*_ref`` names in the same connection.

A record pointing at a project merged into another (entity resolution) is linked to the survivor; merged
clients and projects are never matched by key. A key that matches several candidates links none (ambiguity
is left for a person). Crosswalk rows whose ``match_method`` is anything else (set by a person or by
``resolution.py``'s fuzzy matcher) are never touched here. Each statement only writes rows whose value
changes, so running this twice changes nothing the second time.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection, transaction

# (name, change-set key of the rows it updates or None, SQL). Order matters: the crosswalk is resolved
# before what is derived from it.
_STATEMENTS: list[tuple[str, str | None, str]] = [
    (
        "client_owner",
        "client",
        """
        UPDATE entities_client c SET owner_id = s.new_id
        FROM (SELECT c2.id, o.id AS new_id FROM entities_client c2
              LEFT JOIN entities_crmowner o ON o.source_id = c2.source_id AND o.external_id = c2.owner_ref
                   AND o.deleted_at IS NULL) s
        WHERE c.id = s.id AND c.owner_id IS DISTINCT FROM s.new_id
        RETURNING c.id
        """,
    ),
    (
        "owner_user",
        "crm_owner",
        # Only ever sets: an owner whose email no longer matches keeps the login a person may rely on.
        """
        UPDATE entities_crmowner o SET user_id = u.id
        FROM (SELECT lower(email) AS email, min(id) AS id FROM {users} WHERE email <> ''
              GROUP BY lower(email) HAVING count(*) = 1) u
        WHERE o.email <> '' AND lower(o.email) = u.email AND o.user_id IS DISTINCT FROM u.id
        RETURNING o.id
        """,
    ),
    (
        "customer_client",
        None,
        """
        UPDATE entities_sourceobject so
        SET client_id = s.new_id, match_method = CASE WHEN s.new_id IS NULL THEN '' ELSE 'domain' END
        FROM (SELECT so2.id, c.id AS new_id FROM entities_sourceobject so2
              LEFT JOIN (SELECT domain, min(id) AS id FROM entities_client
                         WHERE deleted_at IS NULL AND merged_into_id IS NULL AND domain <> ''
                         GROUP BY domain HAVING count(*) = 1) c
                   ON c.domain = so2.match_key
              WHERE so2.object_type = 'customer' AND so2.match_method IN ('', 'domain')) s
        WHERE so.id = s.id AND so.client_id IS DISTINCT FROM s.new_id
        RETURNING so.id
        """,
    ),
    (
        "job_project",
        None,
        """
        UPDATE entities_sourceobject so SET project_id = s.new_id, match_method = s.method
        FROM (SELECT so2.id, COALESCE(r.id, n.id) AS new_id,
                     CASE WHEN r.id IS NOT NULL THEN 'origin_id'
                          WHEN n.id IS NOT NULL THEN 'project_number' ELSE '' END AS method
              FROM entities_sourceobject so2
              LEFT JOIN (SELECT accounting_ref, min(id) AS id FROM entities_project
                         WHERE deleted_at IS NULL AND merged_into_id IS NULL AND accounting_ref <> ''
                         GROUP BY accounting_ref HAVING count(*) = 1) r ON r.accounting_ref = so2.external_id
              LEFT JOIN (SELECT number, min(id) AS id FROM entities_project
                         WHERE deleted_at IS NULL AND merged_into_id IS NULL AND number <> ''
                         GROUP BY number HAVING count(*) = 1) n ON n.number = so2.match_key
              WHERE so2.object_type = 'job' AND so2.match_method IN ('', 'origin_id', 'project_number')) s
        WHERE so.id = s.id AND (so.project_id IS DISTINCT FROM s.new_id OR so.match_method <> s.method)
        RETURNING so.id
        """,
    ),
    (
        "project_client",
        "project",
        # Only sets: a project whose job is not (yet) linked keeps the client it has.
        """
        UPDATE entities_project p SET client_id = s.client_id
        FROM (SELECT DISTINCT ON (job.project_id) job.project_id, cust.client_id
              FROM entities_sourceobject job
              JOIN entities_sourceobject cust ON cust.connection_id = job.connection_id
                   AND cust.external_id = job.parent_ref AND cust.object_type = 'customer'
              WHERE job.object_type = 'job' AND job.deleted_at IS NULL AND job.project_id IS NOT NULL
                AND cust.client_id IS NOT NULL
              ORDER BY job.project_id, job.id) s
        WHERE p.id = s.project_id AND p.client_id IS DISTINCT FROM s.client_id
        RETURNING p.id
        """,
    ),
    (
        "financial_line_project",
        "financial_line",
        """
        UPDATE entities_financialline f SET project_id = s.new_id
        FROM (SELECT f2.id, job.project_id AS new_id FROM entities_financialline f2
              LEFT JOIN entities_sourceobject job ON job.connection_id = f2.source_id
                   AND job.external_id = f2.job_ref AND job.object_type = 'job') s
        WHERE f.id = s.id AND f.project_id IS DISTINCT FROM s.new_id
        RETURNING f.id
        """,
    ),
    *[
        (
            f"{key}_project",
            key,
            f"""
            UPDATE {table} x SET project_id = s.new_id
            FROM (SELECT x2.id, COALESCE(p.merged_into_id, p.id) AS new_id FROM {table} x2
                  LEFT JOIN entities_project p
                       ON p.source_id = x2.source_id AND p.external_id = x2.project_ref) s
            WHERE x.id = s.id AND x.project_id IS DISTINCT FROM s.new_id
            RETURNING x.id
            """,  # noqa: S608 - fixed table names
        )
        for key, table in (
            ("milestone", "entities_milestone"),
            ("change_order", "entities_changeorder"),
            ("submittal", "entities_submittal"),
        )
    ],
    (
        "submittal_vendor",
        "submittal",
        """
        UPDATE entities_submittal x SET vendor_id = s.new_id
        FROM (SELECT x2.id, v.id AS new_id FROM entities_submittal x2
              LEFT JOIN entities_vendor v ON v.source_id = x2.source_id AND v.external_id = x2.vendor_ref) s
        WHERE x.id = s.id AND x.vendor_id IS DISTINCT FROM s.new_id
        RETURNING x.id
        """,
    ),
]


# Crosswalk links filled at once after which the crosswalk's statistics are refreshed: the statements
# derived from it (a project's client) otherwise plan as nested loops on "no row has a project yet".
ANALYZE_AFTER_LINKS = 500


@transaction.atomic
def link_entities(changes: dict[str, set[int]] | None = None) -> dict[str, int]:
    """Run every exact-key link; return how many rows each changed, adding their ids to ``changes``."""
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    counts: dict[str, int] = {}
    with connection.cursor() as cursor:
        for name, key, sql in _STATEMENTS:
            cursor.execute(sql.replace("{users}", users))
            ids = [row[0] for row in cursor.fetchall()]
            counts[name] = len(ids)
            if changes is not None and key is not None and ids:
                changes.setdefault(key, set()).update(ids)
            if (
                name == "job_project"
                and counts["customer_client"] + counts["job_project"] >= ANALYZE_AFTER_LINKS
            ):
                cursor.execute("ANALYZE entities_sourceobject")
    return counts
