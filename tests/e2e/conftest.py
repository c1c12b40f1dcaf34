from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganforge.local.install import install


@pytest.fixture(scope="module")
def operator(local_cluster: Any) -> Iterator[Path]:
    """The CRDs and the operator installed on `ganforge local`; yields the admin kubeconfig."""
    install(local_cluster.kubeconfig)
    yield local_cluster.kubeconfig
