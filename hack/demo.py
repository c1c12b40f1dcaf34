"""`make demo`: train, survive a spot reclaim, export, serve through Triton, generate, and roll
two more generators out through the quality-gated canary.

Starts `ganforge local`, installs the CRDs, the operator and the Gateway (Traefik), applies the
Fashion-MNIST example (two workers on the spot node), reclaims the spot node half-way through, and
follows the job as it resumes from its emergency checkpoint, finishes and is exported to ONNX. Then
applies the example GANInferenceService, waits until Triton serves the exported revision through
the stable Service, and writes a sample grid generated through Triton (`ganforge generate`).

Then the service is routed through the Gateway with canary steps, and two jobs with
`spec.rollout` train and hand their generators to it: one trained longer (promoted), one trained
for a tenth of the schedule (rolled back). Each verdict is printed with its KID interval and FD,
and so are the counts of a client that called the stable endpoint all along and of one that
called through the Gateway.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from ganforge.local.cli import state_dir
from ganforge.local.install import (
    EXAMPLE_JOB,
    EXAMPLE_SERVICE,
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    GATEWAY_SERVICE,
    kubectl,
)
from ganforge.local.provisioner import claim_host_path
from ganforge.serving.caller import ContinuousCaller

NAME, NAMESPACE = "fashion-mnist-dcgan", "ganforge-demo"
# The demo's namespace enforces the restricted Pod Security Standard, as a platform team's would.
DEMO_NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
SERVICE = str(yaml.safe_load(EXAMPLE_SERVICE.read_text())["metadata"]["name"])
# The canary half: the service's traffic through the Gateway in two steps, a short load run.
CANARY = {"gateway": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE, "drainSeconds": 5},
          "rollout": {"strategy": "canary", "steps": [25, 100], "gates": {"serving": {"durationSeconds": 5}}}}


def ganforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ganforge.cli", *args], check=True)


def job_status(kubeconfig: Path, name: str = NAME) -> dict[str, Any]:
    body = json.loads(kubectl(kubeconfig, "get", "gtj", name, "-n", NAMESPACE, "-o", "json"))
    return body.get("status") or {}


def service_status(kubeconfig: Path) -> dict[str, Any]:
    body = json.loads(kubectl(kubeconfig, "get", "gis", SERVICE, "-n", NAMESPACE, "-o", "json"))
    return body.get("status") or {}


def describe(status: dict[str, Any]) -> str:
    progress, checkpoint = status.get("progress") or {}, status.get("checkpoint") or {}
    workers = status.get("workers") or {}
    return (f"phase={status.get('phase', '-'):<10} gang={status.get('gang', 0)} "
            f"workers={workers.get('ready', 0)}/{workers.get('total', 0)} kimg={progress.get('kimg', 0):.2f} "
            f"img/s={progress.get('imagesPerSecond', 0):.0f} checkpoint@{checkpoint.get('kimg', '-')} "
            f"preemptions={status.get('preemptions', 0)}")


def serve(kubeconfig: Path, grid: Path, timeout: float) -> bool:
    """Apply the example service, wait for Triton to serve the export, and generate through it."""
    kubectl(kubeconfig, "apply", "-n", NAMESPACE, "-f", str(EXAMPLE_SERVICE))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = json.loads(kubectl(kubeconfig, "get", "gis", SERVICE, "-n", NAMESPACE, "-o", "json"))
        status = body.get("status") or {}
        if status.get("phase") == "Ready":
            break
        if status.get("phase") == "Degraded":
            print("the service is Degraded:", json.dumps(status.get("conditions"), indent=2), file=sys.stderr)
            return False
        time.sleep(2)
    print(kubectl(kubeconfig, "get", "gis", "-n", NAMESPACE))
    # The proxies pick up a new endpoint a moment after it is ready: retry the first call briefly.
    for _ in range(15):
        result = subprocess.run([sys.executable, "-m", "ganforge.cli", "generate", SERVICE, "-n", "80", "--out",
                                 str(grid), "--namespace", NAMESPACE, "--kubeconfig", str(kubeconfig)],
                                capture_output=True, text=True)
        if result.returncode == 0:
            print(result.stdout.strip())
            return True
        time.sleep(2)
    print("ganforge generate failed:", result.stderr.strip(), file=sys.stderr)
    return False


def sample_grid(kubeconfig: Path) -> Path | None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    volume = claim_host_path(core, NAMESPACE, f"{NAME}-checkpoints")
    if volume is None:
        return None
    grids = sorted((Path(volume) / "checkpoints" / "run" / "samples").glob("fakes-*.png"))
    return grids[-1] if grids else None


def candidate_job(name: str, total_kimg: float) -> dict[str, Any]:
    """The example job under another name, trained for `total_kimg` on the on-demand node, handing
    its export to the example service (spec.rollout)."""
    body = yaml.safe_load(EXAMPLE_JOB.read_text())
    body["metadata"]["name"] = name
    body["spec"]["training"]["totalKimg"] = total_kimg
    body["spec"]["resources"]["spot"] = False
    body["spec"]["rollout"] = {"service": SERVICE}
    return body


def verdicts(rollout: dict[str, Any]) -> list[str]:
    lines = []
    for analysis in rollout.get("analyses") or []:
        measured = {m["name"]: m for m in analysis.get("measurements") or []}
        kid = measured.get("kidIncrease") or {}
        fd_canary, fd_stable = (measured.get(k, {}).get("value") for k in ("fdCanary", "fdStable"))
        interval = (f"KID increase {kid['value']:+.3f} [{kid['lower']:+.3f}, {kid['upper']:+.3f}] "
                    f"(margin {kid['bound']:g})" if kid.get("lower") is not None else "KID increase -")
        fd = f"FD {fd_canary:.2f} vs stable {fd_stable:.2f}" if fd_canary is not None and fd_stable is not None \
            else "FD -"
        lines.append(f"    step {analysis['step'] + 1} at {analysis['weight']}% of the traffic: {analysis['state']}: "
                     f"{interval}; {fd}; {analysis.get('message', '')}")
    return lines


def roll_out(kubeconfig: Path, body: dict[str, Any], started: float, timeout: float) -> dict[str, Any]:
    """Apply a candidate job and follow it through training, export and its rollout."""
    path = state_dir() / f"{body['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(body))
    name = body["metadata"]["name"]
    kubectl(kubeconfig, "delete", "gtj", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(kubeconfig, "apply", "-n", NAMESPACE, "-f", str(path))
    deadline, last = time.monotonic() + timeout, ""
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = job_status(kubeconfig, name)
        rollout = status.get("rollout") or {}
        line = f"{name}: {describe(status)}" + (f" rollout={rollout.get('phase')}: {rollout.get('message', '')}"
                                                 if rollout else "")
        if line != last:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)
            last = line
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(2)
    return status


def canary(kubeconfig: Path, started: float, timeout: float) -> bool:
    """Two candidates through the canary while two clients call: one on the stable Service, one
    through the Gateway."""
    kubectl(kubeconfig, "patch", "gis", SERVICE, "-n", NAMESPACE, "--type", "merge", "-p",
            json.dumps({"spec": CANARY}))
    stable_ip = kubectl(kubeconfig, "-n", NAMESPACE, "get", "service", SERVICE, "-o", "jsonpath={.spec.clusterIP}")
    gateway_ip = kubectl(kubeconfig, "-n", GATEWAY_NAMESPACE, "get", "service", GATEWAY_SERVICE,
                         "-o", "jsonpath={.spec.clusterIP}")
    shape = (4, 1, 32, 32)
    stable = ContinuousCaller(f"{stable_ip}:8000", SERVICE, shape, num_classes=None)
    # Users behind the Gateway get whatever the canary answers; only failed requests count there.
    users = ContinuousCaller(f"{gateway_ip}:80", SERVICE, shape, finite=False, pause=0.1)
    stable.start()
    users.start()
    expected = {"fashion-mnist-dcgan-longer": "Succeeded", "fashion-mnist-dcgan-undertrained": "Failed"}
    ok = True
    try:
        for job, kimg in (("fashion-mnist-dcgan-longer", 96.0), ("fashion-mnist-dcgan-undertrained", 6.4)):
            print(f"==> {job}: {kimg:g} kimg, then a canary of {SERVICE} (25 %, then 100 % of the traffic)",
                  flush=True)
            status = roll_out(kubeconfig, candidate_job(job, kimg), started, timeout)
            revision = (status.get("rollout") or {}).get("revision")
            rollout = service_status(kubeconfig).get("rollout") or {}
            outcome = (status.get("rollout") or {}).get("phase", status.get("phase"))
            print(f"  {job}: job {status.get('phase')}, revision {revision}: {outcome}")
            if rollout.get("revision") == revision:
                print("\n".join(verdicts(rollout)))
            ok = ok and status.get("phase") == expected[job]
    finally:
        stable.finish()
        users.finish()
    print(kubectl(kubeconfig, "get", "gis", "-n", NAMESPACE))
    print(f"client of the stable endpoint all along: {stable.requests - len(stable.failures)} of {stable.requests} "
          f"requests succeeded ({len(stable.failures)} failed)")
    print(f"client through the Gateway all along: {users.requests - len(users.failures)} of {users.requests} "
          f"requests succeeded ({len(users.failures)} failed)")
    return ok and not stable.failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", action="store_true", help="stop the cluster at the end")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    started = time.monotonic()
    ganforge("local", "up")
    ganforge("local", "install")
    kubeconfig = state_dir() / "kubeconfig"
    namespace_file = state_dir() / "demo-namespace.yaml"
    namespace_file.write_text(yaml.safe_dump(DEMO_NAMESPACE))
    kubectl(kubeconfig, "apply", "-f", str(namespace_file))
    kubectl(kubeconfig, "delete", "gis", SERVICE, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(kubeconfig, "delete", "gtj", "--all", "-n", NAMESPACE, "--wait=true")
    kubectl(kubeconfig, "apply", "-n", NAMESPACE, "-f", str(EXAMPLE_JOB))
    total = float(yaml.safe_load(EXAMPLE_JOB.read_text())["spec"]["training"]["totalKimg"])
    reclaim: subprocess.Popen[bytes] | None = None
    last = ""
    status: dict[str, Any] = {}
    while time.monotonic() - started < args.timeout:
        status = job_status(kubeconfig)
        line = describe(status)
        if line != last:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)
            last = line
        kimg = (status.get("progress") or {}).get("kimg", 0)
        if reclaim is None and kimg >= total / 2 and status.get("checkpoint"):
            print("==> spot reclaim drill: taint, evict (30 s grace), node gone, fresh node joins", flush=True)
            reclaim = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "local", "preempt", "spot-1",
                                        "--grace", "30"])
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(2)
    if reclaim is not None:
        reclaim.wait()
    print(kubectl(kubeconfig, "get", "gtj", "-n", NAMESPACE))
    ok = status.get("phase") == "Succeeded"
    if ok:
        metrics = status.get("metrics") or {}
        print("FD (domain classifier features):", f"{metrics.get('fd_domain', float('nan')):.2f}",
              "| KID:", f"{metrics.get('kid_domain', float('nan')):.4f}")
        print("resumed from kimg", (status.get("progress") or {}).get("resumedFromKimg"),
              "after", status.get("preemptions"), "preemption(s)")
        print("trainer's sample grid:", sample_grid(kubeconfig))
        report = state_dir() / f"{NAME}-report.html"
        ganforge("report", NAME, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig), "--out", str(report))
        print("report (curves, the reclaim, the latest samples):", report)
        artifact = status.get("artifact") or {}
        print("exported revision:", artifact.get("revision"), artifact.get("uri"), "sha256", artifact.get("sha256"))
        grid = state_dir() / f"{SERVICE}-grid.png"
        ok = serve(kubeconfig, grid, timeout=300)
        if ok:
            print("grid generated through Triton:", grid)
            ok = canary(kubeconfig, started, timeout=args.timeout)
    else:
        print("job did not succeed:", json.dumps(status, indent=2), file=sys.stderr)
    print(f"demo took {time.monotonic() - started:.0f} s")
    if args.down:
        ganforge("local", "down")
    else:
        print(f"cluster still up: export KUBECONFIG={kubeconfig}; `ganforge local down` stops it")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
