import os

from django.core.wsgi import get_wsgi_application

from config.embedded_servers import ensure_services

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
ensure_services()
application = get_wsgi_application()

# The apps' task modules, as a worker imports them when it starts: a web process queues tasks by name
# (a rule published, an entity edited: ``apps.rules.evaluation.triggers.task``), and the first of them
# would otherwise import them on a person's request (Celery's autodiscovery with the Django fixup's
# checks: 0.19 s of its first request, once per process; the boot takes it instead).
from config.celery import app as celery_app  # noqa: E402 - after Django is set up

celery_app.loader.import_default_modules()
