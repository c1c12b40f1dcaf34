from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared across the session so the domain classifier and reference statistics are built once."""
    return tmp_path_factory.mktemp("ganforge-cache")
