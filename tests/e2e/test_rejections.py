"""A pod the apiserver refuses (here a ResourceQuota; PodSecurity admission and webhooks refuse the
same way) is told to the user, never retried silently: the job gets a Warning Event and a
condition with the apiserver's message, retries with backoff, and runs once the quota allows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ganforge.api import metrics as catalogue
from ganforge.api.training_job import PLURAL
from ganforge.local.install import kubectl
from tests.e2e.cluster import apply, assert_scraped, query_until, status_of
from tests.helpers import eventually, fast_job


def _events(kubeconfig: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    found = json.loads(kubectl(kubeconfig, "-n", namespace, "get", "events", "-o", "json",
                               "--field-selector", f"involvedObject.name={name}"))
    return found["items"]  # type: ignore[no-any-return]


@pytest.mark.timeout(600)
def test_a_pod_refused_by_a_quota_is_reported_and_retried_until_the_quota_allows(
        operator: Path, local_cluster: Any, local_api: Any, local_namespace: str, tmp_path: Path) -> None:
    namespace = local_namespace
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-pod"},
             "spec": {"hard": {"pods": "1"}}}
    apply(operator, namespace, quota, tmp_path)
    apply(operator, namespace, fast_job("over-quota"), tmp_path)  # two workers

    def refused() -> dict[str, Any] | None:
        conditions = status_of(local_api, namespace, PLURAL, "over-quota").get("conditions") or []
        return next((c for c in conditions if c["type"] == "Created" and c["reason"] == "ChildRejected"), None)

    condition = eventually(refused, 120, "the refusal to reach the job's status")
    assert condition["status"] == "False" and "exceeded quota" in condition["message"], condition
    events = eventually(lambda: [e for e in _events(operator, namespace, "over-quota")
                                 if e["reason"] == "ChildRejected"], 60, "a ChildRejected Event")
    assert events[0]["type"] == "Warning" and "exceeded quota" in events[0]["message"]
    # The refusal is a reconcile error, counted by kind and scraped by the cluster's Prometheus.
    assert_scraped(local_cluster.prometheus.url, set(catalogue.OPERATOR_RECONCILE_ERRORS.series))
    query_until(local_cluster.prometheus.url, 'ganforge_operator_reconcile_errors_total{kind="http-403"}',
                lambda samples: sum(float(s["value"][1]) for s in samples) >= 1)

    kubectl(operator, "-n", namespace, "delete", "resourcequota", "one-pod")
    eventually(lambda: status_of(local_api, namespace, PLURAL, "over-quota").get("phase") == "Succeeded", 300,
               "the job to run once the quota allows it")
    created = next(c for c in status_of(local_api, namespace, PLURAL, "over-quota")["conditions"]
                   if c["type"] == "Created")
    assert created["status"] == "True", created
