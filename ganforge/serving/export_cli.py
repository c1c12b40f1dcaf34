"""`ganforge export`: what the operator's export pod runs once training has succeeded.

Prints (and writes to --result-file, the pod's termination message) the new revision as one JSON
line in the form of the job's status.artifact (ganforge.api.training_job.ArtifactStatus), which the
operator records as it is. Exit codes are ganforge.api.exit_codes' (9 = EXPORT_ERROR).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from ganforge.api import storage, trainer_env
from ganforge.api.exit_codes import ExitCode
from ganforge.api.inference_service import TRITON_PROFILES
from ganforge.api.training_job import ArtifactStatus
from ganforge.serving.model_repository import RevisionError

log = logging.getLogger("ganforge.export")


def _parser() -> argparse.ArgumentParser:
    from ganforge.serving.export import ExportPrecision

    parser = argparse.ArgumentParser(prog="ganforge export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint directory: a path, file:///path or pvc://claim/path/ckpt-...")
    parser.add_argument("--repository", required=True,
                        help="model repository directory for this job's revisions (path, file:// or pvc://)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (spec.export.onnxOpset)")
    parser.add_argument("--precision", choices=get_args(ExportPrecision), default="fp32",
                        help="spec.export.precision")
    parser.add_argument("--profile", choices=TRITON_PROFILES, default="python-onnxruntime",
                        help="which Triton runs it: python-onnxruntime (ganforge local) or onnxruntime (NGC image)")
    parser.add_argument("--pvc-root", default=os.environ.get(trainer_env.PVC_ROOT, storage.PVC_MOUNT_ROOT),
                        help="where pvc://CLAIM/... URIs are mounted")
    parser.add_argument("--job-namespace", default=os.environ.get(trainer_env.JOB_NAMESPACE, ""))
    parser.add_argument("--job-name", default=os.environ.get(trainer_env.JOB_NAME, ""))
    parser.add_argument("--job-uid", default=os.environ.get(trainer_env.JOB_UID, ""))
    parser.add_argument("--result-file", type=Path, help="also write the JSON result here (termination message)")
    return parser


def _register(args: argparse.Namespace, artifact: ArtifactStatus) -> None:
    """With MLFLOW_TRACKING_URI set: the exported model becomes a version of the registered model
    named after the job, in the job's run (ganforge.api.tracking). A tracking failure is logged,
    never an export failure: the served revision exists either way."""
    from ganforge.api.tracking import TrackingRun, TrackingUnavailable, run_key

    try:
        run = TrackingRun.open(run_key(args.job_namespace, args.job_name, args.job_uid, args.checkpoint),
                               args.job_name or "export")
    except TrackingUnavailable as error:
        log.warning("%s", error)
        return
    if run is None:
        return
    name = ".".join(part for part in (args.job_namespace, args.job_name) if part) or "ganforge-export"
    version = run.register_model(name, artifact.uri, {"sha256": artifact.sha256, "revision": artifact.revision,
                                                      "kimg": f"{artifact.kimg}"})
    if version is not None:
        log.info("MLflow: registered %s version %s (%s)", name, version, artifact.uri)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    from ganforge.serving.export import ExportError, JobIdentity, export_checkpoint

    try:
        checkpoint = Path(storage.resolve_uri(args.checkpoint, args.pvc_root))
        repository_path = storage.resolve_uri(args.repository, args.pvc_root)
        if "://" in repository_path:
            raise ExportError(f"--repository {args.repository}: only paths, file:// and pvc:// are supported")
        result = export_checkpoint(
            checkpoint, Path(repository_path), opset=args.opset, precision=args.precision, profile=args.profile,
            job=JobIdentity(args.job_namespace, args.job_name, args.job_uid))
    except (ExportError, RevisionError, ValueError, OSError) as error:
        detail = f"{error.filename or ''}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
        message = f"export failed: {detail}"
        log.error("%s", message)
        if args.result_file:
            args.result_file.write_text(message[-3000:])
        return int(ExitCode.EXPORT_ERROR)
    artifact = ArtifactStatus(
        uri=f"{args.repository.rstrip('/')}/{result.revision.name}", sha256=result.revision.sha256,
        revision=result.revision.name, kimg=result.kimg, checkpoint_sha256=result.checkpoint_sha256,
        parity_max_abs_diff=result.parity_max_abs_diff)
    _register(args, artifact)
    line = json.dumps(artifact.to_wire(), sort_keys=True)
    print(line)
    if args.result_file:
        args.result_file.write_text(line)
    return int(ExitCode.SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
