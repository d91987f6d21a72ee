"""Processes started by end-to-end tests (Celery workers): test settings with real SMTP from EMAIL_URL."""

from .base import env
from .test import *  # noqa: F403

vars().update(env.email_url("EMAIL_URL", default="smtp://127.0.0.1:1025"))
