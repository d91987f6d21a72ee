"""The webhook bench's physical reference: the project's settings and middleware, one bare insert view."""

from config.settings.test import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
