"""kopf wiring, kept thin: each handler hands over to OperatorRuntime, which decides through the
pure `reconcile` function. Importing this module registers the handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from ganforge.api.inference_service import KIND as SERVICE_KIND
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.operator import naming
from ganforge.operator.runtime import OperatorRuntime


def configure(settings: kopf.OperatorSettings) -> None:
    # Handler progress and the finalizer live in annotations, so the CRD's status schema stays
    # exactly ganforge's (no `status.kopf` to allow for).
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.LABEL_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=naming.LABEL_PREFIX)
    settings.posting.level = logging.WARNING  # Events are for users: only ganforge's own, plus problems
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


def _runtime(memo: Any) -> OperatorRuntime:
    runtime: OperatorRuntime = memo.runtime
    return runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings)


@kopf.daemon(API_GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def supervise(name: str, namespace: str, stopped: kopf.DaemonStopped, memo: Any, **_: Any) -> None:
    """One long-lived loop per job: reconcile, then sleep until a pod of the job changes or the
    resync interval passes. Returns once the job is finished and nothing of it is left running."""
    runtime = _runtime(memo)
    await _loop(lambda: runtime.reconcile_once(namespace, name), runtime.wakeup_event(namespace, name), stopped)


async def _loop(one_pass: Callable[[], float | None], wakeup: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    """Run passes (in a thread: the kubernetes client blocks) until one says there is nothing left
    to supervise; between passes, sleep for the delay it asked for or until `wakeup` is set."""
    while not stopped:
        wakeup.clear()
        delay = await asyncio.to_thread(one_pass)
        if delay is None:
            return
        if delay > 0:
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
            except TimeoutError:
                pass


@kopf.on.event("", "v1", "pods", labels={naming.JOB_LABEL: kopf.PRESENT})
async def worker_changed(labels: dict[str, str], namespace: str, memo: Any, **_: Any) -> None:
    _runtime(memo).wake(namespace, labels[naming.JOB_LABEL])


@kopf.on.event(API_GROUP, VERSION, PLURAL)
async def job_changed(namespace: str, memo: Any, **_: Any) -> None:
    # A job's status carries the artifact its services serve.
    _runtime(memo).wake_services_of(namespace)


@kopf.daemon(API_GROUP, VERSION, SERVICE_PLURAL, cancellation_timeout=10.0)
async def serve(name: str, namespace: str, stopped: kopf.DaemonStopped, memo: Any, **_: Any) -> None:
    """One loop per GANInferenceService, woken by its Deployments and pods and by job changes. Its
    children carry owner references: deleting the service garbage-collects them."""
    runtime = _runtime(memo)
    try:
        await _loop(lambda: runtime.reconcile_service_once(namespace, name),
                    runtime.wakeup_event(namespace, name, SERVICE_KIND), stopped)
    finally:
        runtime.forget(namespace, name, SERVICE_KIND)


@kopf.on.event("", "v1", "pods", labels={naming.SERVICE_LABEL: kopf.PRESENT})
@kopf.on.event("apps", "v1", "deployments", labels={naming.SERVICE_LABEL: kopf.PRESENT})
async def revision_changed(labels: dict[str, str], namespace: str, memo: Any, **_: Any) -> None:
    _runtime(memo).wake(namespace, labels[naming.SERVICE_LABEL], SERVICE_KIND)


@kopf.on.delete(API_GROUP, VERSION, PLURAL)
async def finalize(name: str, namespace: str, spec: dict[str, Any], memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    remaining = await asyncio.to_thread(runtime.stop_workers, namespace, name)
    if remaining:
        raise kopf.TemporaryError(f"waiting for {remaining} worker pod(s) to stop", delay=2)
    # Read leniently: a spec the models reject must still be deletable.
    retain = (spec.get("checkpoint") or {}).get("retain", True) is not False
    await asyncio.to_thread(runtime.release_checkpoints, namespace, name, retain)
    runtime.forget(namespace, name)
