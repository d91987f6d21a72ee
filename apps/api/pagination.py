from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """``?page=`` and ``?page_size=`` (capped, so one request cannot ask for a whole table)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
