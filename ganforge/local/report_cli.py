"""`ganforge report JOB --out report.html`: one self-contained HTML page about a training job
(curves, throughput, reclaims, the latest samples) from the job's run directory, and what
Prometheus saw of it (`--prometheus URL`; on `ganforge local` its own Prometheus is found).

On `ganforge local` the run directory is found through the job's checkpoint claim (its volume is
a host directory); elsewhere copy the run directory out of the claim and pass `--run-dir` (the
job's status is still read when the cluster is reachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ganforge.api.storage import default_checkpoint_uri, parse_pvc_uri
from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.observability.observed import PrometheusUnavailable, observed_charts
from ganforge.observability.report import Observed, RunRecord, render

PROMETHEUS_URL_ENV = "GANFORGE_PROMETHEUS_URL"
# Prometheus is asked about the run's wall time and this much either side (scrapes lag reports).
RANGE_MARGIN_SECONDS = 60.0


def _job(name: str, namespace: str, kubeconfig: str | None) -> dict[str, Any] | None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        api = config.new_client_from_config(config_file=kubeconfig)
    except (config.ConfigException, OSError):
        return None
    try:
        job: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            API_GROUP, VERSION, namespace, PLURAL, name)
        return job
    except ApiException as error:
        if error.status == 404:
            raise SystemExit(f"ganforge report: GANTrainingJob {namespace}/{name} does not exist") from None
        raise
    finally:
        api.close()


def job_run_dir(job: dict[str, Any], kubeconfig: str | None) -> Path:
    """The host directory of the job's run on `ganforge local` (outputs live beside its checkpoints)."""
    from kubernetes import client, config

    from ganforge.local.provisioner import claim_host_path

    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    uri = (job.get("spec", {}).get("checkpoint") or {}).get("uri") or default_checkpoint_uri(name)
    if not uri.startswith("pvc://"):
        raise SystemExit(f"ganforge report: spec.checkpoint.uri {uri} is not on a claim; the run's outputs stay in "
                         "the pod: copy them out and pass --run-dir")
    location = parse_pvc_uri(uri)
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        host = claim_host_path(client.CoreV1Api(api), namespace, location.claim)
    finally:
        api.close()
    if host is None:
        raise SystemExit(f"ganforge report: claim {namespace}/{location.claim} is not a host directory here (not "
                         "`ganforge local`?): copy the run directory out of it and pass --run-dir")
    return Path(host, location.path, "run")


def local_prometheus(kubeconfig: str | None) -> str | None:
    """`ganforge local`'s Prometheus, from the cluster file beside its kubeconfig; None elsewhere."""
    if not kubeconfig:
        return None
    try:
        url = json.loads((Path(kubeconfig).parent / "cluster.json").read_text()).get("prometheus")
    except (OSError, ValueError, AttributeError):
        return None
    return str(url) if url else None


def observe(url: str, namespace: str, job: str, record: RunRecord) -> Observed:
    times = [float(r["time"]) for r in record.stats if "time" in r]
    if not times:
        return Observed(url, problem="the run's reports carry no wall time to ask Prometheus about")
    try:
        # Never past now: Prometheus evaluates a future instant with the last sample it has.
        start, end = min(times) - RANGE_MARGIN_SECONDS, min(max(times) + RANGE_MARGIN_SECONDS, time.time())
        charts = observed_charts(url, namespace, job, start, end)
    except PrometheusUnavailable as error:
        print(f"ganforge report: {error}; the page has the run directory's charts only", file=sys.stderr)
        return Observed(url, problem=str(error))
    return Observed(url, charts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge report", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="GANTrainingJob name")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--run-dir", type=Path, help="the run directory (stats.jsonl, samples/, ...) instead of "
                                                     "finding it through the job's claim")
    parser.add_argument("--out", type=Path, default=None, help="HTML file to write (default <job>-report.html)")
    parser.add_argument("--prometheus", default=os.environ.get(PROMETHEUS_URL_ENV),
                        help=f"Prometheus base URL to add what it saw of the job (default ${PROMETHEUS_URL_ENV}, "
                             "or ganforge local's own; '' for none)")
    args = parser.parse_args(argv)
    job = _job(args.job, args.namespace, args.kubeconfig)
    if args.run_dir is None and job is None:
        parser.error("no cluster to find the job in: pass --run-dir")
    run_dir = args.run_dir or job_run_dir(job or {}, args.kubeconfig)
    try:
        record = RunRecord.read(run_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"ganforge report: {error}", file=sys.stderr)
        return 1
    out = args.out or Path(f"{args.job}-report.html")
    status = (job or {}).get("status")
    partial = out.with_name(out.name + ".tmp")
    url = local_prometheus(args.kubeconfig) if args.prometheus is None else args.prometheus
    observed = observe(url, args.namespace, args.job, record) if url else None
    partial.write_text(render(record, f"GANTrainingJob {args.namespace}/{args.job}", status, observed))
    partial.replace(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
