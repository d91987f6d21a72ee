"""The exact-key statements that link documents (see ``apps.entities.documents``); no imports, so
``linking`` can take them without a cycle."""

from __future__ import annotations

_UNIQUE_PROJECT_BY = """(SELECT {column} AS key, min(id) AS id FROM entities_project
    WHERE deleted_at IS NULL AND merged_into_id IS NULL AND {column} <> ''
    GROUP BY {column} HAVING count(*) = 1)"""

# (name, change-set key, SQL): appended to linking's statements, in this order.
DOCUMENT_STATEMENTS: list[tuple[str, str | None, str]] = [
    (
        "document_invoice",
        "document",
        """
        UPDATE entities_document d SET invoice_id = i.id, link_method = 'reference'
        FROM (SELECT external_id, min(id) AS id FROM entities_financialline
              WHERE kind = 'invoice' AND deleted_at IS NULL GROUP BY external_id HAVING count(*) = 1) i
        WHERE d.invoice_ref <> '' AND i.external_id = d.invoice_ref AND d.link_method <> 'manual'
          AND (d.invoice_id IS DISTINCT FROM i.id OR d.link_method <> 'reference')
        RETURNING d.id
        """,
    ),
    (
        "document_project",
        "document",
        f"""
        UPDATE entities_document d SET project_id = s.new_id, link_method = 'reference'
        FROM (SELECT d2.id, COALESCE(n.id, r.id, inv.project_id) AS new_id FROM entities_document d2
              LEFT JOIN {_UNIQUE_PROJECT_BY.format(column="number")} n ON n.key = d2.project_ref
              LEFT JOIN {_UNIQUE_PROJECT_BY.format(column="accounting_ref")} r ON r.key = d2.project_ref
              LEFT JOIN entities_financialline inv ON inv.id = d2.invoice_id
              WHERE d2.link_method <> 'manual') s
        WHERE d.id = s.id AND s.new_id IS NOT NULL
          AND (d.project_id IS DISTINCT FROM s.new_id OR d.link_method <> 'reference')
        RETURNING d.id
        """,  # noqa: S608 - fixed column names
    ),
    (
        "document_change_order",
        "document",
        """
        UPDATE entities_document d SET change_order_id = c.id, link_method = 'reference'
        FROM (SELECT project_id, number, min(id) AS id FROM entities_changeorder
              WHERE deleted_at IS NULL AND number <> '' AND project_id IS NOT NULL
              GROUP BY project_id, number HAVING count(*) = 1) c
        WHERE d.change_order_ref <> '' AND c.project_id = d.project_id AND c.number = d.change_order_ref
          AND d.link_method <> 'manual' AND d.change_order_id IS DISTINCT FROM c.id
        RETURNING d.id
        """,
    ),
    (
        "document_client",
        "document",
        """
        UPDATE entities_document d SET client_id = p.client_id
        FROM entities_project p
        WHERE p.id = d.project_id AND p.client_id IS NOT NULL AND d.link_method <> 'manual'
          AND d.client_id IS DISTINCT FROM p.client_id
        RETURNING d.id
        """,
    ),
    (
        "document_client_name",
        "document",
        """
        UPDATE entities_document d SET client_id = c.id,
            link_method = CASE WHEN d.link_method = '' THEN 'name' ELSE d.link_method END
        FROM (SELECT lower(name) AS key, min(id) AS id FROM entities_client
              WHERE deleted_at IS NULL AND merged_into_id IS NULL AND name <> ''
              GROUP BY lower(name) HAVING count(*) = 1) c
        WHERE d.client_id IS NULL AND d.client_name <> '' AND lower(d.client_name) = c.key
        RETURNING d.id
        """,
    ),
    (
        "document_vendor_name",
        "document",
        """
        UPDATE entities_document d SET vendor_id = v.id,
            link_method = CASE WHEN d.link_method = '' THEN 'name' ELSE d.link_method END
        FROM (SELECT lower(name) AS key, min(id) AS id FROM entities_vendor
              WHERE deleted_at IS NULL AND name <> '' GROUP BY lower(name) HAVING count(*) = 1) v
        WHERE d.vendor_id IS NULL AND d.vendor_name <> '' AND lower(d.vendor_name) = v.key
        RETURNING d.id
        """,
    ),
]
