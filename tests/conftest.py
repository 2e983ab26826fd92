"""Shared fixtures."""
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (CI provides ../shared beside the repo)")
    return SHARED_DATA
