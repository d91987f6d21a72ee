"""Webhook receiver: ``POST /webhooks/<slug>/`` verified per vendor, stored in an inbox, processed by Celery.

``schemes`` (signatures and event shapes, pure), ``views`` (the endpoint), ``processing`` (claim, fetch,
version-guarded apply, tombstones, the sweeper) and ``tasks`` (Celery entry points).
"""
