"""Where the URIs of a job and of a served model point inside a pod.

`pvc://claim/sub/path` is a Kubernetes notion: whoever builds a pod mounts the claim at
`<PVC_MOUNT_ROOT>/<claim>`, so everything that reads or writes such a URI inside the pod (trainer,
export, Triton's model-repository check) only needs the root. One definition for every component.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PVC_MOUNT_ROOT = "/mnt/pvc"
CHECKPOINT_CLAIM_SUFFIX = "-checkpoints"


@dataclass(frozen=True)
class ClaimLocation:
    claim: str
    path: str  # inside the claim, without leading or trailing slashes; "" = its root

    @property
    def uri(self) -> str:
        return f"pvc://{self.claim}/{self.path}".rstrip("/")


def job_checkpoint_claim(job: str) -> str:
    """The claim the operator makes for a job without spec.checkpoint.uri."""
    return f"{job}{CHECKPOINT_CLAIM_SUFFIX}"


def default_checkpoint_uri(job: str) -> str:
    """Where a job's checkpoints go without spec.checkpoint.uri; its outputs (run/) sit beside them."""
    return f"pvc://{job_checkpoint_claim(job)}/checkpoints"


def parse_pvc_uri(uri: str) -> ClaimLocation:
    """pvc://claim[/path] -> (claim, path); ValueError for anything else."""
    if not uri.startswith("pvc://"):
        raise ValueError(f"{uri!r} is not a pvc://claim/path URI")
    claim, _, path = uri.removeprefix("pvc://").strip("/").partition("/")
    if not claim:
        raise ValueError(f"{uri!r}: pvc:// URIs need a claim name (pvc://claim/path)")
    return ClaimLocation(claim, path.strip("/"))


def resolve_uri(uri: str, pvc_root: str = PVC_MOUNT_ROOT) -> str:
    """Map a URI onto what this process can open: pvc:// onto its mount under `pvc_root`,
    file:// onto a plain path; other schemes (s3://, gs://, memory://) are left for fsspec.
    ValueError for a pvc:// URI without a claim."""
    if uri.startswith("pvc://"):
        location = parse_pvc_uri(uri)
        return str(Path(pvc_root) / location.claim / location.path) if location.path else str(
            Path(pvc_root) / location.claim)
    if uri.startswith("file://"):
        return uri.removeprefix("file://") or "/"
    return uri
