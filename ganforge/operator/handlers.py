"""kopf wiring, kept thin: each handler hands over to OperatorRuntime, which decides through the
pure `reconcile` function. Importing this module registers the handlers."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf

from ganforge.api.inference_service import KIND as SERVICE_KIND
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.operator import naming
from ganforge.operator.observe import not_ready_since
from ganforge.operator.runtime import NodeTable, OperatorRuntime, Seen

RESYNC_JITTER = 0.2
DIFFBASE_KEY = "last-handled-configuration"
KOPF_FIRST_WRITES_SECONDS = 5.0
T = TypeVar("T")


def configure(settings: kopf.OperatorSettings) -> None:
    # Handler progress and the finalizer live in annotations, so the CRD's status schema stays
    # exactly ganforge's (no `status.kopf` to allow for).
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.LABEL_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=naming.LABEL_PREFIX,
                                                                            key=DIFFBASE_KEY)
    settings.posting.level = logging.WARNING  # Events are for users: only ganforge's own, plus problems
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


def _runtime(memo: Any) -> OperatorRuntime:
    runtime: OperatorRuntime = memo.runtime
    return runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure(settings)
    # Passes block on the apiserver in threads; asyncio's default pool (a few threads) would queue
    # a burst of new jobs behind one another.
    threads = _runtime(memo).settings.reconcile_threads
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="reconcile"))


# -- what the watches know: kopf fills these before any handler or daemon runs ---------------------

@kopf.index("", "v1", "pods", labels={naming.JOB_LABEL: kopf.PRESENT})
async def pods_by_job(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[naming.JOB_LABEL]): dict(body)}


@kopf.index("", "v1", "nodes")
async def node_readiness(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: not_ready_since(body)}


def _kopf_wrote(body: kopf.Body) -> bool:
    return (naming.FINALIZER in (body.metadata.get("finalizers") or [])
            and f"{naming.LABEL_PREFIX}/{DIFFBASE_KEY}" in body.metadata.annotations)


def _seen_pods(index: kopf.Index[Any, Any], namespace: str, name: str) -> list[dict[str, Any]]:
    return list(index.get((namespace, name), []))


def _seen_nodes(index: kopf.Index[Any, Any], pods: list[dict[str, Any]]) -> NodeTable:
    """The nodes these pods are bound to, as far as the node watch has seen them."""
    names = {pod.get("spec", {}).get("nodeName") for pod in pods} - {None, ""}
    return {node: next(iter(index[node])) for node in names if node in index}


@kopf.daemon(API_GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def supervise(name: str, namespace: str, body: kopf.Body, stopped: kopf.DaemonStopped, memo: Any,
                    pods_by_job: kopf.Index[Any, Any], node_readiness: kopf.Index[Any, Any], **_: Any) -> None:
    """One long-lived loop per job: reconcile, then sleep until the job or a pod of it changes or
    the resync interval passes. Returns once the job is finished and nothing of it is left running."""
    runtime = _runtime(memo)
    # kopf makes its own first writes to a new job (the finalizer, then its diffbase annotation)
    # just as this daemon starts; a status write decided before them would be refused (409) and
    # the launch made twice. Wait for them, briefly.
    deadline = time.monotonic() + KOPF_FIRST_WRITES_SECONDS
    while not _kopf_wrote(body) and time.monotonic() < deadline and not stopped:
        await asyncio.sleep(0.05)

    def seen() -> Seen:  # read in the event loop, which is the one writer of kopf's body and indexes
        pods = _seen_pods(pods_by_job, namespace, name)
        return Seen(copy.deepcopy(dict(body)), pods, _seen_nodes(node_readiness, pods))

    await _loop(seen, lambda observed: runtime.reconcile_once(namespace, name, observed),
                runtime.wakeup_event(namespace, name), stopped)


async def _loop(observe: Callable[[], T], one_pass: Callable[[T], float | None], wakeup: asyncio.Event,
                stopped: kopf.DaemonStopped) -> None:
    """Run passes until one says there is nothing left to supervise: `observe` here in the event
    loop, `one_pass` on what it saw in a thread (the kubernetes client blocks). Between passes,
    sleep for the delay the pass asked for or until `wakeup` is set. Long waits are stretched by up
    to a fifth at random, so jobs created together do not resync together."""
    while not stopped:
        wakeup.clear()
        delay = await asyncio.to_thread(one_pass, observe())
        if delay is None:
            return
        if delay >= 1:
            delay *= 1 + RESYNC_JITTER * random.random()
        if delay > 0:
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
            except TimeoutError:
                pass


@kopf.on.event("", "v1", "pods", labels={naming.JOB_LABEL: kopf.PRESENT})
async def worker_changed(labels: dict[str, str], namespace: str, memo: Any, **_: Any) -> None:
    _runtime(memo).wake(namespace, labels[naming.JOB_LABEL])


@kopf.on.event(API_GROUP, VERSION, PLURAL)
async def job_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    # An edit (suspend, say) is acted on at once; a job's status carries the artifact its services serve.
    runtime = _runtime(memo)
    runtime.wake(namespace, name)
    runtime.wake_services_of(namespace)


@kopf.daemon(API_GROUP, VERSION, SERVICE_PLURAL, cancellation_timeout=10.0)
async def serve(name: str, namespace: str, stopped: kopf.DaemonStopped, memo: Any, **_: Any) -> None:
    """One loop per GANInferenceService, woken by its Deployments and pods and by job changes. Its
    children carry owner references: deleting the service garbage-collects them."""
    runtime = _runtime(memo)
    try:
        await _loop(lambda: None, lambda _: runtime.reconcile_service_once(namespace, name),
                    runtime.wakeup_event(namespace, name, SERVICE_KIND), stopped)
    finally:
        runtime.forget(namespace, name, SERVICE_KIND)


@kopf.on.event("", "v1", "pods", labels={naming.SERVICE_LABEL: kopf.PRESENT})
@kopf.on.event("apps", "v1", "deployments", labels={naming.SERVICE_LABEL: kopf.PRESENT})
async def revision_changed(labels: dict[str, str], namespace: str, memo: Any, **_: Any) -> None:
    _runtime(memo).wake(namespace, labels[naming.SERVICE_LABEL], SERVICE_KIND)


@kopf.on.delete(API_GROUP, VERSION, PLURAL)
async def finalize(name: str, namespace: str, spec: dict[str, Any], memo: Any, pods_by_job: kopf.Index[Any, Any],
                   node_readiness: kopf.Index[Any, Any], **_: Any) -> None:
    runtime = _runtime(memo)
    nodes = _seen_nodes(node_readiness, _seen_pods(pods_by_job, namespace, name))
    remaining = await asyncio.to_thread(runtime.stop_workers, namespace, name, nodes)
    if remaining:
        raise kopf.TemporaryError(f"waiting for {remaining} worker pod(s) to stop", delay=2)
    # Read leniently: a spec the models reject must still be deletable.
    retain = (spec.get("checkpoint") or {}).get("retain", True) is not False
    await asyncio.to_thread(runtime.release_checkpoints, namespace, name, retain)
    runtime.forget(namespace, name)
