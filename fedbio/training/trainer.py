"""The training loop: AdamW, warm-up + linear decay, clipping, model selection on validation.

    history = fit(module, train, valid, tcfg, task_type, epochs=3)

``module`` is whatever is trained: the whole sequence model (``lora``/``full``), only its head on
cached embeddings (``head``), or the composition model. The federated client calls the same
``fit`` for each round's local work (``prox`` adds FedProx's proximal term).

Device and precision come from ``TrainConfig.device`` / ``.precision`` (``fedbio.training.device``): the
module is moved there, every batch follows it, and ``bf16-mixed`` runs the forward pass under
``torch.autocast(device_type="cuda", dtype=torch.bfloat16)``. Losses are computed and outputs
returned in float32 on the CPU. On the CPU (``32``) nothing changes: the same operations in the
same order, so the same numbers.

Sanity: a non-finite loss, or an epoch whose mean loss is ``DIVERGED`` times where training
started (the mean of its first ``START_STEPS`` steps; a federated site keeps its first round's),
stops training with a ``TrainingDiverged`` error naming the site, round and epoch.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fedbio.config import TrainConfig, cores
from fedbio.data.batching import TensorData, TokenData, batch_of, batches
from fedbio.errors import TrainingDiverged
from fedbio.progress import ProgressLines, progress_bar
from fedbio.training.device import placement, placement_for, to_device
from fedbio.training.metrics import (
    classification_scores,
    key_metric,
    multitask_scores,
    regression_scores,
)

DIVERGED = 100.0   # an epoch's mean loss this many times its start: training has diverged
START_STEPS = 10   # "where it started": the mean loss of the first steps


def set_threads(tcfg: TrainConfig, concurrent: int = 1) -> int:
    """Torch threads for this process: the config's, or cores / concurrent processes."""
    n = tcfg.threads or max(1, cores() // max(1, concurrent))
    torch.set_num_threads(n)
    return n


def _schedule(optimizer, total: int, warmup_frac: float):
    warm = max(1, int(round(total * warmup_frac)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def masked_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries of ``y`` that are not NaN (multi-task targets: each
    record has a value for its own task only); 0 when a batch has none."""
    known = ~torch.isnan(y)
    if not known.any():
        return out.sum() * 0.0
    return ((out[known] - y[known]) ** 2).mean()


def loss_fn(task_type: str):
    if task_type == "classification":
        return nn.CrossEntropyLoss()
    return masked_mse if task_type == "multitask" else nn.MSELoss()


@torch.no_grad()
def predict(module: nn.Module, data: TokenData | TensorData, batch_size: int = 64,
            task_type: str = "classification", *, device=None, precision: str | None = None) -> np.ndarray:
    """Probabilities (classification) or raw outputs (regression), in the data's order.

    ``device`` (default: where ``module`` is) and ``precision`` (default ``auto``) as in
    ``fedbio.training.device``; the result is float32 numpy on the CPU either way.
    """
    place = placement_for(module, device, precision)
    module.to(place.device)
    was_training = module.training
    module.eval()
    out = None
    for inputs, _, idx in batches(data, batch_size, rng=None):
        with place.autocast():
            y = module(*to_device(inputs, place.device))
        y = y.float()
        y = torch.softmax(y, dim=-1) if task_type == "classification" else y
        if out is None:
            out = np.zeros((len(data), y.shape[-1]), np.float32)
        out[idx] = y.cpu().numpy()
    module.train(was_training)
    return out


def score(module: nn.Module, data, task_type: str, codec=None, batch_size: int = 64,
          ci: bool = False, *, device=None, precision: str | None = None) -> dict:
    """Metrics on a data set; regression is scored in original units via ``codec``."""
    outputs = predict(module, data, batch_size, task_type, device=device, precision=precision)
    return scores_of(data.y.numpy(), outputs, task_type, codec, ci)


def scores_of(y: np.ndarray, out: np.ndarray, task_type: str, codec=None, ci: bool = False) -> dict:
    """Metrics from targets and model outputs (as ``predict`` returns them); ``ci``: bootstrap
    intervals where the task type has them (multi-task)."""
    if task_type == "classification":
        return classification_scores(y, out)
    if task_type == "multitask":
        return multitask_scores(y, out, codec.classes, codec.mean, codec.std, ci=ci)
    if codec is not None:
        y, out = codec.decode_values(y), codec.decode_values(out)
    return regression_scores(y, out)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def fit(module: nn.Module, train: TokenData | TensorData, valid: TokenData | TensorData | None,
        tcfg: TrainConfig, task_type: str, epochs: float, *, codec=None, writer=None,
        tag: str = "", progress: bool = True, prox: tuple[float, dict] | None = None,
        step_offset: int = 0, select: bool = True, where: str | None = None,
        reference: dict | None = None, on_epoch=None, dp_sgd=None) -> list[dict]:
    """Train ``module`` in place for ``epochs`` passes; keep the epoch best on ``valid``.

    Returns one dict per epoch (train loss, validation scores). ``prox=(mu, global_params)``
    adds FedProx's ``mu/2 * ||w - w_global||^2``. Fractional epochs stop part-way. The module
    is moved to ``tcfg``'s device (and stays there); see the module docstring for precision.
    ``where`` names the work in errors ("site-2, round 3, "; default: ``tag``), ``reference``
    holds the starting loss and the step count across calls (a site's rounds), ``on_epoch(row)``
    sees every epoch. ``writer`` (TensorBoard's ``add_scalar``/``flush``, or NVFlare's streaming
    one) gets every step's training loss (``<tag>/train_loss_step``) and every epoch's scores,
    and is flushed after each epoch. ``dp_sgd`` (``fedbio.privacy.sgd.RecordPrivacy``) trains
    with Opacus's DP-SGD on Poisson batches, counted by its accountant across calls; the last
    epoch's model is kept (no selection on ``valid``), and ``grad_clip`` gives way to its clip.
    Progress: a bar on a terminal or in Jupyter, else a line per epoch at most (``fedbio.progress``).
    """
    place = placement(tcfg)
    module.to(place.device)
    rng = np.random.default_rng(tcfg.seed + step_offset)
    total = planned_steps(len(train), tcfg.batch_size, epochs)
    params, optimizer, scheduler = _optimizer(module, tcfg, place, total)
    criterion = loss_fn(task_type)
    metric, sign = key_metric(task_type)
    best, best_state, history, step = -math.inf, None, [], 0
    named = dict(module.named_parameters()) if prox else {}
    if prox is not None:  # the global weights, where the local ones are
        prox = (prox[0], {k: torch.as_tensor(v).to(place.device) for k, v in prox[1].items()})
    bar = progress_bar(total, tag or "train", "step", progress)
    lines = ProgressLines() if progress and bar is None else None
    where = where if where is not None else (f"{tag}, " if tag else "")
    reference = {} if reference is None else reference
    first: list[float] = []  # the first steps' losses, until the start is known
    n_epochs = math.ceil(epochs)
    steps_per_epoch = math.ceil(len(train) / tcfg.batch_size)
    select = select and dp_sgd is None   # under DP-SGD a choice on valid would be a release
    module.train()
    with _privately(dp_sgd, module, optimizer) as (model, step_optimizer):
        for epoch in range(1, n_epochs + 1):
            losses = []
            for inputs, y in _epoch_batches(train, tcfg, rng, dp_sgd, min(steps_per_epoch, total - step)):
                step_optimizer.zero_grad(set_to_none=True)
                if inputs is None:   # an empty Poisson batch: a noise-only step (DP-SGD)
                    dp_sgd.empty_batch(step_optimizer)
                else:
                    loss = _loss(model, inputs, y, criterion, place, prox, named)
                    loss.backward()
                    if dp_sgd is not None:
                        dp_sgd.check_gradients(step_optimizer)
                    elif tcfg.grad_clip:   # DP-SGD clips each record's gradient instead
                        nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
                    value = _finite(float(loss.detach()), f"{where}epoch {epoch} of {n_epochs}, step {len(losses) + 1}")
                step_optimizer.step()
                scheduler.step()
                step += 1
                reference["steps"] = reference.get("steps", 0) + 1
                if inputs is None:
                    continue
                losses.append(value)
                _note_start(reference, first, value, min(START_STEPS, total))
                if writer is not None:
                    writer.add_scalar(_tag(tag, "train_loss_step"), value, reference["steps"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            row = {"epoch": epoch + step_offset, "train_loss": float(np.mean(losses)) if losses else None}
            _check_diverged(row["train_loss"], reference.get("loss"), f"{where}epoch {epoch} of {n_epochs}")
            if valid is not None and len(valid):
                scores = score(module, valid, task_type, codec, device=place.device,
                               precision=place.precision)
                row.update({f"valid_{k}": v for k, v in scores.items() if isinstance(v, float)})
                value = sign * scores[metric]
                if select and value > best:
                    best, best_state = value, _snapshot(module)
            history.append(row)
            _report(row, lines, writer, tag, f"{epoch}/{n_epochs}", last=epoch == n_epochs)
            if on_epoch is not None:   # after the epoch is written out (its curve is on disk)
                on_epoch(row)
    if bar is not None:
        bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    return history


def planned_steps(records: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps in ``epochs`` passes over ``records`` records (fractional epochs stop
    part-way): what ``fit`` takes, and what DP-SGD's accountant is planned for."""
    return max(1, int(round(epochs * math.ceil(records / batch_size))))


@contextmanager
def _privately(dp_sgd, module: nn.Module, optimizer):
    """``(module, optimizer)`` as they are, or as DP-SGD's Opacus wrappers while training."""
    if dp_sgd is None:
        yield module, optimizer
    else:
        with dp_sgd.private(module, optimizer) as wrapped:
            yield wrapped


def _epoch_batches(data, tcfg: TrainConfig, rng, dp_sgd, steps: int):
    """One epoch's ``(inputs, targets)``, at most ``steps`` of them: length-bucketed batches, or
    under DP-SGD ``steps`` Poisson batches (``(None, None)`` for an empty one)."""
    if dp_sgd is None:
        for i, (inputs, y, _) in enumerate(batches(data, tcfg.batch_size, rng,
                                                   bucket_size=tcfg.bucket_size or 50)):
            if i >= steps:
                return
            yield inputs, y
        return
    for idx in dp_sgd.batches(steps):
        yield batch_of(data, idx) if len(idx) else (None, None)


def _optimizer(module: nn.Module, tcfg: TrainConfig, place, total: int):
    """The trainable parameters, their AdamW and its warm-up + decay schedule over ``total`` steps."""
    params = _trainable(module)
    fused = {"fused": True} if place.is_cuda else {}  # one kernel per step on GPUs; CPU unchanged
    optimizer = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, **fused)
    return params, optimizer, _schedule(optimizer, total, tcfg.warmup_frac)


def _finite(value: float, where: str) -> float:
    """``value``, or ``TrainingDiverged`` when the loss is not a finite number."""
    if not math.isfinite(value):
        raise TrainingDiverged(f"{where}: the training loss is {value} (not finite); check the "
                               "labels, or lower the learning rate")
    return value


def _note_start(reference: dict, first: list[float], value: float, steps: int) -> None:
    """Where training started (``reference["loss"]``): the mean loss of its first ``steps`` steps."""
    if "loss" not in reference:
        first.append(value)
        if len(first) >= steps:
            reference["loss"] = float(np.mean(first))


def _loss(module: nn.Module, inputs, y, criterion, place, prox, named: dict) -> torch.Tensor:
    """One batch's training loss on ``place``'s device, plus FedProx's term when ``prox`` is set."""
    inputs, y = to_device(inputs, place.device), y.to(place.device, non_blocking=True)
    with place.autocast():
        out = module(*inputs)
    loss = criterion(out.float(), y)
    if prox is not None:
        mu, ref = prox
        loss = loss + mu / 2 * sum(((named[k] - v) ** 2).sum() for k, v in ref.items()
                                   if k in named and named[k].requires_grad)
    return loss


def _check_diverged(loss: float | None, start: float | None, where: str) -> None:
    """Stop (``TrainingDiverged``) when an epoch's mean loss is ``DIVERGED`` times its start."""
    if loss is not None and start is not None and loss > DIVERGED * max(start, 1e-3):
        raise TrainingDiverged(
            f"{where}: the training loss rose to {loss:.3g}, {loss / start:.0f} times where it "
            f"started ({start:.3g}); training diverged: lower the learning rate (federated: the "
            "server's, --server-lr)")


def _report(row: dict, lines: ProgressLines | None, writer, tag: str, epoch: str, last: bool) -> None:
    """An epoch's progress line (in a log) and its TensorBoard scalars."""
    if lines is not None and row["train_loss"] is not None:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k.startswith("valid_")
                           and k.endswith(("accuracy", "rmse", "mse_std")))
        lines.say(tag or "train", f"{tag or 'train'} epoch {epoch}: train loss "
                  f"{row['train_loss']:.4f}" + (f", {scores}" if scores else ""), force=last)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, float):
                writer.add_scalar(_tag(tag, key), value, row["epoch"])
        writer.flush()   # at least once an epoch: a live TensorBoard shows it now


def _tag(tag: str, key: str) -> str:
    return f"{tag}/{key}" if tag else key


def _snapshot(module: nn.Module) -> dict:
    """A copy of ``module.state_dict()`` (on the CPU, so a GPU holds one model, not two)."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in module.state_dict().items()}

