"""The rules engine: pure Python, no Django ORM, no database, no Celery.

What a rule *is* and what it *says*: the fact catalogue (:mod:`.catalogue`), durations (:mod:`.durations`),
value coercion (:mod:`.values`), the condition compiler and evaluator (:mod:`.evaluator`), the rules file
format (:mod:`.ruleset`) and the one formatter for every human-facing value and sentence (:mod:`.wording`).
Everything here can be imported and tested without a database; ``apps.rules.evaluation`` (facts from SQL,
decision records) and ``apps.rules.authoring`` (the editor, preview, publishing) build on it, never the
reverse. The names below are the engine's public surface; modules outside the engine import these.
"""

from apps.rules.engine.catalogue import (
    FACTS,
    OPERATOR_LABELS,
    OPERATORS,
    SUBJECT_TYPES,
    VISIBLE,
    Fact,
    FactType,
    facts_for,
    operators_for,
)
from apps.rules.engine.durations import format_duration, parse_duration
from apps.rules.engine.evaluator import (
    CompiledCondition,
    Evaluation,
    RuleProblem,
    RuleValidationError,
    Verdict,
    compile_condition,
)
from apps.rules.engine.ruleset import (
    ACTIONS,
    ROUTES,
    SEVERITIES,
    RulesFileError,
    RuleSpec,
    dump_rules,
    parse_rules,
    rule_from_dict,
)
from apps.rules.engine.wording import conditions, reading, sentence, why, written

__all__ = [
    "ACTIONS",
    "FACTS",
    "OPERATORS",
    "OPERATOR_LABELS",
    "ROUTES",
    "SEVERITIES",
    "SUBJECT_TYPES",
    "VISIBLE",
    "CompiledCondition",
    "Evaluation",
    "Fact",
    "FactType",
    "RuleProblem",
    "RuleSpec",
    "RuleValidationError",
    "RulesFileError",
    "Verdict",
    "compile_condition",
    "conditions",
    "dump_rules",
    "facts_for",
    "format_duration",
    "operators_for",
    "parse_duration",
    "parse_rules",
    "reading",
    "rule_from_dict",
    "sentence",
    "why",
    "written",
]
