"""Fixtures shared by the rules' tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apps.rules.engine import customfacts as cf
from apps.rules.engine.catalogue import custom_definitions


@pytest.fixture
def installed() -> Iterator[Callable[..., None]]:
    """Install custom fact definitions for the test and restore the previous ones afterwards."""
    saved = dict(custom_definitions())

    def install(*definitions: Any) -> None:
        cf.install({d.name: d for d in definitions})

    yield install
    cf.install(saved)
