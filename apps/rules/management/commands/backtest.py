"""``manage.py backtest RULE_KEY [--since DATE] [--file RULES.yaml] [--limit N]`` (SPEC)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.rules.evaluation.backtest import DEFAULT_LIMIT, BacktestError, backtest, draft_from_file


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since {text!r}: expected a date as YYYY-MM-DD") from None


class Command(BaseCommand):
    help = (
        "Replay a rule's live version, or a draft of it from a rules file, over stored decision contexts; "
        "print matches, precision on labelled outcomes and the delta to the live version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("rule_key")
        parser.add_argument(
            "--since", help="only contexts stored on or after this date (YYYY-MM-DD, TIME_ZONE)"
        )
        parser.add_argument("--file", type=Path, help="a rules file holding a draft of the rule")
        parser.add_argument(
            "--limit",
            type=int,
            default=DEFAULT_LIMIT,
            help=f"at most this many contexts (default {DEFAULT_LIMIT:,})",
        )

    def handle(
        self,
        *args: object,
        rule_key: str,
        since: str | None,
        file: Path | None,
        limit: int,
        **options: object,
    ) -> None:
        start = None
        if since:
            start = timezone.make_aware(dt.datetime.combine(_date(since), dt.time.min))
        draft = None
        if file is not None:
            try:
                text = file.read_text()
            except OSError as exc:
                raise CommandError(f"cannot read {file}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise CommandError(f"cannot read {file}: not UTF-8 text ({exc.reason})") from exc
        try:
            if file is not None:
                draft = draft_from_file(text, rule_key, name=str(file))
            result = backtest(rule_key, draft=draft, since=start, limit=limit, file_name=str(file))
        except BacktestError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(result))
