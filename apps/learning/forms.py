from __future__ import annotations

from typing import Any

from django import forms

from apps.rules.models import Rule

from .misses import SUBJECT_TYPES
from .models import ReportedMiss


class MissForm(forms.Form):
    """Report a miss: which subject, what was done about it, when it should have been escalated."""

    subject_type = forms.ChoiceField(choices=[(s, s.replace("_", " ")) for s in SUBJECT_TYPES])
    subject_id = forms.IntegerField(min_value=1, label="Subject id")
    outcome = forms.ChoiceField(
        choices=ReportedMiss.Outcome.choices, help_text="What was done about it once it was found"
    )
    missed_at = forms.DateField(
        required=False,
        label="Should have been escalated on",
        help_text="Empty: today. Judged on the facts stored as of that day.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    rule = forms.ModelChoiceField(
        queryset=Rule.objects.order_by("key"),
        required=False,
        to_field_name="key",
        help_text="The rule that should have caught it; empty: every rule of the subject type",
    )
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rule"].label_from_instance = lambda r: f"{r.key} — {r.name}"  # type: ignore[attr-defined]
