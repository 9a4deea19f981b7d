"""The trainer: one loop for every compression method.

A method is a `TrainTask`: an nn.Module whose forward(wave, lengths, step) returns the loss and
a dict of float metrics. The teacher is held outside the module's registered children, so it is
neither trained, nor saved, nor synchronised by DDP.

Several processes: start with `torchrun --nproc_per_node N ...`; the trainer sees WORLD_SIZE and
uses DistributedDataParallel (gloo on CPU, nccl on GPU). `batch_size` is the global batch of one
micro-step; each process takes its slice (data.AudioFolder.step_batch), so N processes with
batch B/N each compute the same update as one process with batch B. Gradient accumulation
sums `grad_accum` micro-steps per optimizer step. Randomness inside a step (subnet sampling,
gate noise) is seeded by (seed, step), identical on every process and after `--resume`.

Checkpoints (out/checkpoints/last.pt) hold model, optimizer, scheduler, step and RNG states,
and are written atomically; `--resume` continues exactly where the run stopped.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError
from .data import AudioFolder

CHECKPOINT_FORMAT = "edgekit.train/1"
_SCHEDULES = ("linear", "cosine", "constant")
_AMP = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    steps: int
    batch_size: int = 8  # global batch per micro-step, split over processes
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_steps: int = 0
    schedule: str = "linear"
    weight_decay: float = 0.0
    clip_norm: float = 10.0  # 0 disables clipping
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on CPU
    val_every: int = 0  # 0: validate only at the end (when validation data is given)
    val_items: int = 32
    ckpt_every: int = 0  # 0: checkpoint only at the end
    log_every: int = 10
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise UserError(f"--{name.replace('_', '-')} {v!r} is invalid; expected a positive integer")
        for name in ("warmup_steps", "val_every", "ckpt_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise UserError(f"--{name.replace('_', '-')} {v!r} is invalid; expected an integer >= 0")
        if not self.lr > 0:
            raise UserError(f"--lr {self.lr} is invalid; expected a positive learning rate")
        if self.schedule not in _SCHEDULES:
            raise UserError(f"--schedule {self.schedule!r} is unknown; expected one of {', '.join(_SCHEDULES)}")
        if self.amp not in _AMP:
            raise UserError(f"--amp {self.amp!r} is unknown; expected one of {', '.join(_AMP)}")
        if self.clip_norm < 0:
            raise UserError(f"--clip-norm {self.clip_norm} is invalid; expected >= 0 (0 disables clipping)")


class TrainTask(nn.Module):
    """Base of every method. Subclasses set `method` and implement forward and export."""

    method: str = ""
    # Some parameters get no gradient in a step (unsampled supernet widths): DDP must know.
    find_unused_parameters: bool = False

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        raise RuntimeError(f"internal error: {type(self).__name__} does not define forward")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]

    def before_optimizer_step(self) -> None:
        """Called after backward and before clipping (e.g. to flip Lagrange multiplier grads)."""

    def describe(self) -> dict:
        """JSON-able facts saved with the checkpoint (method, specs) and checked on resume."""
        return {"method": self.method}

    def step_generator(self, seed: int, step: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(int(seed) * 1_000_003 + int(step))
        return g


@dataclass
class TrainResult:
    step: int
    train_loss: float
    valid_loss: float | None
    history: list[dict] = field(default_factory=list)
    checkpoint: str = ""
    audio_seconds_per_second: float = 0.0


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Read torchrun's environment; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank, world, local, dev)


def _all_mean(value: float, env: DistEnv) -> float:
    if env.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


# --------------------------------------------------------------------------- schedule and checkpoint


def lr_lambda(config: TrainConfig):
    total, warm = config.steps, config.warmup_steps

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        progress = min(max(progress, 0.0), 1.0)
        if config.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_train_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {str(path)!r} to resume from; run without --resume first")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{str(path)!r} is not an edgekit training checkpoint (expected format {CHECKPOINT_FORMAT})")
    return ckpt


# --------------------------------------------------------------------------- the loop


class Trainer:
    def __init__(self, config: TrainConfig, out_dir: str | Path, env: DistEnv | None = None):
        self.config = config
        self.out_dir = Path(out_dir)
        self.env = env or init_distributed()
        if config.batch_size % self.env.world_size:
            raise UserError(f"--batch-size {config.batch_size} is not divisible by {self.env.world_size} "
                            "processes; use a multiple of the process count")

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"

    def _autocast(self):
        amp, dev = self.config.amp, self.env.device
        if amp == "off" or (amp == "auto" and dev.type != "cuda"):
            return contextlib.nullcontext()
        dtype = torch.float16 if amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=dev.type, dtype=dtype)

    def run(self, task: TrainTask, train_data: AudioFolder, valid_data: AudioFolder | None = None,
            resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train to config.steps (or stop after `stop_at` steps, e.g. to continue later with
        resume=True). Returns the last losses and, on the main process, the history."""
        cfg, env = self.config, self.env
        task.to(env.device)
        torch.manual_seed(cfg.seed)
        groups = task.param_groups(cfg.lr, cfg.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # Groups marked scheduled=False (pruning gates, Lagrange multipliers) keep their rate.
        sched = lr_lambda(cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [sched if g.get("scheduled", True) else (lambda step: 1.0) for g in groups])
        scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and env.device.type == "cuda" else None
        step = 0
        # A resumed run that trains no further step still reports the losses of its last step.
        train_loss, valid_loss, speed = float("nan"), None, 0.0
        if resume:
            ckpt = load_train_checkpoint(self.checkpoint_path)
            if ckpt["task"] != task.describe():
                raise UserError(f"{self.checkpoint_path} was written by a different run ({ckpt['task'].get('method')}); "
                                "use a new --out or the same options as that run")
            task.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step = int(ckpt["step"])
            _set_rng_state(ckpt["rng"])
            last = ckpt.get("last") or {}
            train_loss, valid_loss = float(last.get("train_loss", float("nan"))), last.get("valid_loss")
        model: nn.Module = task
        if env.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            model = DDP(task, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                        find_unused_parameters=task.find_unused_parameters)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = _CsvLog(self.out_dir / "train_log.csv") if env.is_main else None
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        history: list[dict] = []
        progress = _Progress(cfg.progress and env.is_main, task.method, step, cfg.steps)
        try:
            while step < end:
                task.train()
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss_sum, seconds, metrics = 0.0, 0.0, {}
                for micro in range(cfg.grad_accum):
                    batch = train_data.step_batch(cfg.seed, step, micro, cfg.batch_size, env.rank, env.world_size)
                    wave, lengths = batch.wave.to(env.device), batch.lengths.to(env.device)
                    sync = micro == cfg.grad_accum - 1 or env.world_size == 1
                    ctx = model.no_sync() if not sync else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            loss, metrics = model(wave, lengths, step)
                        scaled = loss / cfg.grad_accum
                        (scaler.scale(scaled) if scaler else scaled).backward()
                    loss_sum += float(loss.detach()) / cfg.grad_accum
                    seconds += batch.seconds
                if scaler:
                    scaler.unscale_(optimizer)
                task.before_optimizer_step()
                if cfg.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in task.parameters() if p.grad is not None],
                                                   cfg.clip_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                step += 1
                dt = time.perf_counter() - t0
                train_loss = _all_mean(loss_sum, env)
                speed = seconds * env.world_size / dt
                row = {"step": step, "loss": train_loss, "lr": scheduler.get_last_lr()[0],
                       "audio_s_per_s": speed, **{k: v for k, v in metrics.items()}}
                if valid_data is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps):
                    valid_loss = self.validate(task, valid_data)
                    row["valid_loss"] = valid_loss
                history.append(row)
                if log is not None and (step % max(cfg.log_every, 1) == 0 or step == end or "valid_loss" in row):
                    log.write(row)
                progress.update(step, train_loss, speed, valid_loss)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == end:
                    self.save_checkpoint(task, optimizer, scheduler, step,
                                         {"train_loss": train_loss, "valid_loss": valid_loss})
        finally:
            progress.close()
        return TrainResult(step, train_loss, valid_loss, history, str(self.checkpoint_path), speed)

    @torch.no_grad()
    def validate(self, task: TrainTask, data: AudioFolder) -> float:
        task.eval()
        losses, weights = [], []
        for batch in data.validation_batches(max(1, self.config.batch_size), self.config.val_items):
            with self._autocast():
                loss, _ = task(batch.wave.to(self.env.device), batch.lengths.to(self.env.device), 0)
            losses.append(float(loss) * len(batch.lengths))
            weights.append(len(batch.lengths))
        task.train()
        return sum(losses) / max(1, sum(weights))

    def save_checkpoint(self, task: TrainTask, optimizer, scheduler, step: int, last: dict | None = None) -> None:
        if self.env.is_main:
            atomic_torch_save({"format": CHECKPOINT_FORMAT, "task": task.describe(), "model": task.state_dict(),
                               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "step": step, "rng": _rng_state(), "config": asdict(self.config),
                               "last": last or {}},
                              self.checkpoint_path)
        if self.env.world_size > 1:
            dist.barrier()


class _CsvLog:
    """Append-only CSV; the header is the union of keys seen in the first row written."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] | None = None
        if path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
                self.fields = header

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row) + ([] if "valid_loss" in row else ["valid_loss"])
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class _Progress:
    """A rich progress bar with loss and throughput; silent when disabled or not a terminal."""

    def __init__(self, enabled: bool, name: str, start: int, total: int):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, completed=start, info="")

    def update(self, step: int, loss: float, speed: float, valid: float | None) -> None:
        if self.bar is not None:
            info = f"loss {loss:.4f}  {speed:.1f} s audio/s" + (f"  valid {valid:.4f}" if valid is not None else "")
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
