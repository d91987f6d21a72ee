"""Forms of the escalation pages: the action a person takes, and the filters of the lists."""

from __future__ import annotations

from django import forms

from .models import Escalation

Outcome = Escalation.Outcome

# Outcomes a person picks; approved/rejected come from an executive decision, auto_resolved from the system.
RESOLVE_OUTCOMES = (Outcome.ACTIONED, Outcome.NO_ACTION_NEEDED, Outcome.DUPLICATE)
DISMISS_OUTCOMES = (Outcome.FALSE_ALARM, Outcome.DUPLICATE, Outcome.NO_ACTION_NEEDED)


def _choices(outcomes: tuple[Outcome, ...]) -> list[tuple[str, str]]:
    return [(o.value, o.label) for o in outcomes]


class EscalationActionForm(forms.Form):
    """What the act endpoint accepts: ``action``, and for resolve/dismiss an ``outcome``; a note (required
    to add a note). ``confirmed`` repeats the action once the person has seen the confirmation step of an
    approve or reject."""

    ACTIONS = ("acknowledge", "resolve", "dismiss", "approve", "reject", "note")

    action = forms.ChoiceField(choices=[(a, a.capitalize()) for a in ACTIONS])
    outcome = forms.ChoiceField(choices=[("", "—"), *Outcome.choices], required=False)
    note = forms.CharField(required=False, max_length=2000, strip=True)
    confirmed = forms.CharField(required=False, max_length=20)

    def clean(self) -> dict:
        data = super().clean() or {}
        action, outcome = data.get("action"), data.get("outcome")
        if action == "note" and not data.get("note"):
            self.add_error("note", "Write the note to add.")
        if action == "resolve" and outcome not in RESOLVE_OUTCOMES:
            self.add_error(
                "outcome", "Choose how it was resolved: " + ", ".join(o.label for o in RESOLVE_OUTCOMES)
            )
        if action == "dismiss":
            if not outcome:
                data["outcome"] = Outcome.FALSE_ALARM
            elif outcome not in DISMISS_OUTCOMES:
                self.add_error(
                    "outcome", "A dismissal is one of: " + ", ".join(o.label for o in DISMISS_OUTCOMES)
                )
        return data

    def error_text(self) -> str:
        return " ".join(str(message) for errors in self.errors.values() for message in errors)


def resolve_outcome_choices() -> list[tuple[str, str]]:
    return _choices(RESOLVE_OUTCOMES)


def dismiss_outcome_choices() -> list[tuple[str, str]]:
    return _choices(DISMISS_OUTCOMES)


class DashboardFilterForm(forms.Form):
    """The dashboard's GET filters. Invalid values are ignored, not errors: it is a bookmarkable page."""

    route = forms.ChoiceField(choices=[("", "Any route"), *Escalation.Route.choices], required=False)
    severity = forms.ChoiceField(choices=[("", "Any severity"), *Escalation.Severity.choices], required=False)
    owner = forms.IntegerField(required=False, min_value=1)
    client = forms.IntegerField(required=False, min_value=1)

    def values(self) -> dict:
        """The valid filters only (a stale or mistyped one is dropped rather than emptying the page)."""
        self.is_valid()
        return {name: self.cleaned_data.get(name) for name in self.fields if name not in self.errors}


class StatusFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "All"), *Escalation.Status.choices], required=False)

    def value(self) -> str:
        return self.cleaned_data["status"] if self.is_valid() else ""
