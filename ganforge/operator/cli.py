"""`ganforge operator`: run the GANTrainingJob operator (kopf) in or out of a cluster."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Sequence

import kopf

from ganforge.api.exit_codes import ExitCode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganforge operator",
        description="Watch GANTrainingJobs and run their trainer gangs. Uses the in-cluster ServiceAccount, "
        "else $KUBECONFIG / ~/.kube/config.",
    )
    parser.add_argument("--settings", help="operator settings YAML (camelCase keys, see docs/operator.md)")
    parser.add_argument("--trainer-image", help="override settings.trainerImage")
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--peering", default="ganforge",
                        help="kopf peering object: of several operator replicas only one acts at a time")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority: of several replicas the highest acts, the others wait as hot "
                        "standbys (default: random, so no two replicas tie; kopf pauses every replica of a tie)")
    parser.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port; 0 = off")
    parser.add_argument("--health-port", type=int, default=8081, help="liveness probe port (/healthz); 0 = off")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # One line per handler run and per health probe drowns the operator's own decisions.
        for noisy in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from kubernetes import client, config

    from ganforge.operator import handlers  # noqa: F401  (registers the handlers)
    from ganforge.operator.kube import FAN_OUT_THREADS, Kube, api_client
    from ganforge.operator.metrics import OperatorMetrics
    from ganforge.operator.runtime import OperatorRuntime
    from ganforge.operator.settings import OperatorSettings

    try:
        settings = OperatorSettings.load(args.settings, trainer_image=args.trainer_image)
    except ValueError as error:
        print(f"ganforge operator: error: {error}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    # A connection for every request that may be in flight: each pass, and the writes it fans out.
    api = api_client(client.Configuration.get_default_copy(), settings.reconcile_threads + FAN_OUT_THREADS)
    metrics = OperatorMetrics()
    metrics.count_api_requests(api)
    kube = Kube(api)
    if not args.standalone:
        kube.ensure_peering(args.peering, args.namespace)
    metrics.serve(args.metrics_port)
    runtime = OperatorRuntime(kube, settings, metrics)
    memo = kopf.Memo(runtime=runtime)
    priority = args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1
    kopf.run(
        clusterwide=not args.namespace, namespaces=args.namespace, standalone=args.standalone,
        peering_name=None if args.standalone else args.peering, priority=priority, memo=memo,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
