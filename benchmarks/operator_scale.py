"""What the operator costs at 50 and 500 jobs, against the real apiserver, side by side with a
baseline revision of the operator (by default the one before watches replaced per-pass reads).

Run: .venv/bin/python benchmarks/operator_scale.py [--jobs 50 500] [--baseline REV] [--rate 20]
     [--idle-seconds 60]

For each operator (baseline, then this tree) and each job count, on a fresh control plane
(etcd, kube-apiserver with an audit log, controller-manager, scheduler; no nodes, so pods stay
Pending, as a gang that waits for capacity does):
  * jobs are created at --rate per second (two workers each, export off), and each one's latency
    is from its create call returning to the benchmark's pod watch seeing both of its pods;
  * once every gang exists and things have settled, the operator is left alone with its idle
    jobs for --idle-seconds: the apiserver's audit log counts its requests (by the operator's
    own client certificate), /proc its CPU time and memory.
The operator runs as `ganforge operator --standalone` in its own process; the baseline from a
`git archive` of the revision, imported ahead of this tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kubernetes import client, config, watch

from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.local.control_plane import ControlPlane, free_port
from ganforge.local.install import kubectl
from ganforge.operator import naming

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "charts" / "ganforge" / "files" / "crds"
BASELINE = "70e8122"  # the operator whose every pass read the job, listed its pods and every node
OPERATOR_USER = "ganforge-operator-bench"
NAMESPACE = "bench"
SETTLE_SECONDS = 15.0
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: [{OPERATOR_USER}]
  - level: None
"""


def job(name: str) -> dict[str, object]:
    return {"apiVersion": f"{API_GROUP}/{VERSION}", "kind": "GANTrainingJob", "metadata": {"name": name},
            "spec": {"dataset": {"uri": "fake://blobs?n=512&classes=4", "format": "fake", "resolution": 16},
                     "training": {"batchSize": 16},
                     "resources": {"workers": 2, "gpusPerWorker": 0, "cpu": "500m", "memory": "1Gi",
                                   "spot": False},
                     "export": {"enabled": False}}}


@dataclass
class Result:
    operator: str
    jobs: int
    p50: float
    p95: float
    created_seconds: float
    requests_per_job: float  # the operator's requests from the first create until the idle window, per job
    requests_per_second: float
    verbs: dict[str, int]
    cpu_percent: float
    rss_mib: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def audited(log: Path, since: float, until: float) -> Counter[str]:
    """The operator's requests that completed in [since, until) (epoch seconds), by verb."""
    verbs: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        stamp = event.get("stageTimestamp", "").replace("Z", "+00:00")
        moment = datetime.fromisoformat(stamp).timestamp()
        if since <= moment < until:
            verbs[event["verb"]] += 1
    return verbs


class PodWatch:
    """When each job's pods were first seen, from one watch of the namespace."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.first_seen: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(core,), daemon=True)
        self._thread.start()

    def _run(self, core: client.CoreV1Api) -> None:
        version = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
        while not self._stop.is_set():
            stream = watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, resource_version=version,
                                          timeout_seconds=5)
            for event in stream:
                pod = event["object"]
                version = pod.metadata.resource_version
                job_name = (pod.metadata.labels or {}).get(naming.JOB_LABEL)
                if job_name and event["type"] == "ADDED":
                    self.first_seen.setdefault(job_name, {}).setdefault(pod.metadata.name, time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def start_operator(plane: ControlPlane, kubeconfig: Path, source: Path, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**plane.child_env(), "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(source)}
    command = [sys.executable, "-c",
               "import sys, ganforge; print('ganforge from', ganforge.__file__, file=sys.stderr, flush=True);"
               "from ganforge.operator.cli import main; sys.exit(main())",
               "--standalone", f"--metrics-port={free_port()}", "--health-port=0"]
    log = (workdir / "operator.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def measure(operator: str, source: Path, count: int, rate: float, idle_seconds: float, workdir: Path) -> Result:
    workdir.mkdir(parents=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = workdir / "audit.log"
    plane = ControlPlane(workdir / "plane", extra_apiserver_args=[
        f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}", "--audit-log-format=json",
        "--audit-log-mode=blocking"])
    with plane:
        kubectl(plane.admin_kubeconfig, "apply", "--server-side", "-f", str(CRDS))
        kubectl(plane.admin_kubeconfig, "create", "namespace", NAMESPACE)
        kubectl(plane.admin_kubeconfig, "wait", "--for=condition=Established", "crd", "--all", timeout=60)
        api = config.new_client_from_config(config_file=str(plane.admin_kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        pods = PodWatch(core)
        operator_kubeconfig = plane.issue_client_kubeconfig("operator", OPERATOR_USER, ("system:masters",))
        process = start_operator(plane, operator_kubeconfig, source, workdir)
        try:
            time.sleep(5)  # the operator's start-up (its first LISTs and watches) is not what is measured
            created: dict[str, float] = {}
            started, started_epoch = time.monotonic(), time.time()
            for index in range(count):
                name = f"job-{index:04d}"
                time.sleep(max(0.0, started + index / rate - time.monotonic()))
                custom.create_namespaced_custom_object(API_GROUP, VERSION, NAMESPACE, PLURAL, job(name))
                created[name] = time.monotonic()
            deadline = time.monotonic() + 600
            while sum(len(p) == 2 for p in pods.first_seen.values()) < count:
                if process.poll() is not None:
                    raise RuntimeError(f"the {operator} operator exited; see {workdir / 'operator.log'}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{operator}: not every gang was created in 600 s")
                time.sleep(0.5)
            all_created = time.monotonic() - started
            latencies = sorted(max(pods.first_seen[name].values()) - at for name, at in created.items())
            time.sleep(SETTLE_SECONDS)
            cpu_before, window_start = cpu_seconds(process.pid), time.time()
            time.sleep(idle_seconds)
            cpu_after, window_end = cpu_seconds(process.pid), time.time()
            rss = rss_mib(process.pid)
            time.sleep(2)  # the audit log is written as requests complete
            verbs = audited(audit_log, window_start, window_end)
            launching = sum(audited(audit_log, started_epoch, window_start).values())
        finally:
            pods.stop()
            process.terminate()
            process.wait(30)
    return Result(operator, count, statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))],
                  all_created, launching / count, sum(verbs.values()) / idle_seconds, dict(verbs),
                  100 * (cpu_after - cpu_before) / idle_seconds, rss)


def baseline_tree(revision: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "ganforge"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the operator to compare with")
    parser.add_argument("--rate", type=float, default=20.0, help="jobs created per second")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--no-baseline", action="store_true", help="measure this tree only")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as scratch:
        root = Path(scratch)
        sources = {} if args.no_baseline else {f"baseline {args.baseline}": baseline_tree(args.baseline,
                                                                                           root / "baseline")}
        sources["this tree"] = ROOT
        for count in args.jobs:
            for label, source in sources.items():
                print(f"== {label}, {count} jobs", flush=True)
                result = measure(label, source, count, args.rate, args.idle_seconds,
                                 root / f"{label.split()[0]}-{count}")
                print(f"   {result}", flush=True)
                results.append(result)
    print(f"\njobs created at {args.rate:g}/s, 2 pods each, no nodes; idle window {args.idle_seconds:g} s; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| operator | jobs | create->pods p50 | p95 | requests per launch | API requests/s idle | per 100 jobs "
          "| CPU % idle | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.operator} | {r.jobs} | {r.p50:.2f} s | {r.p95:.2f} s | {r.requests_per_job:.1f} | "
              f"{r.requests_per_second:.1f} | "
              f"{100 * r.requests_per_second / r.jobs:.2f} | {r.cpu_percent:.1f} | {r.rss_mib:.0f} |")
    for count in args.jobs:
        pair = [r for r in results if r.jobs == count]
        if len(pair) == 2:
            print(f"\n{count} jobs: idle requests/s baseline {pair[0].requests_per_second:.1f} vs this "
                  f"{pair[1].requests_per_second:.1f}, p50 this/baseline = "
                  f"{pair[1].p50 / pair[0].p50:.2f}x, idle CPU this/baseline = "
                  f"{pair[1].cpu_percent / max(pair[0].cpu_percent, 1e-9):.2f}x")
    for r in results:
        print(f"{r.operator}, {r.jobs} jobs, idle requests by verb: {r.verbs}")


if __name__ == "__main__":
    main()
