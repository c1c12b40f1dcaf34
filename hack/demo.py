"""`make demo`: train, survive a spot reclaim, export, serve through Triton, generate.

Starts `ganforge local`, installs the CRDs and the operator, applies the Fashion-MNIST example
(two workers on the spot node), reclaims the spot node half-way through, and follows the job as
it resumes from its emergency checkpoint, finishes and is exported to ONNX. Then applies the
example GANInferenceService, waits until Triton serves the exported revision through the stable
Service, and writes a sample grid generated through Triton (`ganforge generate`).
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
from ganforge.local.install import EXAMPLE_JOB, EXAMPLE_SERVICE, kubectl
from ganforge.local.provisioner import claim_host_path

NAME, NAMESPACE = "fashion-mnist-dcgan", "default"
SERVICE = str(yaml.safe_load(EXAMPLE_SERVICE.read_text())["metadata"]["name"])


def ganforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ganforge.cli", *args], check=True)


def job_status(kubeconfig: Path) -> dict[str, Any]:
    body = json.loads(kubectl(kubeconfig, "get", "gtj", NAME, "-n", NAMESPACE, "-o", "json"))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", action="store_true", help="stop the cluster at the end")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    started = time.monotonic()
    ganforge("local", "up")
    ganforge("local", "install")
    kubeconfig = state_dir() / "kubeconfig"
    kubectl(kubeconfig, "delete", "gis", SERVICE, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(kubeconfig, "delete", "gtj", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
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
        artifact = status.get("artifact") or {}
        print("exported revision:", artifact.get("revision"), artifact.get("uri"), "sha256", artifact.get("sha256"))
        grid = state_dir() / f"{SERVICE}-grid.png"
        ok = serve(kubeconfig, grid, timeout=300)
        if ok:
            print("grid generated through Triton:", grid)
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
