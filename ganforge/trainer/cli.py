"""`ganforge train`: command line -> validated options -> `loop.train` -> documented exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ganforge.api import trainer_env
from ganforge.api.exit_codes import EXIT_CODE_TABLE, ExitCode
from ganforge.api.storage import PVC_MOUNT_ROOT

log = logging.getLogger("ganforge.trainer")


def _parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {int(c):>3}  {c.name:<26} {info.meaning}" for c, info in EXIT_CODE_TABLE.items())
    parser = argparse.ArgumentParser(
        prog="ganforge train",
        description="Train a GAN from a GANTrainingJob spec (YAML/JSON, bare spec or whole object). "
        "Distributed runs use torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
        "MASTER_PORT); without it the trainer runs as a single process.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    parser.add_argument("--config", required=True, help="GANTrainingJob (or its spec) as YAML or JSON")
    parser.add_argument("--run-dir", default=env(trainer_env.RUN_DIR, "runs/default"),
                        help="outputs: training_options.json, samples, logs, default checkpoints [$GANFORGE_RUN_DIR]")
    parser.add_argument("--metrics-port", type=int, default=int(env(trainer_env.METRICS_PORT, "0") or 0),
                        help="Prometheus port on rank 0; 0 = off [$GANFORGE_METRICS_PORT]")
    parser.add_argument("--pvc-root", default=env(trainer_env.PVC_ROOT, PVC_MOUNT_ROOT),
                        help="where pvc://CLAIM/... URIs are mounted: <root>/CLAIM [$GANFORGE_PVC_ROOT]")
    parser.add_argument("--cache-dir", default=env(trainer_env.CACHE_DIR, os.path.expanduser("~/.cache/ganforge")),
                        help="reference statistics and the domain classifier [$GANFORGE_CACHE_DIR]")
    parser.add_argument("--grace-seconds", type=float, default=float(env(trainer_env.GRACE_SECONDS, "25")),
                        help="after SIGTERM, exit by this deadline even if the emergency checkpoint is not "
                        "done; keep below terminationGracePeriodSeconds [$GANFORGE_GRACE_SECONDS]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=env(trainer_env.DEVICE, "auto"))
    parser.add_argument("--threads", type=int, default=int(env(trainer_env.THREADS, "0") or 0),
                        help="CPU threads per rank; 0 = cores / local ranks")
    parser.add_argument("--dist-timeout", type=float, default=1800.0, help="collective timeout in seconds")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume even if the checkpoint was made with a different spec")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0) and int(ExitCode.USAGE_ERROR)

    from ganforge.trainer.config import RuntimeOptions, TrainingOptions, load_spec_file, write_options
    from ganforge.trainer.errors import TrainerError

    try:
        spec, job_name = load_spec_file(args.config)
        runtime = RuntimeOptions(
            run_dir=args.run_dir, metrics_port=args.metrics_port, pvc_root=args.pvc_root, cache_dir=args.cache_dir,
            grace_seconds=args.grace_seconds, device=args.device, threads=args.threads,
            allow_config_change=args.allow_config_change, dist_timeout_seconds=args.dist_timeout,
            tensorboard=not args.no_tensorboard,
        )
        options = TrainingOptions(spec, runtime, job_name)
        if args.dry_run:
            print(json.dumps(options.to_json(), indent=2))
            return int(ExitCode.SUCCESS)
        from ganforge.trainer.launcher import pod_layout, run_pod

        layout = pod_layout(dict(os.environ))
        if layout is not None:  # several ranks in this pod: start and supervise them
            return run_pod(layout, list(sys.argv[1:] if argv is None else argv))
        if int(os.environ.get("RANK", "0") or 0) == 0:
            # Written before anything heavy, so a failed start still leaves the resolved options.
            write_options(options)
        from ganforge.trainer.loop import train

        return int(train(options))
    except TrainerError as error:
        logging.getLogger("ganforge.trainer").error("%s", error)
        print(f"ganforge train: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.PREEMPTED_NO_CHECKPOINT)
    except Exception:
        log.exception("unexpected error")
        return int(ExitCode.INTERNAL_ERROR)


def finish_process(code: int) -> NoReturn:
    """End a `ganforge train` process with `code` at once, skipping interpreter teardown: threads
    torch started (distributed backends, data loading) can abort it there ("terminate called
    without an active exception", SIGABRT), and the operator would then read a crash instead of
    this exit code. Checkpoints and status reports are written and flushed before main returns."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    finish_process(main())
