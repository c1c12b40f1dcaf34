"""How long the quality-gated canary takes on `ganforge local`, against a plain replacement.

Run: .venv/bin/python benchmarks/rollout.py [--repeats 3] [--run-dir DIR]

Starts a local cluster with the operator and the Gateway (Traefik), trains the Fashion-MNIST DCGAN
of benchmarks/canary_gate.py (or reuses --run-dir), and serves its final generator. Then, per
repeat: a good candidate (the final generator at fp16, then at fp32 again, alternately) is rolled
out in two steps (25 %, 100 %) and promoted; a bad one (an earlier checkpoint of the run, a
different one each repeat) is rolled back. Serving gate: a 4 s load run, 2 clients; quality gate:
1000 samples per revision, as by default.

Baseline: a plain replacement, i.e. the time from `kubectl apply` of an artifact to its revision
serving as stable with nothing to compare it with (Triton's pod start and model load), measured
first on a fresh service. Reported: each good candidate's apply → promotion and its ratio to the
baseline; each bad candidate's first user traffic → rollback (the goal: at most 2 minutes) and
apply → rollback. Times from status are the operator's own timestamps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from canary_gate import checkpoints, train
from kubernetes import client, config

from ganforge.local.cluster import LocalCluster
from ganforge.local.install import install, install_gateway, kubectl
from ganforge.local.provisioner import claim_host_path
from ganforge.operator.serving_children import model_repository_claim
from ganforge.operator.settings import OperatorSettings
from ganforge.serving.export import export_checkpoint
from ganforge.serving.model_repository import Revision

T = TypeVar("T")
NAMESPACE, SERVICE, CLAIM = "default", "bench", "ganforge-models"
BAD_WITHIN_SECONDS = 120


def until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (value := probe()) is None or value is False:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def service(revision: Revision) -> dict[str, Any]:
    return {"apiVersion": "ganforge.io/v1alpha1", "kind": "GANInferenceService", "metadata": {"name": SERVICE},
            "spec": {"source": {"artifact": {"uri": f"pvc://{CLAIM}/{SERVICE}/{revision.path.name}",
                                             "sha256": revision.sha256}},
                     "triton": {"replicas": 1, "cpu": "500m", "memory": "1Gi"},
                     "gateway": {"name": "ganforge", "namespace": "ganforge-gateway", "drainSeconds": 3},
                     "rollout": {"steps": [25, 100], "gates": {"serving": {"durationSeconds": 4, "concurrency": 2}}}}}


class Bench:
    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig, self.workdir = kubeconfig, workdir

    def apply(self, document: dict[str, Any]) -> float:
        path = self.workdir / f"{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document))
        kubectl(self.kubeconfig, "apply", "-n", NAMESPACE, "-f", str(path))
        return time.monotonic()

    def status(self) -> dict[str, Any]:
        body = json.loads(kubectl(self.kubeconfig, "get", "gis", SERVICE, "-n", NAMESPACE, "-o", "json"))
        return body.get("status") or {}

    def decided(self, revision: str) -> dict[str, Any] | None:
        rollout = self.status().get("rollout") or {}
        done = rollout.get("revision") == revision and rollout.get("phase") in ("Promoted", "RolledBack")
        return rollout if done else None


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, help="reuse (or keep) a training run here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        run_dir = args.run_dir or workdir / "run"
        if not list(run_dir.rglob("manifest.json")):
            run_dir.mkdir(parents=True, exist_ok=True)
            train(run_dir, workdir / "cache")
        found = checkpoints(run_dir)
        final, earlier = found[-1], found[:-1]
        if len(earlier) < args.repeats:
            raise SystemExit(f"{len(earlier)} earlier checkpoints for {args.repeats} repeats")
        with LocalCluster(workdir / "cluster") as cluster:
            kubeconfig = cluster.kubeconfig
            core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
            until(lambda: len([n for n in core.list_node().items if any(
                c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]) == len(cluster.nodes),
                  120, "the nodes")
            install(kubeconfig)
            install_gateway(kubeconfig)
            bench = Bench(kubeconfig, workdir)
            bench.apply(model_repository_claim(NAMESPACE, CLAIM, OperatorSettings()))
            repository = Path(until(lambda: claim_host_path(core, NAMESPACE, CLAIM), 120, "the claim")) / SERVICE
            good = [export_checkpoint(final, repository, precision=p).revision for p in ("fp32", "fp16")]

            applied = bench.apply(service(good[0]))
            until(lambda: bench.status().get("stableRevision") == good[0].path.name, 300, "the first revision")
            baseline = time.monotonic() - applied
            print(f"plain replacement (first revision, no gate): {baseline:.1f} s from apply to stable", flush=True)

            rows = []
            for repeat in range(args.repeats):
                candidate = good[(repeat + 1) % 2]
                applied = bench.apply(service(candidate))
                rollout = until(lambda name=candidate.path.name: bench.decided(name), 600, "the good candidate")
                promoted = time.monotonic() - applied
                assert rollout["phase"] == "Promoted", rollout
                bad = export_checkpoint(earlier[repeat], repository).revision
                applied = bench.apply(service(bad))
                rollout = until(lambda name=bad.path.name: bench.decided(name), 600, "the bad candidate")
                rolled_back = time.monotonic() - applied
                assert rollout["phase"] == "RolledBack", rollout
                with_traffic = seconds_between(rollout["analyses"][0]["startedTime"], rollout["finishedTime"])
                rows.append((promoted, with_traffic, rolled_back, earlier[repeat].name, rollout["message"]))
                print(f"repeat {repeat + 1}: good promoted {promoted:.1f} s after apply; bad ({earlier[repeat].name}) "
                      f"rolled back {with_traffic:.1f} s after its first traffic, {rolled_back:.1f} s after apply: "
                      f"{rollout['message'][:100]}", flush=True)

    print("\n| repeat | good: apply → promoted (s) | ratio to plain replacement | bad: first traffic → "
          "rolled back (s) | bad: apply → rolled back (s) | bad candidate |")
    print("|---:|---:|---:|---:|---:|---|")
    for index, (promoted, with_traffic, rolled_back, name, _) in enumerate(rows, 1):
        print(f"| {index} | {promoted:.1f} | {promoted / baseline:.2f}x | {with_traffic:.1f} | {rolled_back:.1f} "
              f"| {name} |")
    worst = max(row[1] for row in rows)
    print(f"\nplain replacement {baseline:.1f} s; median good promotion {statistics.median(r[0] for r in rows):.1f} s "
          f"({statistics.median(r[0] for r in rows) / baseline:.2f}x); worst bad first traffic → rollback "
          f"{worst:.1f} s: goal ≤ {BAD_WITHIN_SECONDS} s {'met' if worst <= BAD_WITHIN_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
