"""Admin for operator-defined facts: define, preview on real subjects before saving, save as a new version.

Every field is a choice from the whitelist or a value; the form only builds the definition's spec, which
``custom.validate`` checks exactly as a save does (types, units, unknown names, cycles) and
``custom.custom_fact_save`` stores as the next version. A refused definition saves nothing.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from apps.rules.authoring.editor import TYPE_LABELS
from apps.rules.engine import customfacts as cf
from apps.rules.engine.catalogue import FactType
from apps.rules.evaluation.custom import CustomFactRefused, custom_fact_save, preview, validate
from apps.rules.models import CustomFact, CustomFactVersion

_FIELD_CHOICES = [
    ("", "—"),
    *sorted({(name, name) for related in cf.RELATED_SETS.values() for name in related.fields}),
]


def _filter_lines(filters: list[dict[str, Any]]) -> str:
    lines = []
    for f in filters:
        value = f.get("value")
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else json.dumps(value)
        if isinstance(value, str):
            shown = value
        lines.append(f"{f.get('field')} {f.get('op')} {shown}")
    return "\n".join(lines)


def _filter_value(op: str, text: str) -> Any:
    text = text.strip()
    if op in ("in", "not_in"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return [_scalar(part) for part in text.split(",") if part.strip()]
        return parsed if isinstance(parsed, list) else [parsed]
    return _scalar(text)


def _scalar(text: str) -> Any:
    """``50000`` → 50000, ``true`` → True, ``"x"`` → 'x', anything else as the text itself (a value, never
    code: it is coerced to the field's type and bound as a parameter)."""
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float):
        return text  # decimals stay exact: the field's coercion reads the text
    return value if isinstance(value, int | bool | str) or value is None else text


def parse_filters(text: str) -> list[dict[str, Any]]:
    """One filter a line: ``field op value`` (``status eq pending``, ``status in draft, pending``,
    ``amount gte 50000``)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split(None, 2)
        if len(parts) == 2:
            parts.append("true" if parts[1] == "is_null" else "")
        if len(parts) < 3:
            out.append({"field": parts[0], "op": parts[1] if len(parts) > 1 else "", "value": None})
            continue
        field_name, op, value = parts
        out.append({"field": field_name, "op": op, "value": _filter_value(op, value)})
    return out


def _definition_text(spec: dict[str, Any], number: int) -> str:
    """A stored version in words (its operands are read as names only)."""
    if spec.get("kind") != "aggregate":
        sign = "/" if spec.get("kind") == "ratio" else "−"
        return f"{spec.get('a')} {sign} {spec.get('b')}" + (" × 100" if sign == "/" else "")
    found = cf.load_definitions([(spec, number)]).get(f"custom.{spec.get('key')}")
    return found.definition_text() if found else "(no longer valid)"


class CustomFactForm(forms.ModelForm):
    """The definition's spec, field by field (not stored on CustomFact: each save is a version)."""

    label = forms.CharField(
        required=False,
        max_length=cf.MAX_LABEL,
        help_text="What people read on escalation pages and in emails, e.g. Pending change orders "
        "(empty: the key in words)",
    )
    type = forms.ChoiceField(
        choices=[
            (t.value, f"{t.value} ({TYPE_LABELS[t]})" if TYPE_LABELS[t] != t.value else t.value)
            for t in FactType
        ]
    )
    unit = forms.CharField(required=False, max_length=20, help_text="count, USD, %, days, … (checked)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=500)
    kind = forms.ChoiceField(choices=[(k, k) for k in cf.KINDS])
    related = forms.ChoiceField(
        required=False,
        choices=[("", "—")] + [(s.name, s.label) for s in cf.RELATED_SETS.values()],
        help_text="aggregate: the subject's related records",
    )
    function = forms.ChoiceField(required=False, choices=[("", "—")] + [(f, f) for f in cf.FUNCTIONS])
    field = forms.ChoiceField(
        required=False, choices=_FIELD_CHOICES, help_text="aggregate: the field (none for a count of rows)"
    )
    filters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="aggregate: one filter a line, field op value — status eq pending; amount gte 50000; "
        "status in draft, pending",
    )
    window = forms.CharField(required=False, max_length=20, help_text="aggregate: e.g. 30d (empty: all time)")
    a = forms.CharField(required=False, max_length=100, help_text="ratio / difference: the first fact")
    b = forms.CharField(required=False, max_length=100, help_text="ratio / difference: the second fact")

    class Meta:
        model = CustomFact
        fields = ["key", "subject_type"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.current if self.instance.pk else None
        if current is not None:
            spec = current.spec
            self.initial.setdefault("label", spec.get("label", ""))
            for name in (
                "type",
                "unit",
                "description",
                "kind",
                "related",
                "function",
                "field",
                "window",
                "a",
                "b",
            ):
                self.initial.setdefault(name, spec.get(name, ""))
            self.initial.setdefault("filters", _filter_lines(spec.get("filters") or []))
            for name in ("key", "subject_type"):
                self.fields[name].disabled = True
        self.fields["key"].help_text = "The fact is named custom.KEY (lowercase letters, digits and _)"
        self.spec: dict[str, Any] = {}
        self.definition: cf.Definition | None = None

    def validate_unique(self) -> None:
        pass  # a save of an existing key is its next version (the service looks it up)

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        if self.errors:
            return data
        spec: dict[str, Any] = {
            "key": data.get("key") or "",
            "label": (data.get("label") or "").strip(),
            "subject": data.get("subject_type") or "",
            "type": data.get("type"),
            "unit": data.get("unit") or "",
            "description": data.get("description") or "",
            "kind": data.get("kind"),
        }
        if data.get("kind") == "aggregate":
            spec.update(
                related=data.get("related") or "",
                function=data.get("function") or "",
                field=data.get("field") or "",
                filters=parse_filters(data.get("filters") or ""),
                window=(data.get("window") or "").strip(),
            )
        else:
            spec.update(a=(data.get("a") or "").strip(), b=(data.get("b") or "").strip())
        try:
            self.definition = validate(spec)
        except CustomFactRefused as exc:
            for where, message in exc.errors:
                target: str | None = where.split("[")[0].split(".")[0]
                target = {"subject": "subject_type"}.get(str(target), target)
                if target not in self.fields or self.fields[str(target)].disabled:
                    target = None
                self.add_error(target, message)
        self.spec = spec
        return data


@admin.register(CustomFact)
class CustomFactAdmin(admin.ModelAdmin):
    form = CustomFactForm
    list_display = ("name", "label", "subject_type", "version", "meaning", "updated_at")
    list_select_related = ("current",)
    list_filter = ("subject_type",)
    search_fields = ("key", "current__spec__label")
    change_form_template = "admin/rules/customfact/change_form.html"
    fieldsets = [
        (None, {"fields": ["key", "label", "subject_type", "type", "unit", "description", "kind"]}),
        ("Aggregate over related records", {"fields": ["related", "function", "field", "filters", "window"]}),
        ("Ratio or difference of two facts", {"fields": ["a", "b"]}),
    ]
    readonly_fields = ("versions",)

    def get_fieldsets(self, request: HttpRequest, obj: CustomFact | None = None) -> Any:
        if obj is None:
            return self.fieldsets
        return [
            *self.fieldsets,
            ("Versions (each save is one; decisions record the one they read)", {"fields": ["versions"]}),
        ]

    @admin.display(description="versions")
    def versions(self, obj: CustomFact) -> str:
        rows = CustomFactVersion.objects.filter(fact=obj).select_related("saved_by").order_by("-number")
        return format_html(
            '<table class="custom-fact-versions"><tbody>{}</tbody></table>',
            format_html_join(
                "",
                "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        v.number,
                        v.saved_at.strftime("%Y-%m-%d %H:%M"),
                        v.saved_by or "—",
                        _definition_text(v.spec, v.number),
                    )
                    for v in rows
                ),
            ),
        )

    @admin.display(description="fact", ordering="key")
    def name(self, obj: CustomFact) -> str:
        return obj.name

    @admin.display(description="version")
    def version(self, obj: CustomFact) -> str:
        return f"v{obj.current.number}" if obj.current else "—"

    @admin.display(description="definition")
    def meaning(self, obj: CustomFact) -> str:
        return _definition_text(obj.current.spec, obj.current.number) if obj.current else ""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decisions point at its versions

    def save_model(self, request: HttpRequest, obj: CustomFact, form: Any, change: bool) -> None:
        version = custom_fact_save(spec=form.spec, actor=request.user)
        saved = version.fact
        obj.pk, obj.key, obj.subject_type, obj.current = saved.pk, saved.key, saved.subject_type, version
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # versions are written by the service only

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> Any:
        number = form.instance.current.number if form.instance.current else 0
        return [{"added": {}}] if add else [{"changed": {"fields": [f"definition (v{number})"]}}]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        if request.method == "POST" and "_preview" in request.POST:
            return self._preview_view(request, object_id, form_url)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _preview_view(self, request: HttpRequest, object_id: str | None, form_url: str) -> HttpResponse:
        """The definition's value for sample subjects, computed as an event would; nothing is saved."""
        obj = self.get_object(request, object_id) if object_id else None
        add = obj is None
        if not (self.has_add_permission(request) if add else self.has_change_permission(request, obj)):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form_class = self.get_form(request, obj, change=not add)
        form: Any = form_class(request.POST, instance=obj)
        rows: list[dict[str, Any]] | None = None
        if form.is_valid() and form.definition is not None:
            try:
                rows = preview(form.spec, sample=10)
            except CustomFactRefused as exc:
                form.add_error(None, str(exc))
        admin_form = helpers.AdminForm(
            form,
            list(self.get_fieldsets(request, obj)),
            {},
            self.get_readonly_fields(request, obj),
            model_admin=self,
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Preview custom fact",
            "subtitle": None,
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            "preview_rows": self._linked(form.definition, rows) if rows is not None else None,
            "preview_definition": form.definition.definition_text() if form.definition else "",
        }
        return self.render_change_form(request, context, add=add, change=not add, obj=obj, form_url=form_url)

    @staticmethod
    def _linked(definition: cf.Definition | None, rows: list[dict[str, Any]]) -> str:
        from apps.rules.admin import subject_links
        from apps.rules.engine.wording import reading

        if definition is None:
            return ""
        if not rows:
            plural = f"{definition.subject.replace('_', ' ')}s"
            return format_html("<p>There are no {} yet to preview on.</p>", plural)
        fact = definition.as_fact()
        links = {
            pk: (label, url)
            for pk, label, url in subject_links(definition.subject, [r["subject_id"] for r in rows])
        }
        body = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td class="preview-value">{}</td></tr>',
            ((links[r["subject_id"]][1], links[r["subject_id"]][0], reading(r["value"], fact)) for r in rows),
        )
        return format_html(
            '<table id="custom-fact-preview"><thead><tr><th>{}</th><th>{}</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            definition.subject.replace("_", " "),
            f"{definition.shown_label} ({definition.name})",
            body,
        )
