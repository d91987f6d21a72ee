from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import audit_verify


class Command(BaseCommand):
    help = "Verify the audit hash chain. Exit 0 if intact; otherwise non-zero naming the first broken entry."

    def handle(self, *args: object, **options: object) -> None:
        report = audit_verify()
        if not report.ok:
            raise CommandError(
                f"audit chain broken at entry #{report.broken_id}: {report.reason} ({report.checked} entries verified before it)"
            )
        self.stdout.write(f"audit chain intact: {report.checked} entries")
