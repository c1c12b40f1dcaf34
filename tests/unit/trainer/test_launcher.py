"""How a pod running several ranks numbers them and sums up their exit codes (pure logic; the
processes themselves run in tests/integration/trainer/test_ranks_per_pod.py)."""

from __future__ import annotations

import pytest

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.errors import ConfigError
from ganforge.trainer.launcher import PodLayout, pod_exit_code, pod_layout

PET = {"PET_NPROC_PER_NODE": "4", "PET_NNODES": "3", "PET_NODE_RANK": "2", "PET_MASTER_ADDR": "job-w0.job",
       "PET_MASTER_PORT": "29500"}


def test_ranks_are_numbered_pod_by_pod_as_torchrun_does() -> None:
    layout = pod_layout(PET)
    assert layout == PodLayout(4, 3, 2, "job-w0.job", "29500")
    env = layout.rank_environment(1)
    assert env == {"RANK": "9", "LOCAL_RANK": "1", "WORLD_SIZE": "12", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "2",
                   "MASTER_ADDR": "job-w0.job", "MASTER_PORT": "29500"}


def test_a_process_that_is_a_rank_or_alone_in_its_pod_launches_nothing() -> None:
    assert pod_layout({**PET, "RANK": "3"}) is None
    assert pod_layout({**PET, "PET_NPROC_PER_NODE": "1"}) is None
    assert pod_layout({}) is None


def test_a_node_rank_outside_the_pods_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PET_NODE_RANK=3 is outside PET_NNODES=3"):
        pod_layout({**PET, "PET_NODE_RANK": "3"})
    with pytest.raises(ConfigError, match="PET_NPROC_PER_NODE"):
        pod_layout({**PET, "PET_NNODES": "three"})


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 0, 0], ExitCode.SUCCESS),
    ([75, 75], ExitCode.PREEMPTED),
    ([75, 76], ExitCode.PREEMPTED_NO_CHECKPOINT),
    # The rank that failed is the cause; its peers' DISTRIBUTED_ERROR is the consequence.
    ([7, 6, 7, 7], ExitCode.CHECKPOINT_STORAGE_ERROR),
    ([7, 7], ExitCode.DISTRIBUTED_ERROR),
    ([75, 5], ExitCode.NON_FINITE_LOSS),
    # Killed by a signal (Popen's -N): reported as the kernel and container runtimes do, 128 + N.
    ([-9, 7], 137),
], ids=["success", "preempted", "preempted-past-deadline", "failure-over-peers", "peer-lost", "failure-over-stop",
        "killed"])
def test_the_pods_exit_code_names_the_cause(codes: list[int], expected: int) -> None:
    assert pod_exit_code(codes) == expected
