"""The `ganforge` console script: a thin dispatcher to each component's own CLI.

Each subcommand's module is imported only when it is used, so `ganforge local` never pays for
importing torch and `ganforge train` never imports the Kubernetes client.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with a `main(argv) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ganforge.trainer.cli", "run the GAN trainer (torchrun-compatible)"),
    "local": ("ganforge.local.cli", "the one-machine Kubernetes cluster: up, down, status, ..."),
    "operator": ("ganforge.operator.cli", "run the GANTrainingJob operator (kopf)"),
    "export": ("ganforge.serving.export_cli", "checkpoint -> parity-checked ONNX revision in a model repository"),
    "prepare-model": ("ganforge.serving.prepare_cli", "verify a revision and lay it out for Triton (pod init step)"),
    "generate": ("ganforge.serving.generate_cli", "sample grid from a GANInferenceService through Triton"),
    "rollout": ("ganforge.operator.rollout_cli", "a GANInferenceService's rollout: status, promote, abort"),
    "analyze": ("ganforge.serving.analysis_cli", "one canary analysis: quality and serving gates (analysis pod)"),
    "report": ("ganforge.local.report_cli", "one HTML page about a training job: curves, reclaims, samples"),
}


def _usage() -> str:
    lines = ["usage: ganforge <command> [args...]", "", "commands:"]
    lines += [f"  {name:<14} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        print(f"ganforge: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    result: int = module.main(rest)
    # A command whose process must end without interpreter teardown (`ganforge train`) says so.
    finish = getattr(module, "finish_process", None)
    if finish is not None:
        finish(result)
    return result


if __name__ == "__main__":
    sys.exit(main())
