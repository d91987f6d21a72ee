"""Production: everything from base, tightened. Secrets must come from the environment."""

from apps.ops.logs import logging_config

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, LOG_LEVEL, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
# Audit anchors are signed with a key kept apart from the database (SPEC "Operations").
FULCRUM = {**FULCRUM, "AUDIT_ANCHOR_KEYS": env.list("AUDIT_ANCHOR_KEY")}  # noqa: F405

# One JSON object per line, with the request or task id (SPEC "Operations").
LOG_FORMAT = env("LOG_FORMAT", default="json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Cookies only over HTTPS, never readable by scripts, not sent on cross-site subrequests. The CSRF
# cookie is HttpOnly too: pages post it from the form field, no script reads the cookie.
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 12)
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The login limiter's counters must be shared by every web process: a per-process cache would
# multiply the allowed attempts by the number of gunicorn workers. Redis (the broker's server by
# default, database 1 beside Celery's 0) unless CACHE_URL says otherwise.
_BROKER_REDIS = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
CACHES = {
    "default": env.cache_url(
        "CACHE_URL", default=CELERY_BROKER_URL.rsplit("/", 1)[0] + "/1" if _BROKER_REDIS else "locmemcache://"
    )
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
