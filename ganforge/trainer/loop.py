"""The training loop: one function, `train(options) -> ExitCode`.

Progress is counted in real images shown to D (`nimg`), never in wall time or epochs, and every
piece of state that influences the next step (weights, EMA, optimizers, scalers, every rank's RNG
and sampler position) is in the checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ganforge.api import trainer_env
from ganforge.api.checkpoint_format import REFERENCE_DIR, with_manifest
from ganforge.api.exit_codes import ExitCode, describe
from ganforge.api.tracking import TrackingRun, TrackingUnavailable, flatten, run_key
from ganforge.api.training_job import COMPILE_CHANNELS_LAST_ON_GPU
from ganforge.api.trajectory import trainer_view
from ganforge.evaluation import EvaluationInterrupted
from ganforge.evaluation.images import image_grid, save_image_grid
from ganforge.models import build_models
from ganforge.trainer import losses
from ganforge.trainer.augment import AdaptiveProbability, Augment
from ganforge.trainer.batches import BatchSource
from ganforge.trainer.checkpoint import CheckpointInfo, CheckpointManager, open_storage, software_versions, to_host
from ganforge.trainer.config import TrainingOptions, write_options
from ganforge.trainer.data import ImageDataset, load_dataset, to_float
from ganforge.trainer.distributed import (
    DistContext,
    FlatGradients,
    agree_on_code,
    all_reduce_sum,
    broadcast_from_main,
    gather_to_main,
    init_distributed,
    run_phase,
    shutdown,
)
from ganforge.trainer.ema import ema_beta, update_ema
from ganforge.trainer.errors import (
    CheckpointStorageError,
    ConfigError,
    DistributedError,
    EvaluationError,
    NonFiniteLossError,
    TrainerError,
    error_for_code,
)
from ganforge.trainer.evaluation_suite import build_suite, generate_in_batches
from ganforge.trainer.gang_channel import GangChannel
from ganforge.trainer.job_status import JobStatusReporter
from ganforge.trainer.outputs import (
    FileProgressHook,
    JsonlWriter,
    ProgressEvent,
    ProgressHook,
    PrometheusExporter,
    TensorBoardWriter,
)
from ganforge.trainer.phase_timer import PhaseTimer
from ganforge.trainer.preemption import PreemptionHandler
from ganforge.trainer.rng import capture_rng, restore_rng, seed_rank
from ganforge.trainer.sampler import InfiniteSampler

log = logging.getLogger("ganforge.trainer")

# Control slots appended to G's gradient buffer (summed over ranks every step): three flags, and
# D's mean sign on real images (each rank adds its share), which adaptive augmentation follows.
FLAG_STOP, FLAG_NONFINITE, FLAG_FATAL, SLOT_REAL_SIGN = 0, 1, 2, 3
MAX_CHECKPOINT_FAILURES = 3
STAT_NAMES = ("loss/G", "loss/D", "d_output/real", "d_output/fake", "grad_norm/G", "grad_norm/D")


# ---------------------------------------------------------------------------------------------


def _crossed(before: int, after: int, interval_kimg: float) -> bool:
    if interval_kimg <= 0:
        return False
    interval = max(1, round(interval_kimg * 1000))
    return before // interval != after // interval


def _configure_threads(ctx: DistContext, requested: int) -> None:
    if ctx.device.type != "cpu":
        return
    if requested > 0:
        threads = requested
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        threads = max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(threads)


def _setup_logging(rank: int) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO,
            format=f"%(asctime)s rank={rank} %(levelname)s %(name)s: %(message)s",
        )


def keep_pointwise_spectral_norm_eager(module: nn.Module) -> None:
    """Runs the spectrally normalised 1x1 convolutions (SNGAN's shortcuts) outside torch.compile.

    Compiled, such a layer saves its power-iteration vector for backward without the copy eager
    mode makes, so D's second call in a step (real, then fake) updates a tensor the first call's
    backward still needs, and the step fails ("modified by an inplace operation"; torch 2.15; 3x3
    and 4x4 kernels are unaffected). The eager D shares these modules: it runs them as before.
    The wrapper is bound to each layer: a deep copy of D would still call the original's layers."""
    for layer in module.modules():
        if (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1)
                and parametrize.is_parametrized(layer, "weight")):
            layer.forward = torch.compiler.disable(layer.forward)  # type: ignore[method-assign]


class _Run:
    def __init__(self, options: TrainingOptions, ctx: DistContext, hooks: Sequence[ProgressHook],
                 channel: GangChannel) -> None:
        self.options, self.spec, self.rt, self.ctx = options, options.spec, options.runtime, ctx
        self.run_dir = Path(self.rt.run_dir)
        self.hooks = list(hooks)
        self.nimg = 0
        self.step = 0
        self.pending_fatal: tuple[int, str] | None = None
        self.last_metrics: dict[str, float] = {}
        self.images_per_second = 0.0
        self.manager: CheckpointManager | None = None
        self.prom: PrometheusExporter | None = None
        self.tb: TensorBoardWriter | None = None
        self.job_status: JobStatusReporter | None = None
        self.tracking: TrackingRun | None = None
        self.resumed_from: tuple[int, int] | None = None  # (nimg, step) of the checkpoint loaded
        self.channel = channel
        self.preemption: PreemptionHandler | None = None

    # -- setup -----------------------------------------------------------------------------

    def _check_world(self) -> None:
        resources = self.spec.resources
        if resources.world_size != self.ctx.world_size:
            raise ConfigError(
                f"spec.resources.workers ({resources.workers}) x processes per worker ({resources.processes}) is "
                f"{resources.world_size} ranks but WORLD_SIZE is {self.ctx.world_size}"
            )

    def _load_data(self) -> ImageDataset:
        data = load_dataset(self.spec.dataset, self.rt.pvc_root, self.spec.training.seed, Path(self.rt.cache_dir))
        if len(data) < self.ctx.world_size:
            raise ConfigError(f"{data.source}: {len(data)} images cannot be split over {self.ctx.world_size} ranks")
        log.info("dataset %s: %d images %dx%dx%d, %d classes", data.source, len(data), data.channels,
                 data.resolution, data.resolution, data.num_classes)
        return data

    def _load_data_on_every_rank(self) -> ImageDataset:
        ctx = self.ctx
        if self.spec.dataset.format != "image-folder":
            return run_phase(ctx, "loading the dataset", self._load_data)
        # Rank 0 decodes the folder and fills the decode cache; the other ranks then read it.
        first = run_phase(ctx, "loading the dataset", lambda: self._load_data() if ctx.is_main else None)
        rest = run_phase(ctx, "loading the dataset from the decode cache",
                         lambda: None if ctx.is_main else self._load_data())
        data = first if ctx.is_main else rest
        assert data is not None
        return data

    def _prepare_checkpoints(self) -> None:
        if not self.ctx.is_main:
            return
        location = self.spec.checkpoint.uri or str(self.run_dir / "checkpoints")
        storage = open_storage(location, self.rt.pvc_root)
        self.manager = CheckpointManager(storage, self.spec.checkpoint.keep_last)
        self.manager.prepare()

    def _load_checkpoint(self) -> dict[str, Any] | None:
        found = self.manager.load_latest() if self.manager is not None else None
        if found is None:
            return None
        state, info = found
        if state["config_hash"] not in self.options.accepted_config_hashes and not self.rt.allow_config_change:
            raise ConfigError(
                f"checkpoint {info.uri} was made with a different spec (config hash {state['config_hash']}, "
                f"now {self.options.config_hash}); use a new checkpoint location or --allow-config-change"
            )
        log.info("resuming from %s (kimg %.3f, step %d)", info.uri, info.kimg, info.step)
        return state

    def _build(self, data: ImageDataset) -> None:
        spec, device = self.spec, self.ctx.device
        self.num_classes = data.num_classes if spec.dataset.conditional else 0
        # Recorded in every checkpoint's manifest: what an export needs to rebuild G and label its artifact.
        self.model_facts = {"numClasses": self.num_classes, "resolution": data.resolution,
                            "channels": data.channels, "datasetHash": data.content_hash(),
                            "versions": software_versions()}
        # Same init on every rank without a broadcast: build under the job seed, then fork per rank.
        torch.manual_seed(spec.training.seed)
        g, d = build_models(spec.model, data.resolution, data.channels, self.num_classes)
        self.G, self.D = g.to(device), d.to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if spec.training.channels_last:
            for module in (self.G, self.D, self.G_ema):
                module.to(memory_format=torch.channels_last)
        opt = spec.training.optimizer
        betas = (opt.betas[0], opt.betas[1])
        self.g_grads = FlatGradients(list(self.G.parameters()), extra=4, device=device)
        self.d_grads = FlatGradients(list(self.D.parameters()), extra=0, device=device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=opt.g_lr, betas=betas, eps=opt.eps, foreach=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=opt.d_lr, betas=betas, eps=opt.eps, foreach=True)
        fp16 = spec.training.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        self.batches = BatchSource.for_device(data.images, data.labels, device)
        self.sampler = InfiniteSampler(len(data), self.ctx.rank, self.ctx.world_size, spec.training.seed,
                                       device=self.batches.index_device)
        augment = spec.training.augment
        self.augment = Augment(augment.policy, augment.xflip, augment.initial_probability)
        self.adaptive = (AdaptiveProbability(augment.adaptive.target, augment.adaptive.speed_kimg)
                         if augment.adaptive is not None else None)
        self.real_sign_sum, self.real_sign_steps = 0.0, 0
        self.phases = PhaseTimer(device)
        self.G_fwd: nn.Module = self.G
        self.D_fwd: nn.Module = self.D
        if spec.training.compile:
            if spec.training.channels_last and device.type == "cuda":  # also when --device cuda overrides the spec
                raise ConfigError(COMPILE_CHANNELS_LAST_ON_GPU)
            self.G_fwd = torch.compile(self.G)  # type: ignore[assignment]
            self.D_fwd = torch.compile(self.D)  # type: ignore[assignment]
            keep_pointwise_spectral_norm_eager(self.D)

    def _apply_checkpoint(self, state: dict[str, Any]) -> dict[str, Any]:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.nimg, self.step = int(state["progress"]["nimg"]), int(state["progress"]["step"])
        if "augment_probability" in state["progress"]:
            self.augment.probability = float(state["progress"]["augment_probability"])
        ranks = state["ranks"]
        if len(ranks) == self.ctx.world_size:
            mine = ranks[self.ctx.rank]
            self.sampler.load_state_dict(mine["sampler"])
            return dict(mine["rng"])
        log.warning("checkpoint has %d ranks, this run %d: data order and RNG streams are re-derived, so "
                    "the continuation is statistically but not bitwise the same", len(ranks), self.ctx.world_size)
        self.sampler.load_state_dict(ranks[0]["sampler"])
        seed_rank(self.spec.training.seed + self.nimg, self.ctx.rank)
        return capture_rng(self.ctx.device)

    def _setup_outputs(self, data: ImageDataset) -> None:
        if not self.ctx.is_main:
            return
        write_options(self.options)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        self.stats_log = JsonlWriter(self.run_dir / "stats.jsonl")
        self.metrics_log = JsonlWriter(self.run_dir / "metrics.jsonl")
        # What happened to the run, one line each: every start or resume, preemption and ending.
        self.events_log = JsonlWriter(self.run_dir / "events.jsonl")
        self.hooks.insert(0, FileProgressHook(self.run_dir / "progress.json"))
        self.job_status = JobStatusReporter.from_environment()
        self.tracking = self._open_tracking()
        if self.job_status is not None:
            self.hooks.append(self.job_status)
        if self.rt.tensorboard:
            self.tb = TensorBoardWriter(self.run_dir / "tensorboard")
        self.prom = PrometheusExporter(self.rt.metrics_port, self.options.job_name or "local",
                                       self.spec.checkpoint.interval_kimg, self.ctx.device, self.ctx.world_size)
        if self.manager is not None:
            prom = self.prom
            self.manager.on_written = prom.checkpoint_written
            self.manager.on_failed = lambda _error: prom.checkpoint_failed()
            if self.manager.newest is not None:
                prom.resumed_from(self.manager.newest)
        generator = torch.Generator().manual_seed(self.spec.training.seed + 0xF1ED)
        self.grid_columns = self.num_classes if self.num_classes and self.num_classes <= 16 else 8
        count = self.grid_columns * 8
        self.grid_z = torch.randn(count, self.spec.model.latent_dim, generator=generator).to(self.ctx.device)
        self.grid_labels = (torch.arange(count) % self.num_classes).to(self.ctx.device) if self.num_classes else None
        order = torch.randperm(len(data), generator=generator)[:count]
        save_image_grid(data.images[order], self.run_dir / "samples" / "reals.png", self.grid_columns)

    def _open_tracking(self) -> TrackingRun | None:
        env = os.environ.get
        key = run_key(env(trainer_env.JOB_NAMESPACE, ""), env(trainer_env.JOB_NAME, ""), env(trainer_env.JOB_UID, ""),
                      str(self.run_dir.resolve()))
        try:
            run = TrackingRun.open(key, self.options.job_name or self.run_dir.name,
                                   flatten(trainer_view(self.spec.to_wire())))
        except TrackingUnavailable as error:
            raise ConfigError(str(error)) from None
        if run is not None:
            run.tag(f"gang.{env(trainer_env.GANG, '0')}", f"started at kimg {self.nimg / 1000:g}")
        return run

    def _setup_evaluation(self, data: ImageDataset) -> None:
        self.suite = None
        ev = self.spec.evaluation
        if not self.ctx.is_main or not ev.metrics or not ev.feature_extractors:
            return
        start = time.perf_counter()
        self.suite = build_suite(ev, data, Path(self.rt.cache_dir), self.ctx.device)
        if self.manager is not None:
            files = with_manifest(self.suite.reference_files(), {"datasetHash": self.suite.reference.dataset_hash})
            self.manager.storage.write_checkpoint(REFERENCE_DIR, files)
        log.info("evaluation ready in %.1fs (extractors: %s%s)", time.perf_counter() - start,
                 ", ".join(e.name for e in self.suite.extractors),
                 "" if self.suite.classifier_accuracy is None
                 else f"; domain classifier accuracy {self.suite.classifier_accuracy:.3f}")

    # -- the step --------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.spec.training.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def _batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = self.batches.take(self.sampler.next_indices(count), with_labels=bool(self.num_classes))
        real = to_float(images)
        if self.spec.training.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, labels

    def _r1_pass(self, real: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """R1 in a pass of its own through the eager D (same weights as the compiled one)."""
        real = real.detach().requires_grad_(True)
        with self._autocast():
            logits = self.D(self.augment(real), labels)
        return losses.r1_penalty(real, logits)

    def _train_step(self, preemption: PreemptionHandler) -> tuple[list[float], torch.Tensor]:
        spec, device = self.spec, self.ctx.device
        local = spec.training.batch_size // self.ctx.world_size
        reg = spec.model.regularization
        kind = spec.model.loss
        bad = torch.zeros((), device=device)
        d_real = d_fake = loss_d = real_sign = torch.zeros((), device=device)
        fake = fake_labels = None
        for i in range(spec.training.d_steps_per_g):
            with self.phases.phase("data"):
                real, real_labels = self._batch(local)
            z = torch.randn(local, spec.model.latent_dim, device=device)
            fake_labels = torch.randint(0, self.num_classes, (local,), device=device) if self.num_classes else None
            last = i == spec.training.d_steps_per_g - 1
            r1_due = reg.r1_gamma > 0 and (self.step * spec.training.d_steps_per_g + i) % reg.r1_interval == 0
            # R1 every step in eager mode reuses the main pass's D(real); otherwise it has a pass
            # of its own (lazy R1, or a compiled D, whose graph cannot be differentiated twice).
            r1_inline = r1_due and reg.r1_interval == 1 and not spec.training.compile
            if r1_inline:
                real.requires_grad_(True)
            with self._autocast():
                # The last D step's fakes keep their graph: the G step reuses them (one G forward
                # per step, as in the DCGAN reference loop).
                with torch.no_grad() if not last else contextlib.nullcontext():
                    fake = self.G_fwd(z, fake_labels)
                d_real = self.D_fwd(self.augment(real), real_labels)
                d_fake = self.D_fwd(self.augment(fake.detach()), fake_labels)
                loss_d = losses.d_loss(kind, d_real, d_fake)
            if kind == "wgan-gp":
                # The eager D: a penalty on D's gradient is a second backward.
                loss_d = loss_d + reg.gp_lambda * losses.gradient_penalty(
                    functools.partial(self.D, labels=real_labels), real.detach(), fake.detach())
            if r1_inline:
                loss_d = loss_d + 0.5 * reg.r1_gamma * losses.r1_penalty(real, d_real)
            elif r1_due:
                loss_d = loss_d + 0.5 * reg.r1_gamma * reg.r1_interval * self._r1_pass(real, real_labels)
            self.d_grads.zero()
            self.scaler_d.scale(loss_d).backward()
            with self.phases.phase("communication"):
                self.d_grads.all_reduce_mean(self.ctx)
            if self.scaler_d.is_enabled():
                self.scaler_d.unscale_(self.opt_d)
            d_norm = self.d_grads.grads.norm()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            bad = bad + (~torch.isfinite(loss_d.detach())).float()
            if self.adaptive is not None:
                real_sign = real_sign + d_real.detach().float().sign().mean()

        assert fake is not None
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                # G learns through the same augmentation, so it cannot leak into the samples.
                loss_g = losses.g_loss(kind, self.D_fwd(self.augment(fake), fake_labels))
            self.g_grads.zero()
            self.scaler_g.scale(loss_g).backward()
        finally:
            self.D.requires_grad_(True)
        bad = bad + (~torch.isfinite(loss_g.detach())).float()
        extra = self.g_grads.extra
        extra[FLAG_STOP] = 1.0 if preemption.requested else 0.0
        extra[FLAG_NONFINITE] = bad
        extra[FLAG_FATAL] = float(self.pending_fatal[0]) if self.pending_fatal else 0.0
        extra[SLOT_REAL_SIGN] = real_sign / (spec.training.d_steps_per_g * self.ctx.world_size)
        with self.phases.phase("communication"):
            self.g_grads.all_reduce_mean(self.ctx)
        flags = extra.tolist()  # the one host sync per step: every rank reads the same flags
        if flags[FLAG_NONFINITE] > 0 or flags[FLAG_FATAL] > 0:
            return flags, torch.zeros(0)
        if self.adaptive is not None:
            # Every rank reads the same sum, so p moves identically everywhere.
            images = spec.training.batch_size * spec.training.d_steps_per_g
            self.augment.probability = self.adaptive.next(self.augment.probability, flags[SLOT_REAL_SIGN], images)
            self.real_sign_sum += flags[SLOT_REAL_SIGN]
            self.real_sign_steps += 1
        if self.scaler_g.is_enabled():
            self.scaler_g.unscale_(self.opt_g)
        g_norm = self.g_grads.grads.norm()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        stats = torch.stack([loss_g.detach().float(), loss_d.detach().float(), d_real.detach().float().mean(),
                             d_fake.detach().float().mean(), g_norm, d_norm])
        return flags, stats

    # -- periodic actions ------------------------------------------------------------------

    def _snapshot(self, ranks: list[Any]) -> dict[str, Any]:
        state = {
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
        }
        host: dict[str, Any] = to_host(state)
        host.update({
            "progress": {"nimg": self.nimg, "step": self.step, "augment_probability": self.augment.probability},
            "ranks": ranks,
            "config_hash": self.options.config_hash,
            "world_size": self.ctx.world_size,
        })
        return host

    def _checkpoint(self, background: bool) -> None:
        """Collective: every rank contributes its RNG and sampler state; rank 0 writes."""
        mine = {"rng": capture_rng(self.ctx.device), "sampler": self.sampler.state_dict()}
        ranks = gather_to_main(self.ctx, mine)
        if not self.ctx.is_main or self.manager is None:
            return
        start = time.perf_counter()
        self.manager.wait()  # at most one write in flight
        state = self._snapshot(list(ranks or []))
        stall = time.perf_counter() - start
        meta = {"nimg": self.nimg, "kimg": self.nimg / 1000, "step": self.step,
                "configHash": self.options.config_hash, "worldSize": self.ctx.world_size,
                **self.model_facts, "metrics": dict(self.last_metrics)}
        self.manager.save(state, meta, self.spec.to_wire(), background=background)
        if self.prom is not None:
            self.prom.checkpoint("stall", stall if background else time.perf_counter() - start)
        if self.manager.consecutive_failures >= MAX_CHECKPOINT_FAILURES:
            self._fatal(CheckpointStorageError(
                f"{self.manager.consecutive_failures} checkpoint writes in a row failed "
                f"({self.manager.storage.describe()})"))

    def _fatal(self, error: TrainerError) -> None:
        log.error("%s", error)
        if self.pending_fatal is None:
            self.pending_fatal = (int(error.exit_code), str(error))

    def _report(self, stats_sum: torch.Tensor, steps: int, seconds: float, images: int) -> None:
        packed = torch.cat([stats_sum, torch.tensor([float(steps)], device=stats_sum.device)])
        # One all_reduce per report for every statistic.
        all_reduce_sum(self.ctx, packed)
        phases = self.phases.take(steps, seconds / max(steps, 1))  # every rank: the timer restarts
        real_sign = self.real_sign_sum / self.real_sign_steps if self.real_sign_steps else None
        self.real_sign_sum, self.real_sign_steps = 0.0, 0
        if not self.ctx.is_main:
            return
        values = (packed[:-1] / packed[-1].clamp(min=1)).tolist()
        stats = dict(zip(STAT_NAMES, values, strict=True))
        self.images_per_second = images / max(seconds, 1e-9)
        stats["timing/images_per_second"] = self.images_per_second
        stats["timing/step_seconds"] = seconds / max(steps, 1)
        stats.update({f"timing/{phase}_seconds": value for phase, value in phases.items()})
        if self.augment.transforms:
            stats["augment/probability"] = self.augment.probability
        if real_sign is not None:
            stats["augment/real_sign"] = real_sign
        log.info("kimg %.2f step %d | G %.4f D %.4f | D(x) %.3f D(G(z)) %.3f | %.0f img/s", self.nimg / 1000,
                 self.step, stats["loss/G"], stats["loss/D"], stats["d_output/real"], stats["d_output/fake"],
                 self.images_per_second)
        if real_sign is not None and self.adaptive is not None:
            log.info("augmentation p %.3f (D's real sign %.2f, target %.2f)", self.augment.probability, real_sign,
                     self.adaptive.target)
        self.stats_log.write({"kimg": self.nimg / 1000, "nimg": self.nimg, "step": self.step, "time": time.time(),
                              **stats})
        if self.tb is not None:
            self.tb.scalars(stats, self.nimg)
        if self.prom is not None:
            self.prom.report(stats, self.nimg / 1000, self.step, seconds)
        if self.tracking is not None:
            self.tracking.metrics(stats, self.nimg)
        self._notify("running")

    def _event(self, event: str) -> None:
        if self.ctx.is_main:
            self.events_log.write({"time": time.time(), "event": event, "kimg": self.nimg / 1000, "step": self.step,
                                   "world_size": self.ctx.world_size})

    def _notify(self, state: str) -> None:
        if state != "running":
            self._event(state)
        checkpoint: CheckpointInfo | None = self.manager.newest if self.manager is not None else None
        resumed_nimg, resumed_step = self.resumed_from or (None, None)
        event = ProgressEvent(self.nimg / 1000, self.step, self.images_per_second, self.spec.training.total_kimg,
                              checkpoint, dict(self.last_metrics), state,
                              resumed_from_kimg=resumed_nimg / 1000 if resumed_nimg is not None else None,
                              resumed_from_step=resumed_step)
        if self.tracking is not None and state in ("finished", "failed"):
            self.tracking.end("FINISHED" if state == "finished" else "FAILED")
        for hook in self.hooks:
            try:
                hook(event)
            except Exception as error:  # a status side channel must not stop training
                log.warning("progress hook %r failed: %s", hook, error)

    def _samples(self) -> None:
        if not self.ctx.is_main:
            return
        try:
            # Row by row: at high resolution on a CPU a grid takes seconds, which a stopping gang
            # (waiting for rank 0 at the next step) cannot spare.
            images = generate_in_batches(self.G_ema, self.grid_z, self.grid_labels, self.grid_columns,
                                         self._stop_requested)
        except EvaluationInterrupted:
            log.warning("sample grid at kimg %.2f skipped: the gang is stopping", self.nimg / 1000)
            return
        save_image_grid(images, self.run_dir / "samples" / f"fakes-{self.nimg:012d}.png", self.grid_columns)
        if self.tb is not None:
            self.tb.image("samples/fakes", image_grid(images, self.grid_columns), self.nimg)

    def _stop_requested(self) -> bool:
        """This rank or a peer was asked to stop, or a peer failed: rank 0's own work (evaluation)
        ends so that every rank reaches the next step, where they stop together."""
        return (self.preemption is not None and self.preemption.requested) or self.channel.interrupted

    def _evaluate(self) -> None:
        if not self.ctx.is_main or self.suite is None:
            return
        log.info("evaluating at kimg %.2f (%d samples)", self.nimg / 1000, self.spec.evaluation.num_samples)
        try:
            result = self.suite.evaluate(self.G_ema, self.spec.model.latent_dim, self.num_classes,
                                         self.ctx.device, self.spec.training.seed, should_stop=self._stop_requested)
        except EvaluationInterrupted:
            log.warning("evaluation at kimg %.2f interrupted: the gang is stopping", self.nimg / 1000)
            return
        except Exception as error:
            self._fatal(EvaluationError(f"evaluation at kimg {self.nimg / 1000:.2f} failed: {error}"))
            return
        self.last_metrics = result.metrics
        log.info("evaluation at kimg %.2f (%d samples, %.1fs): %s", self.nimg / 1000, result.num_samples,
                 result.seconds, " ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items())))
        self.metrics_log.write({"kimg": self.nimg / 1000, "nimg": self.nimg, "step": self.step, "time": time.time(),
                                "num_samples": result.num_samples, "seconds": result.seconds, **result.metrics})
        if self.tb is not None:
            self.tb.scalars({f"metrics/{k}": v for k, v in result.metrics.items()}, self.nimg)
        if self.prom is not None:
            self.prom.evaluated(result.metrics, self.nimg / 1000)
        if self.tracking is not None:
            self.tracking.metrics({f"metrics/{k}": v for k, v in result.metrics.items()}, self.nimg)
        self._notify("running")

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ExitCode:
        # Installed before setup: a reclaim during a long setup (dataset load, training the domain
        # classifier) is handled like one during training: stop after the first step, or leave
        # when the grace period runs out.
        preemption = PreemptionHandler(self.rt.grace_seconds)
        preemption.on_request = self.channel.announce_stop
        self.preemption = preemption.install()
        self.channel.start()
        try:
            self._setup()
            return self._train(preemption)
        except TrainerError as error:
            if isinstance(error, DistributedError) and self.channel.peer_fatal is not None:
                # The collective broke because that peer left: say why it left.
                raise DistributedError(self.channel.peer_fatal) from None
            self.channel.announce_failure(int(error.exit_code), str(error))
            if self.tracking is not None and not describe(int(error.exit_code)).resumable:
                self.tracking.end("FAILED")  # the job ends here; a resumable failure gets another gang
            raise
        except Exception as error:
            self.channel.announce_failure(int(ExitCode.INTERNAL_ERROR), f"{type(error).__name__}: {error}")
            raise
        finally:
            self.channel.close()
            preemption.uninstall()
            if self.manager is not None:
                self.manager.wait()
            if self.tb is not None:
                self.tb.close()
            if self.job_status is not None:
                # After the terminal event (if any): sends what is still pending, waiting briefly.
                self.job_status.close()

    def _setup(self) -> None:
        """Everything before the first step, including loading the newest checkpoint (`resumed_from`)."""
        ctx, spec = self.ctx, self.spec
        run_phase(ctx, "checking the world size", self._check_world)
        data = self._load_data_on_every_rank()
        self._build(data)
        run_phase(ctx, "preparing the checkpoint location", self._prepare_checkpoints)
        state = run_phase(ctx, "loading the newest checkpoint", self._load_checkpoint)
        state = broadcast_from_main(ctx, state)
        rng_state = self._apply_checkpoint(state) if state is not None else None
        self.resumed_from = (self.nimg, self.step) if state is not None else None
        del state
        run_phase(ctx, "creating outputs", lambda: self._setup_outputs(data))
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            run_phase(ctx, "preparing evaluation", lambda: self._setup_evaluation(data))
            if self.resumed_from is None:
                self._samples()
                if spec.evaluation.at_start:
                    self._evaluate()
        # RNG streams are set last, so nothing in setup can shift them.
        if rng_state is not None:
            restore_rng(rng_state, ctx.device)
        else:
            seed_rank(spec.training.seed, ctx.rank)

    def _train(self, preemption: PreemptionHandler) -> ExitCode:
        ctx, spec = self.ctx, self.spec
        total_nimg = round(spec.training.total_kimg * 1000)
        images_per_step = spec.training.batch_size * spec.training.d_steps_per_g
        stats_sum = torch.zeros(len(STAT_NAMES), device=ctx.device)
        report_steps, report_nimg, report_start = 0, self.nimg, time.perf_counter()
        start = "fresh start" if self.resumed_from is None else "resumed"
        self._event("started" if self.resumed_from is None else "resumed")
        log.info("training from kimg %.3f to %.3f (%s, world size %d, device %s)", self.nimg / 1000,
                 total_nimg / 1000, start, ctx.world_size, ctx.device)
        while self.nimg < total_nimg:
            flags, stats = self._train_step(preemption)
            if self.channel.peer_fatal is not None:
                raise DistributedError(self.channel.peer_fatal)
            if flags[FLAG_NONFINITE] > 0:
                newest = self.manager.newest.uri if self.manager and self.manager.newest else "none (on rank 0)"
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.step + 1} (kimg {self.nimg / 1000:.3f}); no newer checkpoint "
                    f"is written; the newest good checkpoint is {newest}")
            if flags[FLAG_FATAL] > 0:
                code = int(flags[FLAG_FATAL])
                message = self.pending_fatal[1] if self.pending_fatal else f"rank 0 failed (exit code {code})"
                raise error_for_code(code, message)
            before = self.nimg
            self.nimg += images_per_step
            self.step += 1
            ema = spec.model.ema
            beta = ema_beta(self.nimg, spec.training.batch_size, ema.half_life_kimg, ema.rampup)
            update_ema(self.G_ema, self.G, beta)
            stats_sum += stats
            report_steps += 1

            if flags[FLAG_STOP] > 0:
                return self._emergency_stop()
            done = self.nimg >= total_nimg
            if _crossed(before, self.nimg, spec.training.report_interval_kimg) or done:
                self._report(stats_sum, report_steps, time.perf_counter() - report_start, self.nimg - report_nimg)
                stats_sum.zero_()
                report_steps, report_nimg, report_start = 0, self.nimg, time.perf_counter()
            if done:
                break
            if _crossed(before, self.nimg, spec.checkpoint.interval_kimg):
                self._checkpoint(background=spec.checkpoint.background)
            if _crossed(before, self.nimg, spec.training.sample_interval_kimg):
                self._samples()
            if _crossed(before, self.nimg, spec.evaluation.interval_kimg):
                self._evaluate()
        return self._finish()

    def _emergency_stop(self) -> ExitCode:
        log.warning("preemption: all ranks stopped after step %d (kimg %.3f); writing the emergency checkpoint",
                    self.step, self.nimg / 1000)
        code = 0
        try:
            self._checkpoint(background=False)
        except CheckpointStorageError as error:
            log.error("emergency checkpoint failed: %s", error)
            code = int(error.exit_code)
        code = agree_on_code(self.ctx, code)
        if code:
            raise error_for_code(code, "emergency checkpoint failed")
        self._notify("preempted")
        return ExitCode.PREEMPTED

    def _finish(self) -> ExitCode:
        code = 0
        try:
            self._checkpoint(background=False)
        except CheckpointStorageError as error:
            self._fatal(error)
        self._samples()
        self._evaluate()
        if self.pending_fatal:
            code = self.pending_fatal[0]
        code = agree_on_code(self.ctx, code)
        if code:
            self._notify("failed")
            raise error_for_code(code, self.pending_fatal[1] if self.pending_fatal else "another rank failed")
        if agree_on_code(self.ctx, int(self._stop_requested())):
            # Stopped during the final evaluation: the final checkpoint is written; the next gang
            # resumes at the end and evaluates again.
            log.warning("preempted after the final checkpoint (kimg %.3f), before the final evaluation finished",
                        self.nimg / 1000)
            self._notify("preempted")
            return ExitCode.PREEMPTED
        self._notify("finished")
        log.info("training finished at kimg %.3f (step %d)", self.nimg / 1000, self.step)
        return ExitCode.SUCCESS


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the run, if asked; the process's previous setting afterwards."""
    if not enabled:
        yield
        return
    # cuBLAS needs a fixed workspace before its first use to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def train(options: TrainingOptions, hooks: Sequence[ProgressHook] = ()) -> ExitCode:
    """Run (or resume) the job; returns SUCCESS or PREEMPTED, raises TrainerError otherwise."""
    with _deterministic(options.spec.training.deterministic):
        return _train_process(options, hooks)


def _train_process(options: TrainingOptions, hooks: Sequence[ProgressHook]) -> ExitCode:
    ctx = init_distributed(options.runtime.device, options.spec.resources.gpus_per_worker,
                           options.runtime.dist_timeout_seconds)
    _setup_logging(ctx.rank)
    _configure_threads(ctx, options.runtime.threads)
    # Open until the process group is gone: a teardown stuck on a failed peer still ends.
    channel = GangChannel.connect(ctx.rank, ctx.world_size).start()
    try:
        return _Run(options, ctx, hooks, channel).run()
    finally:
        shutdown(ctx)
        channel.close()
