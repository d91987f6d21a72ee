from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.rules.engine.ruleset import RulesFileError
from apps.rules.evaluation.services import rules_import


class Command(BaseCommand):
    help = "Import rules from a YAML file (SPEC format). All or nothing; a changed rule gets a new version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: object, file: Path, **options: object) -> None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
        try:
            report = rules_import(text=text, actor="system:import_rules")
        except RulesFileError as exc:
            raise CommandError(f"{file}: {len(exc.errors)} problem(s), nothing imported\n{exc}") from exc
        for bucket in ("created", "updated", "unchanged"):
            if report[bucket]:
                self.stdout.write(f"{bucket}: {', '.join(report[bucket])}")
        self._warn_many_rules()

    def _warn_many_rules(self) -> None:
        from django.db.models import Count

        from apps.rules.evaluation import sql
        from apps.rules.models import Rule

        live = (
            Rule.objects.filter(live_version__isnull=False)
            .values("subject_type")
            .annotate(n=Count("pk"))
            .order_by("subject_type")
        )
        for row in live:
            if row["n"] > sql.LIVE_RULES_WARN:
                self.stderr.write(
                    f"warning: {row['n']} live rules of {row['subject_type']}: past {sql.LIVE_RULES_WARN}, "
                    f"every bulk run computes that subject type's facts once per {sql.RULES_PER_QUERY} "
                    "rules (docs/OPERATIONS.md, 'Many rules')"
                )
