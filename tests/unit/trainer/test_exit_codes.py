from __future__ import annotations

import subprocess
import sys

from ganforge.api.exit_codes import EXIT_CODE_TABLE, ExitCode, describe


def test_codes_are_distinct_documented_and_clear_of_signal_range() -> None:
    values = [int(code) for code in ExitCode]
    assert len(values) == len(set(values))
    assert set(EXIT_CODE_TABLE) == set(ExitCode)
    assert all(0 <= value < 128 for value in values)


def test_preemption_is_a_resumable_disruption_and_user_errors_count() -> None:
    for code in (ExitCode.PREEMPTED, ExitCode.PREEMPTED_NO_CHECKPOINT):
        assert describe(code).resumable and not describe(code).counts_against_backoff
    for code in (ExitCode.CONFIG_ERROR, ExitCode.DATA_ERROR, ExitCode.NON_FINITE_LOSS):
        assert describe(code).counts_against_backoff and not describe(code).resumable
    # A signal counts unless the operator sees the infrastructure behind it (docs/operator.md).
    killed = describe(137)
    assert killed.resumable and killed.counts_against_backoff and "signal 9" in killed.meaning
    assert describe(-15).meaning == "killed by signal 15"
    assert describe(42).counts_against_backoff
    assert describe(ExitCode.DISTRIBUTED_ERROR).counts_against_backoff


def test_api_package_does_not_import_torch() -> None:
    code = ("import sys, ganforge.api.exit_codes, ganforge.api.training_job; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_trainer_does_not_import_other_components() -> None:
    code = (
        "import sys, ganforge.trainer.loop, ganforge.trainer.cli, ganforge.trainer.evaluation_suite; "
        "bad = [m for m in sys.modules if m.startswith(('ganforge.operator', 'ganforge.serving', 'ganforge.local'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
