"""Developer machines and `make demo`."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
WHITENOISE_AUTOREFRESH = DEBUG
# Static files straight from the source folders, without collectstatic, with DEBUG off too (`make demo`
# runs with DEBUG off so that users see Fulcrum's error pages).
WHITENOISE_USE_FINDERS = True
