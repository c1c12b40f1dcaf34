"""Trainer failures that map to a documented process exit code (see ganforge.api.exit_codes)."""

from __future__ import annotations

from ganforge.api.exit_codes import ExitCode


class TrainerError(Exception):
    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class ConfigError(TrainerError):
    exit_code = ExitCode.CONFIG_ERROR


class DataError(TrainerError):
    exit_code = ExitCode.DATA_ERROR


class NonFiniteLossError(TrainerError):
    exit_code = ExitCode.NON_FINITE_LOSS


class CheckpointStorageError(TrainerError):
    exit_code = ExitCode.CHECKPOINT_STORAGE_ERROR


class NoUsableCheckpointError(TrainerError):
    exit_code = ExitCode.NO_USABLE_CHECKPOINT


class DistributedError(TrainerError):
    exit_code = ExitCode.DISTRIBUTED_ERROR


class EvaluationError(TrainerError):
    exit_code = ExitCode.EVALUATION_ERROR


class Preempted(TrainerError):
    exit_code = ExitCode.PREEMPTED


_BY_CODE: dict[int, type[TrainerError]] = {
    cls.exit_code: cls
    for cls in (ConfigError, DataError, NonFiniteLossError, CheckpointStorageError, NoUsableCheckpointError,
                DistributedError, EvaluationError, Preempted)
}


def error_for_code(code: int, message: str) -> TrainerError:
    """Re-raise on this rank a failure that another rank reported only as an exit code."""
    cls = _BY_CODE.get(code, TrainerError)
    return cls(message)
