"""Processes started by end-to-end tests (Celery workers): test settings with real SMTP from EMAIL_URL."""

from .base import email_settings
from .test import *  # noqa: F403

vars().update(email_settings())
