"""`ganforge prepare-model`: the init step of every Triton pod of a GANInferenceService.

It verifies the revision against the sha256 the service recorded (every file against the
revision's manifest), copies its model directory to `<repository>/<model name>` (an emptyDir that
Triton loads from) and writes config.pbtxt for this service's serving settings. A truncated ONNX
file or a sha256 mismatch stops the pod here, with a termination message that names the file, so
a bad revision never reaches Triton and never receives traffic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from ganforge.api import storage
from ganforge.api.exit_codes import ExitCode
from ganforge.api.inference_service import TRITON_PROFILES, TritonSpec
from ganforge.serving.model_repository import RevisionError, prepare_model_directory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge prepare-model", description=__doc__.splitlines()[0])
    parser.add_argument("--revision", required=True, help="revision directory: path, file:// or pvc:// URI")
    parser.add_argument("--sha256", required=True, help="expected sha256 of the revision's manifest.json")
    parser.add_argument("--model-name", required=True, help="the name Triton serves the model under")
    parser.add_argument("--repository", required=True, type=Path, help="Triton's --model-repository")
    parser.add_argument("--profile", choices=TRITON_PROFILES, default="python-onnxruntime")
    parser.add_argument("--triton", default="{}", help="the service's spec.triton as JSON")
    parser.add_argument("--pvc-root", default=storage.PVC_MOUNT_ROOT)
    parser.add_argument("--result-file", type=Path, help="write errors here too (termination message)")
    args = parser.parse_args(argv)
    try:
        serving = TritonSpec.model_validate(json.loads(args.triton))
        revision = Path(storage.resolve_uri(args.revision, args.pvc_root))
        facts = prepare_model_directory(revision, args.sha256, args.repository / args.model_name, args.profile,
                                        serving)
    except (RevisionError, ValidationError, ValueError, OSError) as error:
        message = f"revision {args.revision} cannot be served: {error}"
        print(message, file=sys.stderr)
        if args.result_file:
            args.result_file.write_text(message[-3000:])
        return int(ExitCode.EXPORT_ERROR)
    print(f"model {args.model_name} from {args.revision} ready for Triton: {json.dumps(facts.to_wire())}")
    return int(ExitCode.SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
