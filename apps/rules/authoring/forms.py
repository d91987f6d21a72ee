"""The admin form for a rule's draft: every part of the rules file as a field, the condition tree as a
visual editor over a JSON textarea, validated by the same code as ``import_rules``."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from apps.rules.authoring.editor import (
    catalogue_data,
    condition_errors_by_path,
    condition_messages,
    describe,
    fact_groups,
    fact_label,
    normalise_tree,
)
from apps.rules.engine.durations import parse_duration
from apps.rules.engine.ruleset import (
    ACTIONS,
    FIELDS,
    ROUTES,
    SEVERITIES,
    RulesFileError,
    RuleSpec,
    rule_from_dict,
)
from apps.rules.models import Rule, SubjectType

_DEFAULT_WHEN = {"all": [{"fact": "change_order.amount", "op": "gte", "value": 50000}]}
# The rules file's fields the form edits one by one; the key is fixed and the condition has its widget.
_DRAFT_FIELDS = tuple(name for name in FIELDS if name not in ("key", "when"))


class ConditionTreeWidget(forms.Textarea):
    """The condition as JSON in a textarea; ``condition_editor.js`` builds the visual editor over it and
    writes back into it, so the form posts the same thing with or without the script."""

    # The project's template engine, not the form renderer's: the editor's template lives with the admin
    # templates; the textarea inside it is Django's own widget template, rendered by the form renderer.
    editor_template_name = "admin/rules/widgets/condition_tree.html"

    class Media:
        js = ("rules/condition_editor.js",)
        css = {"all": ("rules/condition_editor.css",)}

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"rows": 12, "cols": 90, "class": "rule-when-json", **(attrs or {})})
        self.errors_by_path: dict[str, list[str]] = {}

    def format_value(self, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        context = self.get_context(name, value, attrs)
        context["textarea"] = super().render(name, value, attrs, renderer)
        return mark_safe(render_to_string(self.editor_template_name, context))  # noqa: S308

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        try:
            tree = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            tree = None
        context["widget"].update(
            catalogue=catalogue_data(),
            errors_by_path=self.errors_by_path,
            fact_groups=[
                (prefix, [(f.name, fact_label(f), f) for f in facts]) for prefix, facts in fact_groups()
            ],
            readable=describe(tree) if tree is not None else [],
        )
        return context


class ConditionTreeField(forms.JSONField):
    widget = ConditionTreeWidget

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict | list):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            try:
                return json.loads(value)
            except ValueError as exc:
                raise forms.ValidationError(
                    f"The condition is not valid JSON: {exc}", code="invalid"
                ) from None
        return super().to_python(value)


class DurationTextField(forms.CharField):
    """``90m``, ``24h``, ``7d``: the rules file's duration, checked by the same parser."""

    def clean(self, value: Any) -> str:
        text = str(super().clean(value)).strip()
        try:
            parse_duration(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return text


class RuleEditorForm(forms.ModelForm):
    """A rule's draft without writing YAML or JSON; ``spec`` is the validated rule after ``is_valid()``."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 90}))
    subject = forms.ChoiceField(choices=SubjectType.choices, help_text="What the rule is about")
    when = ConditionTreeField(
        label="Conditions",
        help_text="Pick a fact, an operator valid for its type and a value. Groups: all, any, not.",
    )
    route = forms.ChoiceField(
        choices=[(r, r) for r in ROUTES],
        help_text="executive escalations suppress standard ones for the same subject",
    )
    severity = forms.ChoiceField(choices=[(s, s) for s in SEVERITIES], initial="medium")
    priority = forms.IntegerField(min_value=0, max_value=1_000_000, initial=100, help_text="Lower runs first")
    actions = forms.MultipleChoiceField(
        choices=[(a, a.replace("_", " ")) for a in ACTIONS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    cooldown = DurationTextField(
        initial="7d", help_text="The same rule and subject escalate again only after this (90m, 24h, 7d)"
    )
    max_fact_age = DurationTextField(
        initial="24h", help_text="Decide only on data synced within this window, else insufficient data"
    )
    auto_resolve = forms.BooleanField(
        required=False, initial=True, help_text="Resolve the escalation when the rule stops matching"
    )

    spec: RuleSpec | None = None

    class Meta:
        model = Rule
        fields = ("key", "enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        draft = self.instance.draft if self.instance.pk and isinstance(self.instance.draft, dict) else {}
        if draft:
            for name in _DRAFT_FIELDS:
                if name in draft:
                    self.initial[name] = draft[name]
            self.initial["when"] = draft.get("when", _DEFAULT_WHEN)
        else:
            self.initial.setdefault("when", _DEFAULT_WHEN)
            self.initial.setdefault("subject", SubjectType.CHANGE_ORDER)
        if self.instance.pk and "key" in self.fields:
            # The key names the rule in decisions, escalations and the audit; it does not change.
            self.fields["key"].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "when" not in data:
            return data  # unreadable JSON: its field already says why
        when = normalise_tree(data["when"])
        # Validate the draft even when another field failed, so every problem shows in one round; a
        # field that failed is left out (its default, or a placeholder for a required one) and keeps
        # only its own message.
        draft: dict[str, Any] = {
            "key": data.get("key") or self.instance.key or "placeholder",
            "name": data.get("name") or "placeholder",
            "subject": data.get("subject") or SubjectType.CHANGE_ORDER,
            "when": when,
        }
        for name in ("route", "severity", "priority", "cooldown", "max_fact_age"):
            if data.get(name) is not None:
                draft[name] = data[name]
        draft["actions"] = list(data.get("actions") or [])
        draft["auto_resolve"] = bool(data.get("auto_resolve"))
        if data.get("description"):
            draft["description"] = data["description"]
        try:
            spec = rule_from_dict(draft)
        except RulesFileError as exc:
            self._place(exc, when)
            return data
        if not self.errors:
            self.spec = spec
            data["draft"] = spec.to_dict()
        return data

    def _place(self, exc: RulesFileError, when: Any) -> None:
        in_when = [p for p in exc.errors if p.path == "when" or p.path.startswith(("when.", "when["))]
        for problem in exc.errors:
            if problem in in_when:
                continue
            field = problem.path.split("[")[0].split(".")[0]
            target = field if field in self.fields else None
            if target is not None and target in self.errors:
                continue  # the field's own message already says it
            self.add_error(target, problem.message if target else str(problem))
        if in_when:
            widget = self.fields["when"].widget
            assert isinstance(widget, ConditionTreeWidget)
            widget.errors_by_path = condition_errors_by_path(in_when)
            self.add_error("when", condition_messages(when, in_when))
