"""`ganforge rollout status|promote|abort SERVICE`: a person's view of, and say in, a rollout.

`status` prints the rollout recorded in the GANInferenceService's status: every analysis with its
measurements, bounds and verdicts. `promote` and `abort` set the annotation the operator acts on
(ganforge.io/promote or ganforge.io/abort = the canary revision), exactly what
`kubectl annotate gis SERVICE ganforge.io/promote=<revision>` does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ganforge.api.analysis import describe
from ganforge.api.inference_service import (
    ABORT_ANNOTATION,
    PLURAL,
    PROMOTE_ANNOTATION,
    GANInferenceServiceStatus,
    RolloutStatus,
)
from ganforge.api.training_job import API_GROUP, VERSION

MARK = {"Pass": "✔", "Fail": "✖", "Inconclusive": "?", "Running": "…"}


def render(name: str, namespace: str, status: GANInferenceServiceStatus) -> str:
    lines = [f"Name:       {name}", f"Namespace:  {namespace}", f"Phase:      {status.phase}",
             f"Stable:     {status.stable_revision or '-'}"]
    rollout = status.rollout
    if rollout is None:
        return "\n".join([*lines, "Rollout:    none yet (the first revision becomes stable without one)"])
    lines += [f"Rollout:    {rollout.revision} against {rollout.from_revision} ({rollout.strategy}): {rollout.phase}",
              f"Message:    {rollout.message or '-'}",
              f"Analyses:   {len(rollout.analyses)} (failures {rollout.failures}, "
              f"inconclusive {rollout.inconclusives})"]
    for record in rollout.analyses:
        lines.append(f"  {MARK[record.state]} step {record.step + 1}/{len(rollout.weights)} attempt "
                     f"{record.attempt + 1}  weight {record.weight}%  {record.pod}  {record.state}")
        if record.feature_extractor:
            lines.append(f"      quality in {record.feature_extractor} features, "
                         f"{record.sample_size} samples per revision")
        for measurement in record.measurements:
            lines.append(f"      {MARK.get(measurement.verdict, ' ')} {describe(measurement)}")
        if record.message and not record.measurements:
            lines.append(f"      {record.message}")
    return "\n".join(lines)


def _annotate(custom: Any, namespace: str, name: str, rollout: RolloutStatus | None, key: str) -> str:
    if rollout is None or rollout.phase in ("Promoted", "RolledBack"):
        raise SystemExit(f"ganforge rollout: {namespace}/{name} has no rollout in progress")
    body = {"metadata": {"annotations": {key: rollout.revision}}}
    custom.patch_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, name, body)
    return f"{namespace}/{name}: {key}={rollout.revision}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge rollout", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["status", "promote", "abort"])
    parser.add_argument("service", help="GANInferenceService name")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    args = parser.parse_args(argv)
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = config.new_client_from_config(config_file=args.kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        body = custom.get_namespaced_custom_object(API_GROUP, VERSION, args.namespace, PLURAL, args.service)
        status = GANInferenceServiceStatus.model_validate(body.get("status") or {})
        if args.action == "status":
            print(render(args.service, args.namespace, status))
        else:
            key = PROMOTE_ANNOTATION if args.action == "promote" else ABORT_ANNOTATION
            print(_annotate(custom, args.namespace, args.service, status.rollout, key))
    except ApiException as error:
        print(f"ganforge rollout: GANInferenceService {args.namespace}/{args.service}: {error.reason}",
              file=sys.stderr)
        return 1
    finally:
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
