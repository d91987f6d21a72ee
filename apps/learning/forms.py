from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.utils import timezone

from apps.rules.models import Rule

from .misses import SUBJECT_TYPES, can_report, candidate_label, find_subjects, subject_label
from .models import ReportedMiss


class MissForm(forms.Form):
    """Report a miss: which subject, what was done about it, when it should have been escalated."""

    subject_type = forms.ChoiceField(
        label="What was missed", choices=[(s, s.replace("_", " ").capitalize()) for s in SUBJECT_TYPES]
    )
    subject_id = forms.CharField(
        max_length=300,
        label="Which one",
        help_text="Its number or name as your systems show it: a project's number or name, a change "
        "order's or submittal's number (after its project's number when several share it: P-104 CO-7), "
        "a client's name, a document's id in the tool that read it; or Fulcrum's number as #123. "
        "Filled in when a link brought you here.",
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

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.subject_label = ""
        self.fields["rule"].label_from_instance = lambda r: f"{r.key} — {r.name}"  # type: ignore[attr-defined]
        self.fields["rule"].empty_label = "any rule of its kind"  # type: ignore[attr-defined]

    def clean_missed_at(self) -> dt.date | None:
        day: dt.date | None = self.cleaned_data.get("missed_at")
        if day is not None and day > timezone.localdate():
            raise forms.ValidationError("This day is still to come: a miss is about something that happened.")
        return day

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        subject_type, text = data.get("subject_type"), data.get("subject_id")
        if not (subject_type and text):
            return data
        words = subject_type.replace("_", " ")
        found = find_subjects(subject_type, text, self.user)
        if len(found) == 1:
            data["subject_id"] = found[0].pk
            if can_report(self.user, subject_type, found[0]):  # never name what the user may not see
                self.subject_label = subject_label(subject_type, found[0])
        elif not found:
            # Bare digits may be a number in the person's own systems: only "#123" is Fulcrum's number alone.
            given = text.strip()
            self.add_error(
                "subject_id",
                f"Fulcrum has no {words} {given}."
                if given.startswith("#")
                else f"No {words} you may report on is numbered or named “{given}”.",
            )
        else:
            shown = "; ".join(candidate_label(subject_type, s) for s in found[:5])
            more = " and more" if len(found) > 5 else ""
            self.add_error(
                "subject_id",
                f"Several {words}s match “{text.strip()}”: {shown}{more}. Give Fulcrum's number, e.g. "
                f"#{found[0].pk}.",
            )
        return data
