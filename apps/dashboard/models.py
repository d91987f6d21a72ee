from django.db import models
from django.utils import timezone


class Heartbeat(models.Model):
    """Liveness of background processes: the beat-scheduled heartbeat task stamps ``worker``."""

    name = models.CharField(max_length=40, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} @ {timezone.localtime(self.beat_at):%H:%M:%S}"
