"""Production settings for the dashboard bench's gunicorn, with static files served from the app folders:
the manifest storage needs ``collectstatic`` first, which a bench database run has not done. Pages refer to
static files by name only, so the page times are those of production."""

from config.settings.production import *  # noqa: F403

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
