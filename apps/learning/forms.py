from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from apps.rules.models import Rule

from .misses import SUBJECT_TYPES, subject_label, subject_of
from .models import ReportedMiss


class MissForm(forms.Form):
    """Report a miss: which subject, what was done about it, when it should have been escalated."""

    subject_type = forms.ChoiceField(
        label="What was missed", choices=[(s, s.replace("_", " ").capitalize()) for s in SUBJECT_TYPES]
    )
    subject_id = forms.IntegerField(
        min_value=1,
        label="Its number in Fulcrum",
        help_text="Fulcrum's number for it, as in its address (…/project/123/…); filled in when a link "
        "brought you here",
    )
    outcome = forms.ChoiceField(
        choices=[("", "— choose —"), *ReportedMiss.Outcome.choices],
        help_text="What was done about it once it was found",
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
        help_text="The rule that should have caught it; any rule of its kind when none is chosen",
    )
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rule"].label_from_instance = lambda r: f"{r.key} — {r.name}"  # type: ignore[attr-defined]
        self.fields["rule"].empty_label = "any rule of its kind"  # type: ignore[attr-defined]

    def clean_missed_at(self) -> dt.date | None:
        day: dt.date | None = self.cleaned_data.get("missed_at")
        if day is not None and day > timezone.localdate():
            raise forms.ValidationError("This day is still to come: a miss is about something that happened.")
        return day

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        subject_type, subject_id = data.get("subject_type"), data.get("subject_id")
        if subject_type and subject_id:
            try:
                subject = subject_of(subject_type, subject_id)
            except ObjectDoesNotExist:
                words = subject_type.replace("_", " ")
                self.add_error("subject_id", f"Fulcrum has no {words} numbered {subject_id}.")
            else:
                self.subject_label = subject_label(subject_type, subject)
        return data
