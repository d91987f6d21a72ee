import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_map_cache():
    # The map is cached per window for a few seconds; every test starts from its own rows.
    cache.clear()
    yield
    cache.clear()
