"""Weighted canary traffic through a Gateway API HTTPRoute, without a cluster: the route's weights
step by step, analyses that wait for the Gateway to take a weight up, drains before removal, and
the checks that go on while a person decides."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ganforge.api.analysis import AnalysisResult
from ganforge.api.inference_service import GANInferenceServiceSpec, GANInferenceServiceStatus
from ganforge.operator import traffic
from ganforge.operator.reconcile import DeleteObject, Plan
from ganforge.operator.serving_reconcile import ServingObserved, reconcile_service
from ganforge.operator.settings import OperatorSettings
from tests.unit.operator.test_serving_reconcile import (
    GIS,
    NOW,
    REV1,
    REV2,
    SETTINGS,
    SHA1,
    SHA2,
    analysis_pod,
    deployment,
    run,
    source,
    spec,
)

GATEWAY = {"name": "ganforge", "namespace": "ganforge-gateway", "drainSeconds": 10}
BOTH_READY = {REV1: deployment(1), REV2: deployment(1)}


def routed_spec(**rollout: Any) -> GANInferenceServiceSpec:
    return spec(gateway=GATEWAY, rollout=rollout)


def accepted(route: dict[str, Any], generation: int = 1, status: str = "True") -> dict[str, Any]:
    """`route` as the apiserver returns it once the Gateway has taken it up."""
    conditions = [{"type": kind, "status": status, "reason": "Accepted" if status == "True" else "Refused",
                   "message": "", "observedGeneration": generation} for kind in ("Accepted", "ResolvedRefs")]
    return {**route, "metadata": {**route["metadata"], "generation": generation},
            "status": {"parents": [{"parentRef": {"name": "ganforge"}, "conditions": conditions}]}}


class Rollout:
    """Drives the service's reconcile pass by pass, feeding back the route the last pass applied."""

    def __init__(self, gis: GANInferenceServiceSpec, settings: OperatorSettings = SETTINGS) -> None:
        self.gis, self.settings, self.now = gis, settings, NOW
        self.route: dict[str, Any] | None = None
        self.pods: list[dict[str, Any]] = []
        self.deployments: dict[str, Any] = {REV1: deployment(1)}
        _, status = run(GANInferenceServiceStatus(), source(SHA1))
        _, self.status = run(status, source(SHA1), {REV1: deployment(1)})
        self.plan = Plan()

    def step(self, seconds: float = 2.0, gateway_accepts: bool = True,
             annotations: dict[str, str] | None = None) -> Plan:
        self.now += timedelta(seconds=seconds)
        observed = ServingObserved(source(SHA2), self.deployments, self.pods, self.now, annotations or {},
                                   self.route)
        self.plan = reconcile_service(GIS, self.gis, self.status, 3, observed, self.settings)
        self.status = GANInferenceServiceStatus.model_validate(self.status.to_wire() | (self.plan.status or {}))
        routes = [m for m in self.plan.apply if m["kind"] == "HTTPRoute"]
        if routes:
            # The apiserver bumps metadata.generation only when the spec changes.
            generation = int((self.route or {}).get("metadata", {}).get("generation", 0))
            generation += int(self.route is None or self.route["spec"] != routes[0]["spec"])
            self.route = accepted(routes[0], generation) if gateway_accepts else {
                **routes[0], "metadata": {**routes[0]["metadata"], "generation": generation}}
        for pod in self.plan.create:
            self.pods.append({"metadata": pod["metadata"], "status": {"phase": "Running"}})
        for obj in self.plan.delete_objects:
            self.deployments.pop(obj.name.removeprefix("fashion-"), None)
        return self.plan

    @classmethod
    def analysing(cls, **rollout: Any) -> Rollout:
        """Both revisions ready, the route at the first step, its analysis running."""
        driver = cls(routed_spec(**rollout))
        driver.deployments = dict(BOTH_READY)
        driver.step()
        driver.step()
        assert driver.status.rollout is not None and driver.status.rollout.analyses[-1].state == "Running"
        return driver

    def finish_analysis(self, verdict: str) -> None:
        running = self.pods[-1]["metadata"]["name"]
        self.pods[-1] = analysis_pod(running, AnalysisResult(verdict=verdict, message=f"gates: {verdict}"))  # type: ignore[arg-type]

    def weights(self) -> dict[str, int]:
        assert self.route is not None
        return {ref["name"]: ref["weight"] for ref in self.route["spec"]["rules"][0]["backendRefs"]}


def test_the_route_sends_the_model_path_to_the_revision_services_of_the_stable_alone_at_first() -> None:
    rollout = Rollout(routed_spec())
    rollout.step()
    assert rollout.route is not None
    spec_ = rollout.route["spec"]
    assert spec_["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ganforge",
                                    "namespace": "ganforge-gateway"}]
    assert spec_["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2/models/fashion"}}]
    assert spec_["rules"][0]["backendRefs"][0] == {"name": f"fashion-{REV1}", "port": 8000, "weight": 100}
    assert rollout.route["metadata"]["ownerReferences"][0]["uid"] == "uid-9"


def test_each_step_routes_its_weight_and_is_analysed_only_once_the_gateway_took_it_up() -> None:
    rollout = Rollout(routed_spec(steps=[10, 50, 100]))
    rollout.deployments = dict(BOTH_READY)
    rollout.step(gateway_accepts=False)  # the canary is Ready: the rollout starts, the route takes 10 %
    assert rollout.status.rollout is not None and rollout.status.rollout.weights == [10, 50, 100]
    assert rollout.weights() == {f"fashion-{REV1}": 90, f"fashion-{REV2}": 10}
    assert not rollout.plan.create  # the Gateway has not accepted the weight: no analysis yet
    progressing = next(c for c in rollout.status.conditions if c.type == "Progressing")
    assert "waiting for the Gateway to route 10% to the canary" in progressing.message
    rollout.step()  # this pass still sees the route the Gateway had not taken up; then it does
    assert not rollout.plan.create
    rollout.step()
    assert [p["metadata"]["name"] for p in rollout.plan.create] == [f"fashion-{REV2}-a0-0"]
    assert rollout.status.canary_weight == 10 and rollout.status.rollout.analyses[0].weight == 10
    assert "accepted by Gateway ganforge" in (rollout.status.route or "")

    for weight, index in ((50, 1), (100, 2)):
        rollout.finish_analysis("Pass")
        rollout.step()  # the pass moves the route on; the next analysis waits for it
        assert rollout.weights()[f"fashion-{REV2}"] == weight and not rollout.plan.create
        rollout.step()
        assert [p["metadata"]["name"] for p in rollout.plan.create] == [f"fashion-{REV2}-a{index}-0"]
    assert rollout.weights() == {f"fashion-{REV1}": 0, f"fashion-{REV2}": 100}

    rollout.finish_analysis("Pass")
    plan = rollout.step()
    assert rollout.status.stable_revision == REV2 and rollout.status.rollout.phase == "Promoted"
    # The old stable keeps its pods, without new requests, while it drains.
    assert rollout.weights() == {f"fashion-{REV2}": 100, f"fashion-{REV1}": 0}
    assert not [d for d in plan.delete_objects if d.name == f"fashion-{REV1}"]
    assert rollout.status.revisions[0].drain_until is not None
    assert plan.requeue_after is not None and plan.requeue_after <= 10
    rollout.step(seconds=5)
    assert DeleteObject("Deployment", f"fashion-{REV1}") not in rollout.plan.delete_objects
    rollout.step(seconds=6)
    assert DeleteObject("Deployment", f"fashion-{REV1}") in rollout.plan.delete_objects
    assert rollout.weights() == {f"fashion-{REV2}": 100}


def test_a_rolled_back_canary_loses_its_weight_at_once_and_drains_before_it_goes() -> None:
    rollout = Rollout.analysing(steps=[25, 100])
    rollout.finish_analysis("Fail")
    plan = rollout.step()
    assert rollout.status.rollout is not None and rollout.status.rollout.phase == "RolledBack"
    assert rollout.weights() == {f"fashion-{REV1}": 100, f"fashion-{REV2}": 0}
    assert rollout.status.canary_weight == 0 and rollout.status.stable_revision == REV1
    assert not plan.delete_objects
    rollout.step(seconds=11)
    assert DeleteObject("Service", f"fashion-{REV2}") in rollout.plan.delete_objects
    assert rollout.weights() == {f"fashion-{REV1}": 100}


def test_a_canary_without_a_ready_pod_gets_no_weight() -> None:
    rollout = Rollout(routed_spec(steps=[50, 100]))
    rollout.deployments = dict(BOTH_READY)
    rollout.step()
    assert rollout.weights()[f"fashion-{REV2}"] == 50
    rollout.deployments[REV2] = deployment(0)  # its pod stopped being ready
    rollout.step()
    assert rollout.weights() == {f"fashion-{REV1}": 100, f"fashion-{REV2}": 0}
    assert rollout.status.canary_weight == 0


def test_blue_green_and_services_without_a_gateway_analyse_at_weight_zero() -> None:
    rollout = Rollout(routed_spec(strategy="blueGreen"))
    rollout.deployments = dict(BOTH_READY)
    rollout.step()
    assert rollout.status.rollout is not None and rollout.status.rollout.weights == [0]
    assert [p["metadata"]["name"] for p in rollout.plan.create] == [f"fashion-{REV2}-a0-0"]
    assert rollout.weights() == {f"fashion-{REV1}": 100, f"fashion-{REV2}": 0}
    rollout.finish_analysis("Pass")
    rollout.step()
    assert rollout.weights() == {f"fashion-{REV2}": 100, f"fashion-{REV1}": 0}

    plain = Rollout(spec())
    plain.deployments = dict(BOTH_READY)
    plain.step()
    assert plain.route is None and plain.status.route is None
    assert plain.status.rollout is not None and plain.status.rollout.weights == [0]
    assert "without spec.gateway" in plain.status.rollout.message


def test_checks_go_on_while_awaiting_approval_and_a_failure_rolls_back() -> None:
    settings = SETTINGS.model_copy(update={"approval_recheck_seconds": 60.0})
    rollout = Rollout.analysing(steps=[100], approval="manual")
    rollout.settings = settings
    rollout.finish_analysis("Pass")
    rollout.step()
    assert rollout.status.rollout is not None and rollout.status.rollout.phase == "AwaitingApproval"
    assert rollout.status.canary_weight == 100  # the canary keeps its traffic while a person decides
    rollout.step(seconds=30)
    assert not rollout.plan.create  # not due yet
    rollout.step(seconds=31)
    assert [p["metadata"]["name"] for p in rollout.plan.create] == [f"fashion-{REV2}-a0-1"]
    rollout.step()
    assert rollout.status.rollout.phase == "AwaitingApproval"  # still running: nothing decided
    rollout.finish_analysis("Fail")
    rollout.step()
    assert rollout.status.rollout.phase == "RolledBack" and rollout.status.stable_revision == REV1
    assert "while awaiting approval" in rollout.status.rollout.message
    assert rollout.weights() == {f"fashion-{REV1}": 100, f"fashion-{REV2}": 0}


def test_the_gateways_verdict_on_the_route_is_read_for_this_generation() -> None:
    route = traffic.http_route(GIS, routed_spec().gateway, "fashion",  # type: ignore[arg-type]
                               [traffic.Backend(REV1, 70), traffic.Backend(REV2, 30)])
    assert traffic.read_route(GIS, None) is None
    state = traffic.read_route(GIS, route)
    assert state is not None and not state.accepted and "no Gateway has taken it up" in state.message
    assert dict(state.weights) == {REV1: 70, REV2: 30}
    stale = accepted(route, generation=1) | {"metadata": {**route["metadata"], "generation": 2}}
    state = traffic.read_route(GIS, stale)
    assert state is not None and not state.accepted and "not yet taken up generation 2" in state.message
    refused = traffic.read_route(GIS, accepted(route, status="False"))
    assert refused is not None and not refused.accepted and "Accepted is False (Refused" in refused.message
    good = traffic.read_route(GIS, accepted(route))
    assert good is not None and good.accepted and f"{REV1} 70, {REV2} 30" in good.message


def test_hostnames_and_section_go_into_the_route() -> None:
    gis = spec(gateway={"name": "edge", "sectionName": "web", "hostnames": ["gan.example.com"]})
    assert gis.gateway is not None
    route = traffic.http_route(GIS, gis.gateway, "fashion", [traffic.Backend(REV1, 100)])
    assert route["spec"]["hostnames"] == ["gan.example.com"]
    assert route["spec"]["parentRefs"][0] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                              "name": "edge", "sectionName": "web"}
    assert gis.gateway.drain_seconds == 10
