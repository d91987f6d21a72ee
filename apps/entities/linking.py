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

from collections.abc import Iterable, Mapping

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from apps.bulk import id_array

from .documents_sql import DOCUMENT_STATEMENTS

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
                   AND job.external_id = f2.job_ref AND job.object_type = 'job'
              WHERE {scope}) s
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
                       ON p.source_id = x2.source_id AND p.external_id = x2.project_ref
                  WHERE {{scope}}) s
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
              LEFT JOIN entities_vendor v ON v.source_id = x2.source_id AND v.external_id = x2.vendor_ref
              WHERE {scope}) s
        WHERE x.id = s.id AND x.vendor_id IS DISTINCT FROM s.new_id
        RETURNING x.id
        """,
    ),
    # Documents processed by AI tools, by the references they carry, then by exact names.
    *DOCUMENT_STATEMENTS,
]


# A sync's linking (``touched`` given) considers only the rows of the large child tables whose link can
# have moved: those the sync inserted or changed, those not linked yet (a parent that arrived after its
# child, a run killed between its pages and its linking), and money charged to a job whose project this
# pass or the sync changed. Nothing else a sync writes can move them: a parent's key is never updated and
# deleting a parent does not unlink its children; merges, which do move them, run the full pass.
_SCOPES: dict[str, tuple[str, str, str, str]] = {
    # statement: (entity key of its rows, its table, the alias its statement gives it, the rows' ids)
    "financial_line_project": (
        "financial_line",
        "entities_financialline",
        "f2",
        """SELECT unnest(%(ids)s::bigint[])
           UNION ALL SELECT id FROM entities_financialline WHERE project_id IS NULL
           UNION ALL SELECT f3.id FROM entities_sourceobject j
                     JOIN entities_financialline f3
                          ON f3.source_id = j.connection_id AND f3.job_ref = j.external_id
                     WHERE j.id = ANY(%(jobs)s::bigint[])""",
    ),
    **{
        f"{key}_project": (
            key,
            table,
            "x2",
            f"""SELECT unnest(%(ids)s::bigint[])
                UNION ALL SELECT id FROM {table} WHERE project_id IS NULL""",  # noqa: S608
        )
        for key, table in (
            ("milestone", "entities_milestone"),
            ("change_order", "entities_changeorder"),
            ("submittal", "entities_submittal"),
        )
    },
    "submittal_vendor": (
        "submittal",
        "entities_submittal",
        "x2",
        """SELECT unnest(%(ids)s::bigint[])
           UNION ALL SELECT id FROM entities_submittal WHERE vendor_id IS NULL""",
    ),
}
# What each whole-table crosswalk statement reads, by change-set key. A sync's linking (``touched`` given)
# skips a statement none of whose inputs it wrote: its result cannot have moved (a CRM pull cannot move a
# job's project, a Procore pull a client's owner). ``project_client`` also runs when ``customer_client`` or
# ``job_project`` moved a row in the same pass; ``owner_user`` reads the users table, which no sync writes,
# and always runs. Writers other than syncs (webhooks, merges, imports, the id sweep's tombstones) link
# without ``touched``, or with their own, so a row a killed run stored unlinked is linked by the next
# publish touching the same entities or by any of those.
_INPUTS: dict[str, frozenset[str]] = {
    "client_owner": frozenset({"client", "crm_owner"}),
    "customer_client": frozenset({"client", "source_object"}),
    "job_project": frozenset({"project", "source_object"}),
    "project_client": frozenset({"project", "source_object"}),
}

# Beyond this many rows a scoped statement is slower than the whole-table one (a first sync, a bulk change):
# at 10k projects, linking the 234k money rows of a first sync took 7.8 s scoped and 5.1 s whole-table.
SCOPED_MAX = 20_000

# Links a child can take the moment it is inserted (model label -> (column, key field, expression over the
# inserted row ``v`` and its connection ``%(source)s``)), the same rule as its statement above: a first sync
# then writes each child once instead of inserting it and updating it again here. Updates are left to the
# statements, which also correct anything these could not know yet (a parent that arrives later).
INSERT_LINKS: dict[str, list[tuple[str, str, str]]] = {
    **{
        label: [
            (
                "project_id",
                "project_ref",
                "(SELECT COALESCE(p.merged_into_id, p.id) FROM entities_project p"
                " WHERE p.source_id = %(source)s AND p.external_id = v.project_ref)",
            )
        ]
        for label in ("entities.Milestone", "entities.ChangeOrder")
    },
    "entities.Submittal": [
        (
            "project_id",
            "project_ref",
            "(SELECT COALESCE(p.merged_into_id, p.id) FROM entities_project p"
            " WHERE p.source_id = %(source)s AND p.external_id = v.project_ref)",
        ),
        (
            "vendor_id",
            "vendor_ref",
            "(SELECT o.id FROM entities_vendor o"
            " WHERE o.source_id = %(source)s AND o.external_id = v.vendor_ref)",
        ),
    ],
}


# Crosswalk links filled at once after which the crosswalk's statistics are refreshed: the statements
# derived from it (a project's client) otherwise plan as nested loops on "no row has a project yet".
ANALYZE_AFTER_LINKS = 500


@transaction.atomic
def link_entities(
    changes: dict[str, set[int]] | None = None, *, touched: Mapping[str, Iterable[int]] | None = None
) -> dict[str, int]:
    """Run every exact-key link; return how many rows each changed, adding their ids to ``changes``.

    ``touched``: the ids (by entity key) a sync just inserted or changed, when every earlier write was linked
    already; the large child tables are then linked only where that can change anything (``_SCOPES``).
    """
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    scoped = None if touched is None else {key: sorted(ids) for key, ids in touched.items() if ids}
    counts: dict[str, int] = {}
    relinked_jobs: list[int] = []
    with connection.cursor() as cursor:
        # Without any document (no AI tool connected) its six statements are one cheap question instead.
        cursor.execute("SELECT EXISTS (SELECT 1 FROM entities_document)")
        (has_documents,) = cursor.fetchone() or (False,)
        for name, key, sql in _STATEMENTS:
            if name.startswith("document_") and not has_documents:
                continue
            if scoped is not None and name in _INPUTS and not _INPUTS[name] & scoped.keys():
                moved = counts.get("customer_client", 0) + counts.get("job_project", 0)
                if name != "project_client" or not moved:
                    counts[name] = 0
                    continue
            scope, params = "TRUE", None
            if scoped is not None and name in _SCOPES:
                own, _table, alias, rows = _SCOPES[name]
                own_ids = scoped.get(own, [])
                jobs = sorted({*scoped.get("source_object", []), *relinked_jobs})
                if len(own_ids) + len(jobs) <= SCOPED_MAX:
                    # The rows not linked yet and the money of relinked jobs count too (a first sync
                    # whose money arrived before its projects): counted only up to the limit.
                    scope_params = {"ids": id_array(own_ids), "jobs": id_array(jobs)}
                    cursor.execute(
                        f"SELECT count(*) FROM ({rows} LIMIT {SCOPED_MAX + 1}) r",  # noqa: S608
                        scope_params,
                    )
                    (count,) = cursor.fetchone() or (0,)
                    if count <= SCOPED_MAX:
                        scope, params = f"{alias}.id = ANY(ARRAY({rows}))", scope_params
            cursor.execute(sql.replace("{users}", users).replace("{scope}", scope), params)
            ids = [row[0] for row in cursor]  # row by row: a first sync relinks every money line
            counts[name] = len(ids)
            if name == "job_project":
                relinked_jobs = ids
            if changes is not None and key is not None and ids:
                changes.setdefault(key, set()).update(ids)
            if (
                name == "job_project"
                and counts["customer_client"] + counts["job_project"] >= ANALYZE_AFTER_LINKS
            ):
                cursor.execute("ANALYZE entities_sourceobject")
            elif name in _SCOPES and len(ids) >= ANALYZE_AFTER_LINKS:
                # Statistics taken when the rows were inserted say "no row is linked": scoped passes
                # would then read the whole table for the unlinked ones.
                cursor.execute(f"ANALYZE {_SCOPES[name][1]}")
    return counts
