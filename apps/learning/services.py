"""The writes of the learning loop, in one place (each lives beside the code it belongs to).

Every one is ``@transaction.atomic`` with its audit entry in the same transaction.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from apps.audit.services import Actor, audit_record

from .models import LearningSettings
from .ranking import risk_model_train, risk_scores_refresh
from .retention import decisions_prune
from .sampling import shadow_sample_take, shadow_samples_label
from .thresholds import suggestion_apply, suggestion_dismiss, suggestions_generate

__all__ = [
    "decisions_prune",
    "learning_settings_update",
    "risk_model_train",
    "risk_scores_refresh",
    "shadow_sample_take",
    "shadow_samples_label",
    "suggestion_apply",
    "suggestion_dismiss",
    "suggestions_generate",
]


@transaction.atomic
def learning_settings_update(*, settings: LearningSettings, changed: list[str], actor: Actor) -> None:
    """Save the settings row (pk 1) and audit which knobs moved to what."""
    settings.pk = 1
    settings.save()
    values = {name: getattr(settings, name) for name in changed}
    audit_record(
        action="learning_settings.changed",
        actor=actor,
        object_type="learning_settings",
        object_id=1,
        data={k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()},
    )
