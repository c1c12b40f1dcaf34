"""The Argo CD health checks of GANTrainingJob and GANInferenceService, run by a Lua 5.1 interpreter
(lupa's lua51, the dialect of Argo CD's gopher-lua) on every case of their health_test.yaml, the way
Argo CD's own tests run them; every sample object is also a valid object of the ganforge API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from ganforge.api.inference_service import GANInferenceService
from ganforge.api.training_job import GANTrainingJob
from ganforge.local import chart

KINDS = {"GANTrainingJob": GANTrainingJob, "GANInferenceService": GANInferenceService}
CHECKS = sorted(chart.HEALTH_CHECKS.glob("ganforge.io/*/health.lua"))
CASES = [(script, case) for script in CHECKS
         for case in yaml.safe_load((script.parent / "health_test.yaml").read_text())["tests"]]


def health(script: Path, obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def test_both_kinds_have_a_check_in_argocds_layout() -> None:
    assert sorted(path.parent.name for path in CHECKS) == sorted(KINDS)
    statuses = {case["healthStatus"]["status"] for _, case in CASES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("script, case", CASES, ids=[f"{s.parent.name}-{Path(c['inputPath']).stem}" for s, c in CASES])
def test_health(script: Path, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((script.parent / case["inputPath"]).read_text())
    KINDS[script.parent.name].model_validate(obj)  # the sample is a real object of the API
    assert health(script, obj) == case["healthStatus"]
