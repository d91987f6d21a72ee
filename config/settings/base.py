"""Settings shared by every environment. Everything is declared here; the others only tighten."""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from kombu import Exchange, Queue

from apps.ops.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(str(BASE_DIR / ".env"), overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

# Fernet keys for credentials at rest; the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=["dev-only-field-encryption-key"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_celery_beat",
    "apps.accounts",
    "apps.audit",
    "apps.connectors",
    "apps.entities",
    "apps.rules",
    "apps.escalations",
    "apps.dashboard",
    "apps.quality",
    "apps.learning",
    "apps.orchestration",
    "apps.api",
    "apps.ops",
]

MIDDLEWARE = [
    # First: every line logged while serving a request carries its id (apps/ops/context.py).
    "apps.ops.context.RequestIdMiddleware",
    "apps.ops.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.dashboard.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.audit.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default="postgres://localhost/fulcrum")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# JSON under /api/, Django's page elsewhere.
CSRF_FAILURE_VIEW = "apps.api.exceptions.csrf_failure"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="America/Chicago")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]


def email_settings() -> dict[str, object]:
    """EMAIL_URL like smtp://user:pass@host:1025 (django-environ's email_url); an SMTP server is reached
    through Django's backend with the envelope pipelined where the server offers it
    (apps.escalations.smtp)."""
    settings = env.email_url("EMAIL_URL", default="smtp://127.0.0.1:1025")
    if settings["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend":
        settings["EMAIL_BACKEND"] = "apps.escalations.smtp.EmailBackend"
    return settings


vars().update(email_settings())
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Fulcrum <fulcrum@localhost>")

# Celery
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers log through LOGGING (JSON in production, with the task id) instead of Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60 * 60}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Separate queues so a long sync never delays an email: the Procfile's worker consumes four of them, its
# writeback worker the vendor write-backs (each action class's ``queue``, ``apps.escalations.actions``);
# scale out with workers per queue (WORKER_QUEUES=delivery, ...; docs/OPERATIONS.md). Webhook processing,
# beat's sweeps and the metrics snapshot stay on the default queue.
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Each queue bound with its own routing key: sharing the default key would copy every message into all four.
CELERY_TASK_QUEUES = [
    Queue(name, Exchange("celery", type="direct"), routing_key=name)
    for name in ("celery", "sync", "evaluation", "delivery", "writeback")
]
CELERY_TASK_ROUTES = {
    "apps.connectors.tasks.*": {"queue": "sync"},
    "apps.entities.tasks.*": {"queue": "sync"},
    "apps.quality.tasks.*": {"queue": "sync"},
    "apps.rules.*": {"queue": "evaluation"},
    "apps.learning.tasks.*": {"queue": "evaluation"},
    "apps.escalations.tasks.*": {"queue": "delivery"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Task modules autodiscovery (apps.<app>.tasks) does not reach.
CELERY_IMPORTS = ["apps.connectors.webhooks.tasks", "apps.rules.evaluation.shadow"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    "deliver-due-actions": {"task": "apps.escalations.tasks.deliver_due", "schedule": timedelta(seconds=30)},
    "evaluate-pending": {"task": "apps.rules.tasks.evaluate_pending", "schedule": timedelta(minutes=1)},
    "evaluate-nightly": {"task": "apps.rules.tasks.evaluate_all", "schedule": crontab(hour=2, minute=0)},
    "shadow-nightly": {
        "task": "apps.rules.shadow.shadow_evaluate_task",
        "schedule": crontab(hour=2, minute=30),
    },
    "heartbeat": {"task": "apps.dashboard.tasks.heartbeat", "schedule": timedelta(seconds=30)},
    "audit-anchor": {"task": "apps.audit.tasks.anchor_chain", "schedule": timedelta(minutes=10)},
    # /metrics reads what these store (apps/ops).
    "metrics-snapshot": {"task": "apps.ops.tasks.metrics_snapshot", "schedule": timedelta(seconds=15)},
    "verify-audit": {"task": "apps.ops.tasks.verify_audit", "schedule": timedelta(hours=1)},
    # Finds the webhooks of a killed worker (its lease ran out): the interval bounds how late they are.
    "sweep-webhooks": {
        "task": "apps.connectors.webhooks.tasks.sweep_webhooks",
        "schedule": timedelta(seconds=env.float("FULCRUM_WEBHOOK_SWEEP_SECONDS", default=10.0)),
    },
    # Webhooks silent past the vendor's retry window (QuickBooks: 12 h 30 min): re-read its change feed.
    "catch-up-silent-webhooks": {
        "task": "apps.connectors.tasks.catch_up_silent_connections",
        "schedule": timedelta(minutes=30),
    },
    # The learning loop, after the nightly evaluation (02:00).
    "learning-shadow": {"task": "apps.learning.tasks.shadow_nightly", "schedule": crontab(hour=2, minute=30)},
    "learning-thresholds": {
        "task": "apps.learning.tasks.suggest_thresholds",
        "schedule": crontab(hour=3, minute=0),
    },
    "learning-risk-model": {
        "task": "apps.learning.tasks.train_risk_model",
        "schedule": crontab(hour=3, minute=30),
    },
    "learning-risk-scores": {
        "task": "apps.learning.tasks.rescore_projects",
        "schedule": crontab(minute=15),
    },
    "learning-retention": {
        "task": "apps.learning.tasks.prune_decisions",
        "schedule": crontab(hour=4, minute=0),
    },
    "sweep-policy-steps": {
        "task": "apps.escalations.tasks.sweep_policy_steps",
        "schedule": timedelta(minutes=1),
    },
    "audit-policies": {"task": "apps.escalations.tasks.audit_policies", "schedule": timedelta(minutes=5)},
    "resolve-entities": {
        "task": "apps.entities.tasks.resolve_entities_task",
        "schedule": timedelta(minutes=15),
    },
    "quality-scan-nightly": {
        "task": "apps.quality.tasks.quality_scan_task",
        "schedule": crontab(hour=1, minute=30),
    },
}

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header is what makes an anonymous call answer 401 rather than 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "apps.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.api.throttles.UserThrottle", "apps.api.throttles.AnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env("API_THROTTLE_USER", default="3000/hour"),
        "anon": env("API_THROTTLE_ANON", default="60/hour"),
    },
    "EXCEPTION_HANDLER": "apps.api.exceptions.api_exception_handler",
    # JSON only: the browsable API's pages would need inline scripts the CSP refuses.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "apps.api.schema.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fulcrum API",
    "DESCRIPTION": (
        "Escalations and the actions on them, clients and projects with their ids in every source "
        "system, rule decisions, rules and connections. Authenticate with a session or "
        '`Authorization: Token <key>`; errors are `{"error": {"code", "message", "detail"}}`.'
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.api.schema.text_parameters_refuse_nul",
    ],
    "ENUM_NAME_OVERRIDES": {
        "EscalationOutcomeEnum": "apps.escalations.models.Escalation.Outcome",
        "EscalationStatusEnum": "apps.escalations.models.Escalation.Status",
    },
}

# /metrics: when set, required as "Authorization: Bearer <token>".
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# LOG_FORMAT: "plain" for a terminal, "json" (one object per line, production's default) for shipping;
# every line carries the request or task id (apps/ops/logs.py).
LOG_FORMAT = env("LOG_FORMAT", default="plain")
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

# Fulcrum
FULCRUM = {
    # How long a connector waits for one upstream call.
    "HTTP_TIMEOUT": env.float("FULCRUM_HTTP_TIMEOUT", default=30.0),
    "HTTP_MAX_RETRIES": env.int("FULCRUM_HTTP_MAX_RETRIES", default=5),
    # Backoff with full jitter: base × 2^attempt seconds, capped; a longer Retry-After ends the run partial.
    "HTTP_BACKOFF_BASE": env.float("FULCRUM_HTTP_BACKOFF_BASE", default=0.5),
    "HTTP_BACKOFF_CAP": env.float("FULCRUM_HTTP_BACKOFF_CAP", default=30.0),
    "HTTP_MAX_RETRY_AFTER": env.float("FULCRUM_HTTP_MAX_RETRY_AFTER", default=120.0),
    # In a worker, a shared rate-budget wait longer than this re-queues the task with a countdown.
    "RATE_BUDGET_MAX_SLEEP": env.float("FULCRUM_RATE_BUDGET_MAX_SLEEP", default=1.0),
    # Webhook processing (apps/connectors/webhooks): a claim older than the lease is presumed lost (a
    # killed worker) and queued again; after two quick retries (below), retries back off up to 1 s, doubling
    # to 30 s (docs/OPERATIONS.md).
    "WEBHOOK_LEASE_SECONDS": env.float("FULCRUM_WEBHOOK_LEASE_SECONDS", default=30.0),
    # A webhook task also takes up to this many deliveries of its connection waiting untouched (a burst),
    # read upstream together and applied in one transaction (a savepoint each); 1 turns batching off.
    "WEBHOOK_BATCH_SIZE": env.int("FULCRUM_WEBHOOK_BATCH_SIZE", default=50),
    # Pending evaluations claimed by a flush: a killed worker's are taken again after this (+10 ms/subject).
    "EVALUATION_CLAIM_SECONDS": env.float("FULCRUM_EVALUATION_CLAIM_SECONDS", default=60.0),
    # The first retries of a webhook follow quickly (decorrelated jitter from this base, never sooner),
    # later ones back off as below (apps/connectors/webhooks/tasks.py, docs/OPERATIONS.md).
    "WEBHOOK_QUICK_RETRIES": env.int("FULCRUM_WEBHOOK_QUICK_RETRIES", default=2),
    "WEBHOOK_QUICK_BASE": env.float("FULCRUM_WEBHOOK_QUICK_BASE", default=0.1),
    "WEBHOOK_BACKOFF_BASE": env.float("FULCRUM_WEBHOOK_BACKOFF_BASE", default=1.0),
    "WEBHOOK_BACKOFF_CAP": env.float("FULCRUM_WEBHOOK_BACKOFF_CAP", default=30.0),
    "ACTION_MAX_ATTEMPTS": env.int("FULCRUM_ACTION_MAX_ATTEMPTS", default=8),
    # Data quality: a project's contract value and estimates differing by more than this percent conflict;
    # live records of an entity falling by more than this percent are a volume drop.
    "QUALITY_CONFLICT_PCT": env.float("FULCRUM_QUALITY_CONFLICT_PCT", default=10.0),
    "QUALITY_VOLUME_DROP_PCT": env.float("FULCRUM_QUALITY_VOLUME_DROP_PCT", default=30.0),
    # Outbox retries: up to base × 2^(attempt-1) seconds (full jitter, apps/errors.py), capped; a claim
    # outlives the slowest attempt.
    "ACTION_BACKOFF_BASE": env.float("FULCRUM_ACTION_BACKOFF_BASE", default=30.0),
    "ACTION_BACKOFF_CAP": env.float("FULCRUM_ACTION_BACKOFF_CAP", default=3600.0),
    "DELIVERY_CLAIM_SECONDS": env.float("FULCRUM_DELIVERY_CLAIM_SECONDS", default=300.0),
    # The `webhook` action: {"name": {"url": ..., "secret": "whsec_..."}}, as JSON in the environment.
    "OUTBOUND_WEBHOOKS": env.json("FULCRUM_OUTBOUND_WEBHOOKS", default={}),
    "OUTBOUND_TIMEOUT": env.float("FULCRUM_OUTBOUND_TIMEOUT", default=15.0),
    # Outbound calls to private, loopback, link-local... addresses are refused unless on (demo, tests).
    "OUTBOUND_ALLOW_PRIVATE": env.bool("FULCRUM_OUTBOUND_ALLOW_PRIVATE", default=False),
    # Escalation policies: steps claimed per sweep, a claim's lease (a lost task is re-queued after it),
    # and how late a step may be before the auditor reports it.
    "POLICY_SWEEP_BATCH": env.int("FULCRUM_POLICY_SWEEP_BATCH", default=200),
    "POLICY_STEP_LEASE": timedelta(minutes=env.int("FULCRUM_POLICY_STEP_LEASE_MINUTES", default=5)),
    "POLICY_STALL_AFTER": timedelta(minutes=env.int("FULCRUM_POLICY_STALL_MINUTES", default=10)),
    # Noise controls: the defaults for people who set none of their own (their notification settings,
    # apps/accounts/models.py): executives' digest of new escalations (on; also per policy), quiet hours
    # as local "start-end" hours (e.g. "22-7"), emails per person per hour (0 = no cap).
    "EXECUTIVE_DIGEST": env.bool("FULCRUM_EXECUTIVE_DIGEST", default=True),
    "DIGEST_PERIOD": timedelta(minutes=env.int("FULCRUM_DIGEST_MINUTES", default=60)),
    "QUIET_HOURS": env("FULCRUM_QUIET_HOURS", default=""),
    "RECIPIENT_HOURLY_CAP": env.int("FULCRUM_RECIPIENT_HOURLY_CAP", default=0),
    "EMAIL_LINK_MAX_AGE": timedelta(days=env.int("FULCRUM_EMAIL_LINK_DAYS", default=7)),
    # Changes to a subject within this many seconds are evaluated once (webhook bursts, sync pages).
    "EVALUATION_COALESCE_SECONDS": env.float("FULCRUM_EVALUATION_COALESCE_SECONDS", default=2.0),
    "AUDIT_ANCHOR_FILE": env(
        "FULCRUM_AUDIT_ANCHOR_FILE", default=str(BASE_DIR / ".data" / "audit-anchor.log")
    ),
    # Where signed anchors go: a path, s3://bucket/prefix?... (object lock) or syslog://host:port
    # (apps/audit/sinks.py); empty means AUDIT_ANCHOR_FILE. The first key signs, all verify (rotation).
    "AUDIT_ANCHOR_SINK": env("AUDIT_ANCHOR_SINK", default=""),
    "AUDIT_ANCHOR_KEYS": env.list("AUDIT_ANCHOR_KEY", default=["dev-only-audit-anchor-key"]),
}
