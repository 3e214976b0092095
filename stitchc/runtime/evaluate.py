"""Evaluate the subnetworks of a supernetwork on a fixed data set, with caching.

Parents are frozen and the evaluation set is fixed, so every node of a subnetwork whose
inputs all come, unchanged, from one parent computes exactly what that parent computes.
:class:`SubnetEvaluator` runs both parents once over the evaluation set and keeps the
outputs of their matched layers and final layers. A subnetwork can leave a parent only at
a matched layer, so each genotype then needs only the nodes behind its first stitch. Results are memoized by the genotype's canonical form (inactive
positions set to 0), so two genotypes that select the same network are evaluated once.

:class:`SupernetProblem` adapts the evaluator to the search's
:class:`~stitchc.runtime.search.Problem` protocol, and :class:`SupernetProblemFactory`
is the picklable recipe that search workers use to build their own problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx
from torch.utils.data import TensorDataset

from stitchc.errors import EvaluationError, InvalidArgumentError
from stitchc.ir import has_node_info, node_info
from stitchc.passes.genotype import active_positions, canonical_genotype, parse_genotype
from stitchc.passes.prune import prune_graph
from stitchc.runtime.data import DataOptions, DataSplits, load_data
from stitchc.runtime.metrics import MetricAccumulator

__all__ = [
    "EvalOptions",
    "SubnetEvaluator",
    "SupernetProblem",
    "SupernetProblemFactory",
    "evaluate_module",
    "evaluate_offspring",
    "evaluate_model_file",
    "PARENT_GENOTYPES",
]

logger = logging.getLogger(__name__)

#: Output-switch values of the three reference networks.
PARENT_GENOTYPES = {"A": 0, "B": 1, "ensemble": 2}


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Options of the evaluator.

    Attributes:
        batch_size: Samples per forward pass.
        device: Torch device for the torch backend (``"cpu"`` or ``"cuda"``).
        backend: ``"torch"`` (with activation caching) or ``"onnxruntime"`` (each
            subnetwork exported to ONNX and run by onnxruntime, without caching).
        cache_bytes: Memory budget for cached parent activations, in bytes. Matched
            layers are cached in topological order until the budget is spent; the
            rest are recomputed.
        split: Which split of the data to evaluate on: ``"val"`` or ``"test"``.
    """

    batch_size: int = 256
    device: str = "cpu"
    backend: str = "torch"
    cache_bytes: int = 2 * 1024**3
    split: str = "val"

    def __post_init__(self):
        if self.backend not in ("torch", "onnxruntime"):
            raise InvalidArgumentError(f"invalid backend {self.backend!r}; use torch or onnxruntime")
        if self.split not in ("val", "test"):
            raise InvalidArgumentError(f"invalid split {self.split!r}; use val or test")
        if self.batch_size < 1:
            raise InvalidArgumentError(f"invalid batch size {self.batch_size}; use a positive integer")


def _batches(dataset: TensorDataset, batch_size: int):
    inputs, targets = dataset.tensors
    for start in range(0, len(inputs), batch_size):
        yield start, inputs[start:start + batch_size], targets[start:start + batch_size]


def evaluate_module(module: Callable[[torch.Tensor], torch.Tensor], dataset: TensorDataset, task: str,
                    num_classes: int, batch_size: int = 256, device: str = "cpu") -> dict:
    """Evaluate a plain model (an nn.Module or any callable on a batch) on ``dataset``.

    Returns the metrics of :class:`~stitchc.runtime.metrics.MetricAccumulator`.
    """
    accumulator = MetricAccumulator(task, num_classes)
    with torch.no_grad():
        for _, inputs, targets in _batches(dataset, batch_size):
            logits = module(inputs.to(device))
            accumulator.update(logits.float().cpu(), targets)
    return accumulator.result()


class _CachedRunner(torch.fx.Interpreter):
    """Runs a pruned subnetwork on one batch, reading cached parent activations.

    ``cached`` maps a node of the subnetwork to its cached value; ``needed`` is the set
    of nodes that must be computed. Every other node is skipped.
    """

    def __init__(self, gm: torch.fx.GraphModule, cached: dict[torch.fx.Node, torch.Tensor],
                 needed: set[torch.fx.Node]):
        super().__init__(gm, garbage_collect_values=True)
        self.cached = cached
        self.needed = needed

    def run_node(self, node: torch.fx.Node) -> Any:
        if node in self.cached:
            return self.cached[node]
        if node.op != "output" and node not in self.needed:
            return None
        return super().run_node(node)


class SubnetEvaluator:
    """Evaluates genotypes of one supernetwork on one fixed data split.

    Args:
        supernet: A built :class:`~stitchc.passes.build.Supernet` (its stitches trained).
        dataset: Inputs and targets to evaluate on, already shaped for the parents.
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: Number of classes of the task.
        options: See :class:`EvalOptions`.
    """

    def __init__(self, supernet, dataset: TensorDataset, task: str, num_classes: int,
                 options: EvalOptions = EvalOptions()):
        self.supernet = supernet.to(options.device).eval()
        self.dataset = dataset
        self.task = task
        self.num_classes = num_classes
        self.options = options
        self.memo: dict[tuple[int, ...], dict] = {}
        self.evaluations = 0
        # (origin, stable name) -> activations of that parent node over the whole
        # dataset, on the CPU; filled by _fill_cache on first use.
        self._cache: dict[tuple[str, str], torch.Tensor] | None = None

    # -- the cache of parent activations ------------------------------------------

    def _cache_keys(self) -> list[tuple[str, str]]:
        keys = []
        for match in self.supernet.matches:
            keys.append(("A", match.a))
            keys.append(("B", match.b))
        return keys

    def _fill_cache(self) -> None:
        started = time.perf_counter()
        wanted = set(self._cache_keys())
        samples = len(self.dataset.tensors[0])
        cache: dict[tuple[str, str], torch.Tensor] = {}
        budget = self.options.cache_bytes
        for parent, output_choice in (("A", 0), ("B", 1)):
            genotype = (0,) * (self.supernet.genotype_length - 1) + (output_choice,)
            gm = prune_graph(self.supernet, genotype, copy_weights=False)
            chosen = []
            for node in gm.graph.nodes:
                if not has_node_info(node):
                    continue
                info = node_info(node)
                is_output_feed = any(user.op == "output" for user in node.users)
                if ((parent, info.name) in wanted or is_output_feed) and info.shape is not None:
                    size = samples * math.prod(info.shape[1:]) * 4
                    if size <= budget:
                        budget -= size
                        chosen.append(node)
            cache.update(self._record(gm, parent, chosen))
        self._cache = cache
        logger.info("cached %d parent activations (%.1f MiB) in %.2f s", len(cache),
                    sum(t.numel() * t.element_size() for t in cache.values()) / 2**20,
                    time.perf_counter() - started)

    def _record(self, gm: torch.fx.GraphModule, parent: str, chosen: list[torch.fx.Node]) -> dict:
        values: dict[torch.fx.Node, list[torch.Tensor]] = {node: [] for node in chosen}
        chosen_set = set(chosen)

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node):
                result = super().run_node(node)
                if node in chosen_set:
                    values[node].append(result.detach().cpu())
                return result

        recorder = Recorder(gm)
        with torch.no_grad():
            for _, inputs, _ in _batches(self.dataset, self.options.batch_size):
                recorder.run(inputs.to(self.options.device))
        return {(parent, node_info(node).name): torch.cat(parts) for node, parts in values.items()}

    # -- evaluation ------------------------------------------------------------------

    def evaluate(self, genotype: Any) -> dict:
        """Return accuracy (or pixel accuracy and mean IoU), loss, ECE, MACs, parameters.

        Raises:
            InvalidGenotypeError: the genotype does not fit the supernetwork.
            EvaluationError: the subnetwork produced non-finite outputs or failed to run.
        """
        genotype = parse_genotype(genotype, self.supernet.genotype_length)
        key = canonical_genotype(self.supernet, genotype)
        if key in self.memo:
            return dict(self.memo[key], memoized=True)

        started = time.perf_counter()
        gm = prune_graph(self.supernet, key, copy_weights=False)
        try:
            if self.options.backend == "onnxruntime":
                metrics = self._evaluate_onnx(gm)
            else:
                metrics = self._evaluate_cached(gm)
        except EvaluationError:
            raise
        except Exception as error:  # noqa: BLE001 - reported to the search as a failed evaluation
            raise EvaluationError(f"evaluating genotype {_text(key)} failed: {type(error).__name__}: {error}") from error

        macs = sum(node_info(n).macs for n in gm.graph.nodes if has_node_info(n))
        params = sum(node_info(n).params for n in gm.graph.nodes if has_node_info(n))
        result = {**metrics, "macs": int(macs), "params": int(params),
                  "eval_seconds": round(time.perf_counter() - started, 4)}
        if self.task == "segmentation":
            result["accuracy"] = result["mean_iou"]
        self.memo[key] = result
        self.evaluations += 1
        return dict(result, memoized=False)

    def _evaluate_cached(self, gm: torch.fx.GraphModule) -> dict:
        if self._cache is None:
            self._fill_cache()
        cached_nodes, needed = self._plan(gm)
        runner = _CachedRunner(gm, {}, needed)
        accumulator = MetricAccumulator(self.task, self.num_classes)
        with torch.no_grad():
            for start, inputs, targets in _batches(self.dataset, self.options.batch_size):
                stop = start + len(inputs)
                runner.cached = {node: self._cache[key][start:stop].to(self.options.device)
                                 for node, key in cached_nodes.items()}
                logits = runner.run(inputs.to(self.options.device))
                accumulator.update(logits.float().cpu(), targets)
        return accumulator.result()

    def _plan(self, gm: torch.fx.GraphModule) -> tuple[dict[torch.fx.Node, tuple[str, str]], set[torch.fx.Node]]:
        """Return the subnetwork's nodes read from the cache and the nodes to compute.

        A node is *pure* when its origin is a parent and all its inputs are pure (the
        input placeholder is pure): its value then equals that parent's node value. Walking
        back from the output, a pure node found in the cache stops the walk.
        """
        pure: dict[torch.fx.Node, str | None] = {}
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                pure[node] = "input"
                continue
            origin = node_info(node).origin if has_node_info(node) else None
            inputs = node.all_input_nodes
            same = all(pure.get(n) in ("input", origin) for n in inputs)
            pure[node] = origin if origin in ("A", "B") and same else None

        cached: dict[torch.fx.Node, tuple[str, str]] = {}
        needed: set[torch.fx.Node] = set()
        output = next(node for node in reversed(gm.graph.nodes) if node.op == "output")
        stack = list(output.all_input_nodes)
        while stack:
            node = stack.pop()
            if node in needed or node in cached:
                continue
            key = (pure[node], node_info(node).name) if pure[node] in ("A", "B") else None
            if key is not None and key in self._cache:
                cached[node] = key
                continue
            needed.add(node)
            stack.extend(node.all_input_nodes)
        return cached, needed

    def _evaluate_onnx(self, gm: torch.fx.GraphModule) -> dict:
        from stitchc.runtime.emit import emit_model

        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "subnetwork.onnx"
            emit_model(copy_module(gm), path, self.supernet.input_shape, verify=False)
            run, _ = onnx_runner(path, self.options.device)
        return evaluate_module(run, self.dataset, self.task, self.num_classes, self.options.batch_size)


def onnx_runner(path: Path, device: str = "cpu") -> tuple[Callable[[torch.Tensor], torch.Tensor], list]:
    """Open an onnxruntime session on ``path``; return a batch -> logits function and the input shape.

    The CUDA execution provider comes first when ``device`` is a CUDA device.
    """
    import numpy as np
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(path), providers=providers)
    model_input = session.get_inputs()[0]

    def run(inputs: torch.Tensor) -> torch.Tensor:
        (logits, *_) = session.run(None, {model_input.name: inputs.cpu().numpy().astype(np.float32)})
        return torch.from_numpy(logits)

    return run, list(model_input.shape)


def copy_module(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Return a deep copy of ``gm`` so exporting it cannot touch shared weights."""
    import copy

    return copy.deepcopy(gm)


def _text(genotype: tuple[int, ...]) -> str:
    return "".join(str(value) for value in genotype)


class SupernetProblem:
    """The search :class:`~stitchc.runtime.search.Problem` of one supernetwork file and data split.

    Loading the supernetwork happens at construction (active positions need its graph);
    the data and the activation cache are loaded on the first :meth:`evaluate`.
    """

    def __init__(self, factory: "SupernetProblemFactory"):
        from stitchc.passes.supernet_file import load_supernet

        self.factory = factory
        self.supernet = load_supernet(factory.supernet_path)
        self.genotype_length = self.supernet.genotype_length
        self.alphabet_sizes = (2,) * (self.genotype_length - 1) + (3,)
        self.identity = factory.identity()
        self._evaluator: SubnetEvaluator | None = None

    @property
    def evaluator(self) -> SubnetEvaluator:
        """The evaluator, built with its data on first use."""
        if self._evaluator is None:
            splits = self.factory.load_splits(self.supernet.input_shape)
            dataset = splits.val if self.factory.eval_options.split == "val" else splits.test
            self._evaluator = SubnetEvaluator(self.supernet, dataset, splits.task, splits.num_classes,
                                              self.factory.eval_options)
        return self._evaluator

    def active_positions(self, genotype) -> frozenset[int]:
        return active_positions(self.supernet, genotype)

    def evaluate(self, genotype) -> dict:
        result = self.evaluator.evaluate(genotype)
        result.pop("memoized", None)
        return result

    def reference_points(self) -> dict[str, dict]:
        references = {}
        for name, output in PARENT_GENOTYPES.items():
            genotype = (0,) * (self.genotype_length - 1) + (output,)
            references[name] = self.evaluate(genotype)
        return references


@dataclasses.dataclass(frozen=True)
class SupernetProblemFactory:
    """A picklable recipe for :class:`SupernetProblem`: what each search worker builds.

    Attributes:
        supernet_path: The supernetwork file written by ``stitchc build`` / ``stitchc train``.
        data: A data source spec (``digits``, ``mnist:DIR``, ``imagefolder:DIR``, ``npz:FILE``).
        data_options: Split sizes and seed; the same options give the same splits.
        eval_options: Device, backend, batch size, cache budget and split.
    """

    supernet_path: str
    data: str = "digits"
    data_options: DataOptions = DataOptions()
    eval_options: EvalOptions = EvalOptions()

    def __call__(self) -> SupernetProblem:
        return SupernetProblem(self)

    def load_splits(self, input_shape: tuple[int, ...]) -> DataSplits:
        """Load the data splits for models captured at ``input_shape``."""
        return load_data(self.data, tuple(input_shape), self.data_options)

    def identity(self) -> str:
        """Return a hash of the supernetwork file, the data spec, its options and the split."""
        digest = hashlib.sha256()
        with open(self.supernet_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(repr((self.data, dataclasses.asdict(self.data_options), self.eval_options.split)).encode())
        return digest.hexdigest()[:16]


def evaluate_offspring(supernet_path: str, genotype: Any, data: str, data_options: DataOptions = DataOptions(),
                       eval_options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate one offspring of a supernetwork file on a data split; return its metrics and costs."""
    problem = SupernetProblemFactory(str(supernet_path), data, data_options, eval_options)()
    genotype = parse_genotype(genotype, problem.genotype_length)
    result = problem.evaluate(genotype)
    result["active_positions"] = len(problem.active_positions(genotype))
    return result


def evaluate_model_file(source: str, data: str, data_options: DataOptions = DataOptions(),
                        eval_options: EvalOptions = EvalOptions(), *, input_shape: Any = None,
                        trust_pickle: bool = False) -> dict:
    """Evaluate an ONNX file or a model source on a data split; return its metrics and costs.

    An ``.onnx`` file runs in onnxruntime and is counted from its own graph; a model
    source is captured (which also counts its MACs) and run with PyTorch, or exported
    and run with onnxruntime when ``eval_options.backend`` is ``"onnxruntime"``.

    Raises:
        InvalidArgumentError: a model source comes without an input shape.
    """
    from stitchc.capture import parse_input_shape
    from stitchc.ir import total_macs, total_params
    from stitchc.sources import capture_source

    if source.endswith(".onnx"):
        return _evaluate_onnx_file(Path(source), data, data_options, eval_options)
    if input_shape is None:
        raise InvalidArgumentError(f"evaluating {source!r} needs its input shape; pass --input-shape 1x3x224x224")
    shape = parse_input_shape(input_shape)
    captured = capture_source(source, shape, trust_pickle=trust_pickle).gm
    splits = load_data(data, shape, data_options)
    dataset = splits.val if eval_options.split == "val" else splits.test
    if eval_options.backend == "onnxruntime":
        with tempfile.TemporaryDirectory() as directory:
            from stitchc.runtime.emit import emit_model

            path = Path(directory) / "model.onnx"
            emit_model(captured, path, shape, verify=False)
            return _evaluate_onnx_file(path, data, data_options, eval_options)
    captured = captured.to(eval_options.device)
    metrics = evaluate_module(captured, dataset, splits.task, splits.num_classes, eval_options.batch_size,
                              eval_options.device)
    return {**metrics, "macs": int(total_macs(captured)), "params": int(total_params(captured))}


def _evaluate_onnx_file(path: Path, data: str, data_options: DataOptions, eval_options: EvalOptions) -> dict:
    from stitchc.passes.onnx_costs import count_onnx

    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} not found")
    run, shape = onnx_runner(path, eval_options.device)
    if not all(isinstance(size, int) for size in shape[1:]):
        raise InvalidArgumentError(f"{str(path)!r} has input dimensions {shape}; only the batch axis may be dynamic")
    splits = load_data(data, (1, *shape[1:]), data_options)
    dataset = splits.val if eval_options.split == "val" else splits.test
    metrics = evaluate_module(run, dataset, splits.task, splits.num_classes, eval_options.batch_size)
    costs = count_onnx(path)
    return {**metrics, "macs": int(costs.macs), "params": int(costs.params)}
