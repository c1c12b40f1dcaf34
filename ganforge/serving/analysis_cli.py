"""`ganforge analyze`: one canary analysis, run by the operator as a pod (trainer image).

The result (an `AnalysisResult`, JSON) goes to stdout and to --result-file, the pod's termination
message, where the operator reads it: the pod needs no API token. The exit status is 0 whenever a
result was written, whatever its verdict; any other exit leaves the analysis inconclusive.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from ganforge.api import storage
from ganforge.api.analysis import TERMINATION_MESSAGE_LIMIT, AnalysisResult
from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import QualityGate, ServingGate


def compact(result: AnalysisResult) -> str:
    """The result as JSON that fits a termination message: long messages are cut first."""
    text = json.dumps(result.to_wire(), separators=(",", ":"))
    if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return text
    shortened = result.model_copy(update={"measurements": [
        m.model_copy(update={"message": m.message[:60]}) for m in result.measurements]})
    return json.dumps(shortened.to_wire(), separators=(",", ":"))[:TERMINATION_MESSAGE_LIMIT]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge analyze", description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", required=True, help="the model name both revisions serve")
    parser.add_argument("--canary-url", required=True, help="host:port (HTTP) of the canary revision's Service")
    parser.add_argument("--stable-url", required=True, help="host:port (HTTP) of the stable revision's Service")
    parser.add_argument("--canary-metrics-url", help="Triton's Prometheus endpoint of the canary revision")
    parser.add_argument("--canary-revision", required=True, help="canary revision directory: path or pvc:// URI")
    parser.add_argument("--canary-sha256", required=True, help="sha256 of the canary revision's manifest.json")
    parser.add_argument("--quality", default="{}", help="spec.rollout.gates.quality as JSON")
    parser.add_argument("--serving", default="{}", help="spec.rollout.gates.serving as JSON")
    parser.add_argument("--seed", type=int, default=0, help="latents (and load-run) seed")
    parser.add_argument("--pvc-root", default=storage.PVC_MOUNT_ROOT)
    parser.add_argument("--result-file", type=Path, help="write the result here too (termination message)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        quality_gate = QualityGate.model_validate(json.loads(args.quality))
        serving_gate = ServingGate.model_validate(json.loads(args.serving))
        revision = Path(storage.resolve_uri(args.canary_revision, args.pvc_root))
    except (ValidationError, ValueError) as error:
        print(f"ganforge analyze: {error}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    import torch

    from ganforge.serving.analysis import Endpoints, analyse

    if args.threads:
        torch.set_num_threads(args.threads)
    endpoints = Endpoints(args.canary_url, args.stable_url, args.canary_metrics_url, args.model_name)
    result = analyse(endpoints, revision, args.canary_sha256, quality_gate, serving_gate, args.seed)
    text = compact(result)
    print(json.dumps(result.to_wire(), indent=2))
    if args.result_file:
        args.result_file.write_text(text)
    return int(ExitCode.SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
