"""The environment the operator gives trainer pods and `ganforge train` reads: one list of names,
so a rename on one side cannot silently switch a feature off on the other."""

from __future__ import annotations

JOB_NAME = "GANFORGE_JOB_NAME"  # with JOB_NAMESPACE: the job whose status rank 0 reports on
JOB_NAMESPACE = "GANFORGE_JOB_NAMESPACE"
JOB_UID = "GANFORGE_JOB_UID"  # the export records the job's identity in the ONNX metadata
GANG = "GANFORGE_GANG"  # which gang this worker belongs to (for logs and debugging)
RUN_DIR = "GANFORGE_RUN_DIR"
PVC_ROOT = "GANFORGE_PVC_ROOT"
CACHE_DIR = "GANFORGE_CACHE_DIR"
GRACE_SECONDS = "GANFORGE_GRACE_SECONDS"
DEVICE = "GANFORGE_DEVICE"
METRICS_PORT = "GANFORGE_METRICS_PORT"
THREADS = "GANFORGE_THREADS"
STATUS_INTERVAL = "GANFORGE_STATUS_INTERVAL_SECONDS"  # least time between rank 0's progress reports

# Several processes in one pod (one per GPU): the torchrun names Kubeflow Trainer v2 sets (PET_ =
# "PyTorch Elastic Trainer"; torchrun reads each as the default of its flag). `ganforge train`
# given PET_NPROC_PER_NODE > 1 and no RANK starts that many ranks itself and supervises them.
NPROC_PER_NODE = "PET_NPROC_PER_NODE"
NNODES = "PET_NNODES"
NODE_RANK = "PET_NODE_RANK"
MASTER_ADDR = "PET_MASTER_ADDR"
MASTER_PORT = "PET_MASTER_PORT"
