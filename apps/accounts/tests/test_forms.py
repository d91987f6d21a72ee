"""The notification settings form as people see it."""

from __future__ import annotations

from apps.accounts.forms import NotificationSettingsForm


def test_each_field_is_wide_enough_for_its_example():
    # Seen in make demo: the quiet hours box (size 8) cut its example to "e.g. 22-7, or".
    # Browsers draw a text input without a size 20 characters wide.
    for name, field in NotificationSettingsForm().fields.items():
        attrs = field.widget.attrs
        example = attrs.get("placeholder", "")
        assert int(attrs.get("size", 20)) >= len(example), name
