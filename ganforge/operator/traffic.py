"""Weighted traffic between a service's revisions: its Gateway API HTTPRoute.

With `spec.gateway`, the operator keeps one HTTPRoute, named like the service, attached to that
Gateway. It sends requests for /v2/models/<modelName> to the revision Services by weight: the
stable revision, the canary at its step's weight, and revisions that lost their traffic at weight
0 while they drain. The route names revision Services, never the stable Service: the stable
Service's selector moves in one write at promotion, while the route moves in steps.

Pure: builds the route and reads back what the Gateway made of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ganforge.api.inference_service import (
    GATEWAY_API_GROUP,
    GATEWAY_API_VERSION,
    TRITON_HTTP_PORT,
    GatewaySpec,
)
from ganforge.operator import naming
from ganforge.operator.serving_children import ServiceRef


@dataclass(frozen=True)
class Backend:
    revision: str
    weight: int  # relative; 0 = no new requests


@dataclass(frozen=True)
class RouteState:
    """The route as the apiserver has it: each revision's weight, and the Gateway's verdict on it."""

    weights: Mapping[str, int]
    accepted: bool  # every parent Gateway accepted this generation and resolved its backends
    message: str  # for people


def http_route(service: ServiceRef, gateway: GatewaySpec, model_name: str,
               backends: Sequence[Backend]) -> dict[str, Any]:
    parent: dict[str, Any] = {"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    rule = {
        # Gateway API matches path prefixes segment by segment: /v2/models/fashion does not match
        # /v2/models/fashion2.
        "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{model_name}"}}],
        "backendRefs": [{"name": naming.revision_object(service.name, backend.revision), "port": TRITON_HTTP_PORT,
                         "weight": backend.weight} for backend in backends],
    }
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": [rule]}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {"apiVersion": f"{GATEWAY_API_GROUP}/{GATEWAY_API_VERSION}", "kind": "HTTPRoute",
            "metadata": service.metadata(service.name), "spec": spec}


def read_route(service: ServiceRef, route: Mapping[str, Any] | None) -> RouteState | None:
    """None when the route does not exist (yet)."""
    if route is None:
        return None
    prefix = f"{service.name}-"
    weights: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            name = str(ref.get("name", ""))
            if name.startswith(prefix):
                weights[name[len(prefix):]] = int(ref.get("weight", 1))
    generation = int(route.get("metadata", {}).get("generation") or 0)
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return RouteState(weights, False, f"HTTPRoute {service.name}: no Gateway has taken it up yet")
    for parent in parents:
        gateway = (parent.get("parentRef") or {}).get("name", "?")
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in ("Accepted", "ResolvedRefs"):
            condition = conditions.get(kind)
            if condition is None or int(condition.get("observedGeneration") or 0) < generation:
                return RouteState(weights, False, f"HTTPRoute {service.name}: Gateway {gateway} has not yet "
                                                  f"taken up generation {generation}")
            if condition.get("status") != "True":
                return RouteState(weights, False, f"HTTPRoute {service.name}: Gateway {gateway}: {kind} is "
                                                  f"{condition.get('status')} ({condition.get('reason')}: "
                                                  f"{condition.get('message', '')})")
    names = ", ".join(sorted({str((p.get("parentRef") or {}).get("name", "?")) for p in parents}))
    split = ", ".join(f"{revision} {weight}" for revision, weight in weights.items())
    return RouteState(weights, True, f"HTTPRoute {service.name} accepted by Gateway {names}: {split}")
