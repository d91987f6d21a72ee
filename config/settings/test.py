"""The test suite: fast hashing, locmem email unless a test asks for real SMTP."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = False
FIELD_ENCRYPTION_KEY = ["test-field-encryption-key"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files from the app folders without collectstatic (no STATIC_ROOT in tests).
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True

# pytest-django empties tables with TRUNCATE between transactional tests; the append-only tables refuse
# TRUNCATE except in a test_* database whose session sets this (apps/audit/migrations/0005).
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c fulcrum.allow_truncate=on"  # noqa: F405
