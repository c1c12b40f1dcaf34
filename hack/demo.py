"""`make demo`: the training half of ganforge on the one-machine cluster.

Starts `ganforge local`, installs the CRDs and the operator, applies the Fashion-MNIST example
(two workers on the spot node), reclaims the spot node half-way through, and follows the job as
it resumes from its emergency checkpoint and finishes. Prints the FD and the sample grid's path.
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
from ganforge.local.install import EXAMPLE_JOB, kubectl
from ganforge.local.provisioner import claim_host_path

NAME, NAMESPACE = "fashion-mnist-dcgan", "default"


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
        print("sample grid:", sample_grid(kubeconfig))
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
