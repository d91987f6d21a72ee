from django.db import models


class MetricsSnapshot(models.Model):
    """The database-derived metrics, computed by a worker every few seconds and read by ``/metrics``.

    Counting escalations, outbox rows and pending evaluations on every scrape would put those queries
    on the scraper's clock; one row read keeps a scrape well under 50 ms. ``state`` holds what the next
    snapshot continues from (the last decision id counted, the running totals).
    """

    name = models.CharField(max_length=40, unique=True)
    taken_at = models.DateTimeField()
    data = models.JSONField(default=dict)
    state = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{self.name} @ {self.taken_at:%H:%M:%S}"
