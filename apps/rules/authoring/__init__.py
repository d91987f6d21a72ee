"""Rule authoring: what a person does to a rule before and while it goes live.

The structured editor and its form (:mod:`.editor`, :mod:`.forms`), the draft preview (:mod:`.preview`),
publishing and its estimate (:mod:`.publishing`), drafts and restores (:mod:`.versions`) and the
spec diff (:mod:`.diff`). Builds on ``apps.rules.engine`` and ``apps.rules.evaluation``; nothing in those
imports this package.
"""
