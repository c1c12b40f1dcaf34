"""A rollout's decisions, without a cluster: analyses, verdicts, limits, a person's decisions,
and an operator restarted mid-rollout."""

from __future__ import annotations

from typing import Any

from ganforge.api.analysis import AnalysisResult, Measurement
from ganforge.api.inference_service import ABORT_ANNOTATION, PROMOTE_ANNOTATION, GANInferenceServiceStatus
from ganforge.operator import naming
from ganforge.operator.reconcile import DeleteObject, DeletePod, Plan
from ganforge.operator.rollout_cli import render
from tests.unit.operator.test_serving_reconcile import REV1, REV2, SHA1, SHA2, analysis_pod, deployment, run, source
from tests.unit.operator.test_serving_reconcile import spec as service_spec

BOTH_READY = {REV1: deployment(1), REV2: deployment(1)}
KID_FAIL = Measurement(name="kidIncrease", value=0.24, bound=0.1, lower=0.18, upper=0.31, verdict="Fail")


def stable_rev1() -> GANInferenceServiceStatus:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(1)})
    assert status.stable_revision == REV1
    return status


def started(rollout: dict[str, Any] | None = None,
            annotations: dict[str, str] | None = None) -> tuple[Plan, GANInferenceServiceStatus, str]:
    gis = service_spec(rollout=rollout or {})
    plan, status = run(stable_rev1(), source(SHA2), BOTH_READY, gis=gis, annotations=annotations)
    [pod] = plan.create
    return plan, status, pod["metadata"]["name"]


def step(status: GANInferenceServiceStatus, pods: list[dict[str, Any]], rollout: dict[str, Any] | None = None,
         annotations: dict[str, str] | None = None) -> tuple[Plan, GANInferenceServiceStatus]:
    return run(status, source(SHA2), BOTH_READY, pods=pods, gis=service_spec(rollout=rollout or {}),
               annotations=annotations)


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def test_a_ready_revision_is_analysed_against_the_stable_by_a_pod_without_a_token() -> None:
    plan, status, name = started()
    pod = plan.create[0]
    assert name == f"fashion-{REV2}-a0-0" and pod["spec"]["automountServiceAccountToken"] is False
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--canary-url") + 1] == f"fashion-{REV2}.ns.svc:8000"
    assert args[args.index("--stable-url") + 1] == f"fashion-{REV1}.ns.svc:8000"
    assert naming.REVISION_LABEL not in pod["metadata"]["labels"]  # never an endpoint of a revision Service
    rollout = status.rollout
    assert rollout is not None and rollout.revision == REV2 and rollout.from_revision == REV1
    assert [a.state for a in rollout.analyses] == ["Running"] and rollout.weights == [0]
    assert "RolloutStarted" in reasons(plan) and "AnalysisStarted" in reasons(plan)
    assert status.stable_revision == REV1 and status.phase == "Progressing"


def test_an_operator_restarted_mid_analysis_recreates_the_same_pod_and_decides_nothing() -> None:
    _, status, name = started()
    plan, again = step(status, pods=[])  # the pod is not (yet) in the cache: created again, by the same name
    assert [p["metadata"]["name"] for p in plan.create] == [name]
    assert again.rollout == status.rollout and again.stable_revision == REV1


def test_a_pass_promotes_and_the_analysis_pods_go() -> None:
    _, status, name = started()
    plan, status = step(status, [analysis_pod(name, AnalysisResult(verdict="Pass", message="all gates pass"))])
    assert status.stable_revision == REV2 and status.rollout is not None and status.rollout.phase == "Promoted"
    assert status.rollout.analyses[0].state == "Pass" and "all gates pass" in status.rollout.message
    assert DeletePod(name) in plan.delete and DeleteObject("Deployment", f"fashion-{REV1}") in plan.delete_objects
    assert {"AnalysisPassed", "Promoted"} <= set(reasons(plan))


def test_a_fail_rolls_back_and_the_stable_stays() -> None:
    _, status, name = started()
    result = AnalysisResult(verdict="Fail", measurements=[KID_FAIL], message="kidIncrease 0.24 > 0.1")
    plan, status = step(status, [analysis_pod(name, result)])
    assert status.stable_revision == REV1 and status.canary_revision is None
    assert status.rollout is not None and status.rollout.phase == "RolledBack"
    assert status.rollout.analyses[0].measurements == [KID_FAIL]
    assert DeleteObject("Deployment", f"fashion-{REV2}") in plan.delete_objects
    assert DeleteObject("Deployment", f"fashion-{REV1}") not in plan.delete_objects
    assert status.phase == "Degraded" and "kidIncrease 0.24" in next(
        c.message for c in status.conditions if c.type == "Degraded")
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"  # the stable serves

    # Later passes change nothing: the rolled-back revision is not tried again.
    plan, later = run(status, source(SHA2), {REV1: deployment(1)}, gis=service_spec())
    assert later.stable_revision == REV1 and not plan.create and later.rollout == status.rollout
    assert next(c for c in later.conditions if c.type == "Degraded").reason == "RolledBack"


def test_a_failure_within_the_limit_is_analysed_again_with_fresh_latents() -> None:
    policy = {"failureLimit": 1}
    _, status, name = started(policy)
    plan, status = step(status, [analysis_pod(name, AnalysisResult(verdict="Fail"))], policy)
    assert status.rollout is not None and status.rollout.failures == 1 and status.rollout.phase == "Progressing"
    [again] = plan.create
    assert again["metadata"]["name"] == f"fashion-{REV2}-a0-1"
    args = again["spec"]["containers"][0]["args"]
    assert args[args.index("--seed") + 1] == "1"
    plan, status = step(status, [analysis_pod(name, AnalysisResult(verdict="Fail")),
                                 analysis_pod(again["metadata"]["name"], AnalysisResult(verdict="Fail"))], policy)
    assert status.rollout is not None and status.rollout.phase == "RolledBack"


def test_inconclusive_pauses_for_a_person_who_promotes_or_aborts() -> None:
    _, status, name = started()
    done = [analysis_pod(name, AnalysisResult(verdict="Inconclusive", message="kidIncrease inconclusive"))]
    plan, paused = step(status, done)
    assert paused.rollout is not None and paused.rollout.phase == "Paused"
    assert paused.stable_revision == REV1 and "RolloutPaused" in reasons(plan)
    progressing = next(c for c in paused.conditions if c.type == "Progressing")
    assert progressing.reason == "RolloutPaused" and PROMOTE_ANNOTATION in progressing.message
    plan, still = step(paused, done)
    assert still.rollout == paused.rollout and not plan.create

    _, promoted = step(paused, done, annotations={PROMOTE_ANNOTATION: REV2})
    assert promoted.stable_revision == REV2 and promoted.rollout is not None
    assert promoted.rollout.phase == "Promoted" and "by a person" in promoted.rollout.message
    _, aborted = step(paused, done, annotations={ABORT_ANNOTATION: REV2})
    assert aborted.stable_revision == REV1 and aborted.rollout is not None and aborted.rollout.phase == "RolledBack"
    # An annotation naming another revision decides nothing.
    _, stale = step(paused, done, annotations={PROMOTE_ANNOTATION: REV1})
    assert stale.rollout == paused.rollout


def test_manual_approval_waits_after_every_analysis_passed() -> None:
    policy = {"approval": "manual"}
    _, status, name = started(policy)
    done = [analysis_pod(name, AnalysisResult(verdict="Pass"))]
    plan, waiting = step(status, done, policy)
    assert waiting.rollout is not None and waiting.rollout.phase == "AwaitingApproval"
    assert waiting.stable_revision == REV1 and "AwaitingApproval" in reasons(plan)
    _, promoted = step(waiting, done, policy, annotations={PROMOTE_ANNOTATION: REV2})
    assert promoted.stable_revision == REV2


def test_an_analysis_pod_that_dies_without_a_result_is_inconclusive_never_a_pass() -> None:
    _, status, name = started()
    _, status = step(status, [analysis_pod(name, None, code=137, message="OOMKilled")])
    assert status.rollout is not None and status.rollout.phase == "Paused"
    record = status.rollout.analyses[0]
    assert record.state == "Inconclusive" and "exited 137" in record.message
    _, status2, name2 = started()
    _, status2 = step(status2, [analysis_pod(name2, None, code=0, message="not json")])
    assert status2.rollout is not None and status2.rollout.analyses[0].state == "Inconclusive"


def test_a_canary_that_breaks_mid_analysis_is_rolled_back_and_the_stable_stays() -> None:
    _, status, name = started()
    broken = {REV1: deployment(1), REV2: deployment(0, deadline_exceeded=True)}
    plan, status = run(status, source(SHA2), broken, pods=[], gis=service_spec())
    assert status.stable_revision == REV1 and status.rollout is not None
    assert status.rollout.phase == "RolledBack" and "the canary revision failed" in status.rollout.message
    assert DeletePod(name) in plan.delete


def test_rollout_status_shows_every_measurement_with_its_bound_and_verdict() -> None:
    _, status, name = started()
    result = AnalysisResult(verdict="Fail", measurements=[KID_FAIL], message="kidIncrease 0.24 > 0.1",
                            feature_extractor="domain", sample_size=1000)
    _, status = step(status, [analysis_pod(name, result)])
    text = render("fashion", "ns", status)
    assert f"Rollout:    {REV2} against {REV1} (canary): RolledBack" in text
    assert "quality in domain features, 1000 samples per revision" in text
    assert "✖ kidIncrease 0.24 [0.18, 0.31] (bound 0.1): Fail" in text
    assert "Rollout:    none yet" in render("fashion", "ns", stable_rev1())


def test_pointing_back_at_a_retired_revision_loads_it_again_and_rolls_it_out() -> None:
    _, status, name = started()
    _, status = step(status, [analysis_pod(name, AnalysisResult(verdict="Pass"))])
    assert status.stable_revision == REV2 and [r.state for r in status.revisions] == ["Retired", "Ready"]
    plan, status = run(status, source(SHA1), {REV2: deployment(1)}, gis=service_spec())
    assert [r.state for r in status.revisions] == ["Loading", "Ready"] and status.stable_revision == REV2
    assert f"fashion-{REV1}" in {m["metadata"]["name"] for m in plan.apply if m["kind"] == "Deployment"}
    plan, status = run(status, source(SHA1), BOTH_READY, gis=service_spec())
    assert status.rollout is not None and status.rollout.revision == REV1 and status.rollout.from_revision == REV2
    assert [p["metadata"]["name"] for p in plan.create] == [f"fashion-{REV1}-a0-0"]


def test_a_canary_whose_triton_was_killed_and_restarted_is_rolled_back_but_a_stable_one_stays() -> None:
    _, status, name = started()

    def restarted(revision: str) -> dict[str, Any]:
        return {"metadata": {"name": f"fashion-{revision}-x", "labels": {naming.REVISION_LABEL: revision}},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": naming.TRITON_CONTAINER, "state": {"running": {}}, "ready": True,
                     "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}}

    plan, rolled_back = step(status, [restarted(REV2), {"metadata": {"name": name, "labels": {}}, "status": {}}])
    assert rolled_back.rollout is not None and rolled_back.rollout.phase == "RolledBack"
    assert "tritonserver exited 137" in rolled_back.rollout.message and rolled_back.stable_revision == REV1
    assert DeletePod(name) in plan.delete

    _, calm = step(status, [restarted(REV1), {"metadata": {"name": name, "labels": {}}, "status": {}}])
    assert calm.rollout is not None and calm.rollout.phase == "Progressing" and calm.stable_revision == REV1
