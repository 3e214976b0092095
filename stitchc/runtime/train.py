"""Train every stitch of a supernetwork at once.

One forward pass of both frozen parents per batch gives each stitch its input (the
raw output of the layer it reads) and its target (the output of the layer it stands
in for). The loss is the sum of the per-stitch mean squared errors. Stitch outputs
never flow onward, so the backward pass touches only the stitches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Sequence

import torch
import torch.fx
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stitchc.errors import InvalidArgumentError, TrainingError
from stitchc.ir import node_info
from stitchc.passes._switch import switch_position

__all__ = ["TrainOptions", "TrainReport", "train_stitches", "stitch_features", "measure_stitch_mse"]

logger = logging.getLogger(__name__)

#: ``progress(step, total_steps, loss)`` is called after every optimizer step.
ProgressCallback = Callable[[int, int, float], None]


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Options of :func:`train_stitches`.

    Attributes:
        lr: AdamW learning rate, decayed to 0 by a cosine schedule over all steps.
        weight_decay: AdamW weight decay.
        batch_size: Samples per step.
        samples: Training samples to draw in total (the data is reshuffled each pass);
            None trains for ``epochs`` passes over the dataset.
        epochs: Passes over the dataset when ``samples`` is None.
        seed: Seed of the shuffling.
        init: ``"default"`` keeps the stitches' initial weights; ``"lstsq"`` first
            solves each stitch by ridge-regularized least squares in float64.
        lstsq_batches: Batches whose features feed the least-squares solve.
        lstsq_ridge: Ridge term, relative to the mean diagonal of ``XᵀX``.
        lstsq_max_condition: Above this condition number of the regularized system,
            a stitch keeps its default initialization.
        eval_batches: Batches, taken in dataset order, on which the normalized MSE is
            measured before and after training.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    samples: int | None = None
    epochs: int = 1
    seed: int = 0
    init: str = "default"
    lstsq_batches: int = 4
    lstsq_ridge: float = 1e-4
    lstsq_max_condition: float = 1e12
    eval_batches: int = 4

    def __post_init__(self):
        if self.init not in ("default", "lstsq"):
            raise InvalidArgumentError(f"invalid init {self.init!r}; use 'default' or 'lstsq'")
        for name in ("batch_size", "epochs", "lstsq_batches", "eval_batches"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"invalid {name}={getattr(self, name)}; use a positive integer")
        if self.samples is not None and self.samples < 1:
            raise InvalidArgumentError(f"invalid samples={self.samples}; use a positive integer or None")
        if not self.lr > 0:
            raise InvalidArgumentError(f"invalid lr={self.lr}; use a positive learning rate")


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """Result of :func:`train_stitches`.

    Attributes:
        steps: Optimizer steps taken.
        samples: Training samples seen.
        seconds: Wall-clock time of the whole call.
        final_loss: Summed per-stitch MSE of the last step.
        mse_before: Per stitch (``"stitch:K"``), MSE over the target's variance before
            any training or initialization, on the evaluation batches.
        mse_after_init: The same after least-squares initialization (equal to
            ``mse_before`` with ``init="default"``).
        mse_after: The same after training.
        lstsq_fallbacks: Stitches that kept their default initialization because the
            least-squares system was ill-conditioned or the stitch is no Linear or 1x1 Conv2d.
    """

    steps: int
    samples: int
    seconds: float
    final_loss: float
    mse_before: dict[str, float]
    mse_after_init: dict[str, float]
    mse_after: dict[str, float]
    lstsq_fallbacks: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _StitchSlot:
    """Stitch ``name`` reads feature ``source`` and stands in for feature ``target``."""

    name: str
    module: nn.Module
    source: int
    target: int


def stitch_features(supernet) -> tuple[torch.fx.GraphModule, list[_StitchSlot]]:
    """Build the graph of both parents that returns every stitch's input and target.

    Every switch is replaced by its input 0, so the parents run unchanged, and the
    graph's output is the tuple of the matched layers' raw outputs. Nodes that no
    output needs (the parents' heads, the stitches) are dropped.
    """
    source_gm = supernet.gm
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    feature_nodes: list[torch.fx.Node] = []
    feature_index: dict[torch.fx.Node, int] = {}
    slots = []
    for node in source_gm.graph.nodes:
        if node.op == "output":
            continue
        position = switch_position(source_gm, node)
        if node.op == "call_module" and node.target.startswith("stitches."):
            continue
        if position is not None:
            if node.target.endswith(".out"):
                continue
            original, stitch = node.args
            env[node] = env[original]
            stitch_name = node_info(stitch).origin
            read = stitch.args[0]
            for feature in (read, original):
                if feature not in feature_index:
                    feature_index[feature] = len(feature_nodes)
                    feature_nodes.append(feature)
            slots.append(_StitchSlot(stitch_name, source_gm.get_submodule(stitch.target),
                                     feature_index[read], feature_index[original]))
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(tuple(env[node] for node in feature_nodes))
    _drop_unused(graph)
    gm = torch.fx.GraphModule(source_gm, graph, class_name="StitchFeatures")
    return gm, slots


def _drop_unused(graph: torch.fx.Graph) -> None:
    """Erase nodes that the output does not reach (stitchc's reachability, not torch's purity rules)."""
    output = next(node for node in reversed(graph.nodes) if node.op == "output")
    needed = {output}
    stack = [output]
    while stack:
        for source in stack.pop().all_input_nodes:
            if source not in needed:
                needed.add(source)
                stack.append(source)
    for node in reversed(list(graph.nodes)):
        if node not in needed and node.op != "placeholder":
            graph.erase_node(node)
    graph.lint()


def _device_of(supernet) -> torch.device:
    for tensor in supernet.parameters():
        return tensor.device
    return torch.device("cpu")


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def measure_stitch_mse(supernet, batches: Sequence[torch.Tensor], features=None) -> dict[str, float]:
    """Return each stitch's MSE divided by its target's variance, over ``batches``.

    Sums of squared errors and target moments are pooled over all batches before
    dividing, so the result does not depend on how the samples are batched.
    """
    features_gm, slots = features or stitch_features(supernet)
    squared = {slot.name: 0.0 for slot in slots}
    moments = {slot.name: [0.0, 0.0, 0] for slot in slots}
    with torch.no_grad():
        for x in batches:
            values = features_gm(x)
            for slot in slots:
                target = values[slot.target].double()
                output = slot.module(values[slot.source]).double()
                squared[slot.name] += float(((output - target) ** 2).sum())
                moments[slot.name][0] += float(target.sum())
                moments[slot.name][1] += float((target ** 2).sum())
                moments[slot.name][2] += target.numel()
    result = {}
    for name, (total, total_squares, count) in moments.items():
        mean = total / count
        variance = max(total_squares / count - mean * mean, 0.0)
        result[name] = squared[name] / count / variance if variance > 0 else math.inf
    return result


def train_stitches(supernet, dataset: Dataset, options: TrainOptions = TrainOptions(),
                   progress: ProgressCallback | None = None) -> TrainReport:
    """Train every stitch of ``supernet`` in place, with both parents frozen.

    Args:
        supernet: A :class:`~stitchc.passes.build.Supernet`; its stitches change.
        dataset: Samples whose first element is the input image batch-free ``(C, H, W)``
            (a TensorDataset of images and labels works; labels are ignored).
        options: Optimizer, budget, seed and initialization.
        progress: Called as ``progress(step, total_steps, loss)`` after each step.

    Returns:
        Steps, samples and per-stitch normalized MSE before and after.

    Raises:
        TrainingError: the supernetwork has no stitches, or a stitch's loss became NaN
            or infinite (the message names the stitch).
        InvalidArgumentError: the dataset is empty.
    """
    started = time.perf_counter()
    if not supernet.stitches():
        raise TrainingError("the supernetwork has no stitches to train; build it from a non-empty matching")
    if len(dataset) == 0:
        raise InvalidArgumentError("the training dataset is empty; pass a data source with samples")
    device = _device_of(supernet)
    features_gm, slots = stitch_features(supernet)
    supernet.train(True)

    generator = torch.Generator().manual_seed(options.seed)
    eval_loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False)
    eval_batches = [_images(batch).to(device) for _, batch in zip(range(options.eval_batches), eval_loader)]
    mse_before = measure_stitch_mse(supernet, eval_batches, (features_gm, slots))

    fallbacks: tuple[str, ...] = ()
    if options.init == "lstsq":
        init_batches = [_images(batch).to(device) for _, batch in
                        zip(range(options.lstsq_batches),
                            DataLoader(dataset, batch_size=options.batch_size, shuffle=True, generator=generator))]
        fallbacks = _init_least_squares(features_gm, slots, init_batches, options)
        mse_after_init = measure_stitch_mse(supernet, eval_batches, (features_gm, slots))
    else:
        mse_after_init = dict(mse_before)

    samples = options.samples if options.samples is not None else options.epochs * len(dataset)
    total_steps = math.ceil(samples / options.batch_size)
    parameters = [p for slot in slots for p in slot.module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)

    step, seen, loss_value = 0, 0, float("nan")
    while step < total_steps:
        loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=True, generator=generator)
        for batch in loader:
            if step >= total_steps:
                break
            x = _images(batch).to(device)
            loss_value = _train_step(features_gm, slots, x, optimizer)
            schedule.step()
            step += 1
            seen += x.shape[0]
            if progress is not None:
                progress(step, total_steps, loss_value)

    supernet.train(False)
    mse_after = measure_stitch_mse(supernet, eval_batches, (features_gm, slots))
    seconds = time.perf_counter() - started
    logger.info("trained %d stitches for %d steps (%d samples) in %.1f s, final loss %.4g",
                len(slots), step, seen, seconds, loss_value)
    return TrainReport(steps=step, samples=seen, seconds=seconds, final_loss=loss_value, mse_before=mse_before,
                       mse_after_init=mse_after_init, mse_after=mse_after, lstsq_fallbacks=fallbacks)


def _train_step(features_gm: torch.fx.GraphModule, slots: list[_StitchSlot], x: torch.Tensor,
                optimizer: torch.optim.Optimizer) -> float:
    # The parents run without autograd; only the stitch calls below record a graph.
    with torch.no_grad():
        values = features_gm(x)
    losses = [nn.functional.mse_loss(slot.module(values[slot.source]), values[slot.target]) for slot in slots]
    loss = torch.stack(losses).sum()
    if not torch.isfinite(loss):
        bad, value = next((slot.name, float(value.detach())) for slot, value in zip(slots, losses)
                          if not torch.isfinite(value))
        raise TrainingError(
            f"the loss of {bad} became {value}; lower the learning rate (--lr) or use --init lstsq"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _as_matrix(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor | None:
    """Return ``tensor`` as rows of features for a Linear or 1x1 Conv2d stitch, else None."""
    if isinstance(module, nn.Linear):
        return tensor.reshape(-1, tensor.shape[-1])
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        # [N, C, H, W] -> [N * H * W, C]: one row per pixel.
        return tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1])
    return None


def _init_least_squares(features_gm, slots: list[_StitchSlot], batches: list[torch.Tensor],
                        options: TrainOptions) -> tuple[str, ...]:
    """Set each stitch to the ridge least-squares fit of its target; return the fallbacks.

    With X the input rows plus a column of ones and Y the target rows, the weights
    solve ``(XᵀX + λI) W = XᵀY`` in float64, where λ is ``lstsq_ridge`` times the
    mean diagonal of XᵀX. The bias column is regularized like the rest.
    """
    gram: dict[str, torch.Tensor] = {}
    cross: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for x in batches:
            values = features_gm(x)
            for slot in slots:
                inputs = _as_matrix(slot.module, values[slot.source])
                targets = _as_matrix(slot.module, values[slot.target])
                if inputs is None:
                    continue
                inputs = torch.cat([inputs.double(), inputs.new_ones(inputs.shape[0], 1).double()], dim=1)
                targets = targets.double()
                gram[slot.name] = gram.get(slot.name, 0) + inputs.T @ inputs
                cross[slot.name] = cross.get(slot.name, 0) + inputs.T @ targets

    fallbacks = []
    for slot in slots:
        if slot.name not in gram:
            logger.warning("%s is a %s, not a Linear or 1x1 Conv2d; it keeps its default initialization",
                           slot.name, type(slot.module).__name__)
            fallbacks.append(slot.name)
            continue
        system = gram[slot.name]
        ridge = options.lstsq_ridge * float(system.diagonal().mean())
        system = system + ridge * torch.eye(system.shape[0], dtype=system.dtype, device=system.device)
        condition = float(torch.linalg.cond(system))
        if not math.isfinite(condition) or condition > options.lstsq_max_condition:
            logger.warning("least-squares system of %s has condition number %.3g; it keeps its default "
                           "initialization", slot.name, condition)
            fallbacks.append(slot.name)
            continue
        solution = torch.linalg.solve(system, cross[slot.name])  # [in + 1, out]
        weight = solution[:-1].T.to(slot.module.weight.dtype)
        with torch.no_grad():
            slot.module.weight.copy_(weight.reshape(slot.module.weight.shape))
            if slot.module.bias is not None:
                slot.module.bias.copy_(solution[-1].to(slot.module.bias.dtype))
    return tuple(fallbacks)
