"""`ganforge generate SERVICE -n 64 --out grid.png`: samples from a GANInferenceService's stable
revision, generated through Triton (the stable Service), as a PNG grid."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ganforge.api.inference_service import PLURAL, TRITON_HTTP_PORT
from ganforge.api.training_job import API_GROUP, VERSION


def stable_endpoint(service: str, namespace: str, kubeconfig: str | None) -> tuple[str, str]:
    """(host:port of the stable Service, model name) read from the cluster."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        try:
            gis = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL,
                                                                             service)
        except ApiException as error:
            raise SystemExit(f"ganforge generate: GANInferenceService {namespace}/{service}: {error.reason}") from None
        status = gis.get("status") or {}
        if not status.get("stableRevision"):
            raise SystemExit(f"ganforge generate: {namespace}/{service} has no stable revision yet "
                             f"(phase {status.get('phase', 'Pending')})")
        cluster_ip = client.CoreV1Api(api).read_namespaced_service(service, namespace).spec.cluster_ip
    finally:
        api.close()
    return f"{cluster_ip}:{TRITON_HTTP_PORT}", str(status.get("modelName") or service)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge generate", description=__doc__.splitlines()[0])
    parser.add_argument("service", help="GANInferenceService name")
    parser.add_argument("-n", "--num", type=int, default=64, help="how many images")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG file to write")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--url", help="host:port of Triton, instead of the service's stable endpoint")
    parser.add_argument("--model-name", help="with --url: the model to call (default: SERVICE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", type=int, help="class of every image (conditional models); default all classes")
    parser.add_argument("--num-classes", type=int, help="classes to cycle through (conditional; default 10)")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("-n must be at least 1")
    import torch

    from ganforge.evaluation.images import save_image_grid, to_uint8
    from ganforge.serving.client import GeneratorClient, ServingError, latents

    if args.url:
        url, model_name = args.url, args.model_name or args.service
    else:
        url, model_name = stable_endpoint(args.service, args.namespace, args.kubeconfig)
    try:
        with GeneratorClient(url, model_name) as generator:
            model = generator.model
            z, labels = latents(model, args.num, args.seed, args.num_classes, args.label)
            images = generator.generate(z, labels)
    except (ServingError, OSError) as error:
        print(f"ganforge generate: {error}", file=sys.stderr)
        return 1
    # One column per class when the grid shows every class, else a square.
    columns = (args.num_classes or 10) if model.conditional and args.label is None else math.ceil(math.sqrt(args.num))
    save_image_grid(to_uint8(torch.from_numpy(images)), args.out, columns)
    print(f"{args.num} images {tuple(images.shape[1:])} from {model_name} at {url} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
