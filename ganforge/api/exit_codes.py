"""Process exit codes of the ganforge trainer, shared with the operator.

The operator decides from a pod's exit code whether a failure is a *disruption* (resume without
touching `backoffLimit`) or a *user-code failure* (counts against `backoffLimit`). Keeping the table
here, in the torch-free API package, lets the operator import it without importing the trainer.

Codes stay below 64 or inside sysexits' range and never collide with 128+N, which the kernel and
container runtimes use for "killed by signal N" (137 = SIGKILL, 143 = SIGTERM not handled).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    # An unexpected exception: a bug or an environment problem the trainer did not classify.
    INTERNAL_ERROR = 1
    # Bad command line (argparse's own convention).
    USAGE_ERROR = 2
    # The job spec or the runtime options are invalid, or they changed against an existing run.
    CONFIG_ERROR = 3
    # The dataset is missing, corrupt, truncated or has the wrong image shape.
    DATA_ERROR = 4
    # A loss became NaN/inf; the last good checkpoint is kept and no newer one is written.
    NON_FINITE_LOSS = 5
    # The checkpoint location cannot be written (or repeated background writes failed).
    CHECKPOINT_STORAGE_ERROR = 6
    # A collective timed out or a peer rank vanished. The consequence of a peer's disruption or
    # crash when one is seen; on its own (a rendezvous misconfiguration) a failure.
    DISTRIBUTED_ERROR = 7
    # The evaluation could not run (e.g. a user-supplied feature extractor failed to load).
    EVALUATION_ERROR = 8
    # `ganforge export`: the checkpoint does not verify, the ONNX graph fails its checks or its
    # parity with PyTorch, or the model repository cannot be written. The checkpoint is untouched.
    EXPORT_ERROR = 9
    # Checkpoints exist but none verifies: the run refuses to start over from zero on its own.
    # Nothing is moved; delete them (or point spec.checkpoint.uri elsewhere) to start again.
    NO_USABLE_CHECKPOINT = 10
    # SIGTERM/SIGINT: all ranks stopped at one step and an emergency checkpoint was written.
    PREEMPTED = 75
    # A second signal or the grace deadline cut the emergency checkpoint short; resume from the
    # newest periodic checkpoint (whatever had been written is atomic, never half-visible).
    PREEMPTED_NO_CHECKPOINT = 76


@dataclass(frozen=True)
class ExitCodeInfo:
    code: ExitCode
    resumable: bool
    counts_against_backoff: bool
    meaning: str


EXIT_CODE_TABLE: dict[ExitCode, ExitCodeInfo] = {
    info.code: info
    for info in (
        ExitCodeInfo(ExitCode.SUCCESS, False, False, "training finished"),
        ExitCodeInfo(ExitCode.INTERNAL_ERROR, True, True, "unexpected error (see the log)"),
        ExitCodeInfo(ExitCode.USAGE_ERROR, False, True, "bad command line"),
        ExitCodeInfo(ExitCode.CONFIG_ERROR, False, True, "invalid spec or runtime options; fix the spec"),
        ExitCodeInfo(ExitCode.DATA_ERROR, False, True, "dataset missing, corrupt or wrongly shaped"),
        ExitCodeInfo(ExitCode.NON_FINITE_LOSS, False, True, "loss became NaN/inf; last good checkpoint kept"),
        ExitCodeInfo(ExitCode.CHECKPOINT_STORAGE_ERROR, True, True, "checkpoint location not writable"),
        ExitCodeInfo(ExitCode.DISTRIBUTED_ERROR, True, True, "peer lost or collective timed out"),
        ExitCodeInfo(ExitCode.EVALUATION_ERROR, False, True, "evaluation could not run"),
        ExitCodeInfo(ExitCode.EXPORT_ERROR, False, True, "export failed; the checkpoint is kept"),
        ExitCodeInfo(ExitCode.NO_USABLE_CHECKPOINT, False, True,
                     "checkpoints exist but none verifies; the run does not start over on its own"),
        ExitCodeInfo(ExitCode.PREEMPTED, True, False, "preempted; emergency checkpoint written"),
        ExitCodeInfo(
            ExitCode.PREEMPTED_NO_CHECKPOINT, True, False, "preempted past the deadline; resume from last"
        ),
    )
}


def describe(code: int) -> ExitCodeInfo:
    """Classify any process exit status, including ones the trainer never returns itself."""
    try:
        return EXIT_CODE_TABLE[ExitCode(code)]
    except ValueError:
        pass
    if code >= 128 or code < 0:
        # Killed by a signal (shell convention 128+N, or Popen's negative N). Without a sign that the
        # infrastructure did it (the operator checks those first), the workload did: an OOM kill, a
        # segfault, an abort. A failure, resumable.
        return ExitCodeInfo(ExitCode.INTERNAL_ERROR, True, True, f"killed by signal {abs(code) % 128}")
    return ExitCodeInfo(ExitCode.INTERNAL_ERROR, True, True, f"unknown exit code {code}")
