"""Capture an ``nn.Module`` as a torch.fx GraphModule whose nodes carry shapes and costs.

The capture runs in four steps:

1. Trace with :class:`StitchTracer`, which keeps convolutions, linear and normalization
   layers, every module timm registers as untraceable and every module with forward
   hooks as single leaf nodes, and autowraps timm's untraceable functions. When tracing
   fails inside a submodule (``len()`` on a proxy, a Python branch on a shape), that
   submodule becomes a leaf and tracing is retried; the capture report lists it.
2. Rewrite in-place operations as out-of-place ones, so that the value observed at a
   node is never overwritten by a later node.
3. Run the graph once on a seeded example input, in eval mode, recording each node's
   output shape, dtype, MACs and parameters in a :class:`~stitchc.ir.NodeInfo`.
4. Compare the GraphModule's output with the original module's output on that input.
   A difference above the tolerance raises :class:`~stitchc.errors.ParityError`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import operator
import re
import time
from collections import Counter
from typing import Any, Iterable, Mapping

import torch
import torch.fx
from torch import nn

from stitchc import costs
from stitchc.errors import CaptureError, InvalidArgumentError, ParityError
from stitchc.ir import META_KEY, NodeInfo

__all__ = [
    "CaptureOptions",
    "CaptureReport",
    "CaptureResult",
    "StitchTracer",
    "capture",
    "parse_input_shape",
    "example_input",
]

logger = logging.getLogger(__name__)

# Module types kept whole besides torch.nn's own (which fx already keeps whole):
# these are the layers whose outputs are natural stitching points.
_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)

# In-place function targets and their out-of-place replacements. Methods ending in
# an underscore (``x.add_(y)``) are handled by name.
_INPLACE_FUNCTIONS: dict[Any, Any] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imatmul: operator.matmul,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    torch.relu_: torch.relu,
    torch.sigmoid_: torch.sigmoid,
    torch.tanh_: torch.tanh,
    torch.clamp_: torch.clamp,
}


def parse_input_shape(text: str | Iterable[int]) -> tuple[int, ...]:
    """Parse an input shape such as ``"1x3x224x224"`` into ``(1, 3, 224, 224)``.

    Raises:
        InvalidArgumentError: the text is not positive integers joined by ``x``.
    """
    if not isinstance(text, str):
        shape = tuple(int(size) for size in text)
    elif re.fullmatch(r"\s*\d+(\s*[x,]\s*\d+)*\s*", text):
        shape = tuple(int(size) for size in re.split(r"\s*[x,]\s*", text.strip()))
    else:
        raise InvalidArgumentError(
            f"invalid input shape {text!r}; write the sizes joined by 'x', e.g. 1x3x224x224"
        )
    if not shape or min(shape) < 1:
        raise InvalidArgumentError(f"invalid input shape {text!r}; every size must be a positive integer")
    return shape


def example_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Return the seeded standard-normal example input used for shapes and parity."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape, generator=generator)


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """Options of :func:`capture`.

    Attributes:
        leaf_modules: Qualified names of submodules to keep whole, besides the defaults.
        leaf_types: Module types to keep whole, besides the defaults.
        seed: Seed of the example input.
        atol: Absolute tolerance of the parity check, scaled by ``max(1, max|reference|)``.
        max_retries: How many untraceable submodules may be made leaves before giving up.
        output_key: For a module returning a mapping, the entry to keep as the single
            output (torchvision segmentation models return ``{"out": ...}``). A mapping
            with one entry is unwrapped without it.
        check_parity: Compare with the original module (switch off only for modules
            whose outputs are random in eval mode).
    """

    leaf_modules: tuple[str, ...] = ()
    leaf_types: tuple[type, ...] = ()
    seed: int = 0
    atol: float = 1e-5
    max_retries: int = 64
    output_key: str | None = None
    check_parity: bool = True


@dataclasses.dataclass(frozen=True)
class CaptureReport:
    """Record of one capture, for the CLI and for logs.

    Attributes:
        input_shape: The example input's shape.
        leafized: Submodules made leaves because tracing failed inside them, with the
            error that made each one a leaf.
        hooked: Submodules kept whole because they carry forward or forward-pre hooks.
        flop_counted: Leaf modules whose MACs came from FlopCounterMode (no formula).
        inplace_rewrites: How many in-place operations were made out-of-place.
        parity_max_abs_diff: Largest absolute difference from the original output.
        seconds: Wall-clock time of the whole capture.
    """

    input_shape: tuple[int, ...]
    leafized: tuple[tuple[str, str], ...]
    hooked: tuple[str, ...]
    flop_counted: tuple[str, ...]
    inplace_rewrites: int
    parity_max_abs_diff: float
    seconds: float

    @property
    def leaf_modules(self) -> list[str]:
        """Names of every submodule kept whole for a reason other than its type."""
        return [name for name, _ in self.leafized] + list(self.hooked)


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """A captured GraphModule and the report of its capture."""

    gm: torch.fx.GraphModule
    report: CaptureReport

    def summary(self) -> dict:
        """Return the JSON summary that ``stitchc capture --json`` prints."""
        infos = [node.meta[META_KEY] for node in self.gm.graph.nodes]
        layer_shapes = Counter(tuple(info.shape) for info in infos if info.is_layer)
        return {
            "nodes": len(infos),
            "nodes_by_kind": dict(Counter(info.kind for info in infos)),
            "layer_nodes": sum(info.is_layer for info in infos),
            "distinct_shapes": len(layer_shapes),
            "macs": sum(info.macs for info in infos),
            "params": sum(info.params for info in infos),
            "input_shape": list(self.report.input_shape),
            "parity_max_abs_diff": self.report.parity_max_abs_diff,
            "seconds": round(self.report.seconds, 3),
            "leaf_modules": self.report.leaf_modules,
            "flop_counted_modules": list(self.report.flop_counted),
            "inplace_rewrites": self.report.inplace_rewrites,
        }


class StitchTracer(torch.fx.Tracer):
    """An fx tracer that keeps stitching-relevant layers whole and records scopes.

    Besides torch.nn's own modules (kept whole by fx), it keeps normalization layers,
    every module type timm registers as untraceable, every module carrying hooks, and
    the extra names and types given. Each created node records the dotted path of the
    module whose ``forward`` created it, from which stable node names are derived.
    """

    def __init__(self, leaf_names: Iterable[str] = (), leaf_types: Iterable[type] = ()):
        notrace_modules, notrace_functions = _timm_notrace()
        super().__init__(autowrap_functions=tuple(notrace_functions))
        self.leaf_names = set(leaf_names)
        self.leaf_types = tuple(leaf_types) + tuple(notrace_modules) + _NORM_TYPES
        self.hooked: set[str] = set()
        # Path of the innermost non-leaf module whose forward raised during tracing.
        self.failed_path: str | None = None
        self.failed_error: BaseException | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        if module_qualified_name and (m._forward_hooks or m._forward_pre_hooks):
            self.hooked.add(module_qualified_name)
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            if self.failed_path is None:
                self.failed_path = self.path_of_module(m)
                self.failed_error = error
            raise

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["stitchc_scope"] = self.scope.module_path
        return node


def _timm_notrace() -> tuple[list[type], list[Any]]:
    """Return timm's registered untraceable module types and functions (empty without timm)."""
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:
        return [], []
    return list(get_notrace_modules()), list(get_notrace_functions())


def capture(module: nn.Module, input_shape: tuple[int, ...] | str,
            options: CaptureOptions = CaptureOptions()) -> CaptureResult:
    """Capture ``module`` as a GraphModule whose nodes carry :class:`~stitchc.ir.NodeInfo`.

    The module is deep-copied first, so the caller's module is never changed (in-place
    flags included). The result always runs in eval mode semantics for shapes and parity.

    Args:
        module: The network to capture; an already captured GraphModule works too.
        input_shape: Example input shape, batch first, e.g. ``(1, 3, 224, 224)`` or "1x3x224x224".
        options: Leaves to add, parity tolerance, seed; see :class:`CaptureOptions`.

    Returns:
        The GraphModule and a :class:`CaptureReport`.

    Raises:
        CaptureError: tracing still fails after making the failing submodules leaves.
        ParityError: the GraphModule's output differs from the module's by more than the tolerance.

    Example:
        >>> import torchvision
        >>> result = capture(torchvision.models.resnet18(num_classes=10), "1x3x32x32")
        >>> result.report.parity_max_abs_diff
        0.0
    """
    started = time.perf_counter()
    input_shape = parse_input_shape(input_shape)
    original = copy.deepcopy(module).eval()
    work = copy.deepcopy(module).eval()
    _disable_inplace_flags(work)

    if _is_stitchc_capture(work):
        # Re-tracing generated code would lose the module scopes behind the stable
        # names, so a stitchc capture is taken over as it is.
        gm, hooked, leafized = work, set(), []
    else:
        gm, tracer, leafized = _trace_with_retries(work, options)
        hooked = tracer.hooked
    inplace_rewrites = _make_out_of_place(gm)
    _select_output(gm, options.output_key)
    _name_nodes(gm)

    x = example_input(input_shape, options.seed)
    flop_counted = _annotate(gm, x)
    gm.graph.lint()
    gm.recompile()
    gm.eval()

    diff = _check_parity(original, gm, x, options) if options.check_parity else float("nan")
    report = CaptureReport(
        input_shape=input_shape,
        leafized=tuple(leafized),
        hooked=tuple(sorted(hooked)),
        flop_counted=tuple(flop_counted),
        inplace_rewrites=inplace_rewrites,
        parity_max_abs_diff=diff,
        seconds=time.perf_counter() - started,
    )
    gm.meta["stitchc_input_shape"] = input_shape
    logger.info("captured %s: %d nodes, parity max abs diff %.3g, %.2f s",
                type(module).__name__, len(gm.graph.nodes), diff, report.seconds)
    return CaptureResult(gm=gm, report=report)


def _is_stitchc_capture(module: nn.Module) -> bool:
    return isinstance(module, torch.fx.GraphModule) and all(
        "stitchc_name" in node.meta for node in module.graph.nodes
    )


def _disable_inplace_flags(module: nn.Module) -> None:
    # Modules such as ReLU(inplace=True) or timm's activations overwrite their input.
    for submodule in module.modules():
        if getattr(submodule, "inplace", False) is True:
            submodule.inplace = False


def _trace_with_retries(module: nn.Module, options: CaptureOptions):
    leaf_names = list(options.leaf_modules)
    leafized: list[tuple[str, str]] = []
    for _ in range(options.max_retries + 1):
        tracer = StitchTracer(leaf_names, options.leaf_types)
        try:
            graph = tracer.trace(module)
        except Exception as error:
            path = tracer.failed_path
            if not path or path in leaf_names:
                raise CaptureError(
                    f"tracing {type(module).__name__} failed at the top level ({type(error).__name__}: "
                    f"{error}); wrap the untraceable code in a submodule or pass it with leaf_modules"
                ) from error
            reason = f"{type(tracer.failed_error).__name__}: {tracer.failed_error}"
            logger.info("tracing failed inside %r (%s); keeping it as a leaf and retrying", path, reason)
            leafized.append((path, reason.splitlines()[0][:200]))
            leaf_names.append(path)
            continue
        name = type(module).__name__
        return torch.fx.GraphModule(tracer.root, graph, name), tracer, leafized
    raise CaptureError(
        f"tracing {type(module).__name__} still fails after making {options.max_retries} submodules "
        "leaves; raise CaptureOptions.max_retries or pass the untraceable blocks as leaf_modules"
    )


def _is_inplace(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True
    if node.op == "call_method":
        name = node.target
        return name.endswith("_") and not name.startswith("_") and hasattr(torch.Tensor, name[:-1])
    return False


def _make_out_of_place(gm: torch.fx.GraphModule) -> int:
    """Replace in-place ops by out-of-place ones; return how many were replaced.

    ``y = x.add_(1)`` mutates ``x``, so every later reader of ``x`` must read ``y``
    once the op no longer mutates: those uses are redirected to the new node.
    """
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    rewrites = 0
    for node in list(gm.graph.nodes):
        if not _is_inplace(node, gm):
            continue
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_method":
            node.target = node.target[:-1]
        if "inplace" in node.kwargs:
            node.kwargs = {**node.kwargs, "inplace": False}
        mutated = node.args[0] if node.args else None
        if isinstance(mutated, torch.fx.Node):
            for user in list(mutated.users):
                if user is not node and order[user] > order[node]:
                    user.replace_input_with(mutated, node)
        rewrites += 1
    gm.recompile()
    return rewrites


def _select_output(gm: torch.fx.GraphModule, output_key: str | None) -> None:
    """Reduce a mapping output to one tensor, as the stitching passes need."""
    output = next(node for node in reversed(gm.graph.nodes) if node.op == "output")
    value = output.args[0]
    if not isinstance(value, Mapping):
        if output_key is not None:
            raise InvalidArgumentError(
                f"output_key={output_key!r} was given but the module does not return a mapping"
            )
        return
    if output_key is None and len(value) == 1:
        output_key = next(iter(value))
    if output_key not in value:
        raise InvalidArgumentError(
            f"the module returns a mapping with keys {sorted(value)}; choose one with output_key "
            "(or the source option output=KEY)"
        )
    output.args = (value[output_key],)
    gm.graph.eliminate_dead_code()
    gm.meta["stitchc_output_key"] = output_key


_OP_NAME_CLEANUP = re.compile(r"[^0-9a-zA-Z_]+")


def _op_name(node: torch.fx.Node) -> str:
    if node.op == "call_method":
        return node.target
    if node.op == "get_attr":
        return node.target
    name = getattr(node.target, "__name__", str(node.target))
    return _OP_NAME_CLEANUP.sub("_", name).strip("_") or "op"


def _name_nodes(gm: torch.fx.GraphModule) -> None:
    """Give every node a stable name in ``node.meta["stitchc_name"]``.

    Module calls are named by their dotted module path, as torchvision names feature
    nodes (``layer1.0.conv1``); a module called twice gets ``:1``, ``:2`` suffixes.
    Tensor ops are named by the path of the module whose forward created them plus
    the op (``layer1.0.add``), with ``_1``, ``_2`` suffixes for repeats.
    """
    used: Counter[str] = Counter()
    for node in gm.graph.nodes:
        if "stitchc_name" in node.meta:
            used[node.meta["stitchc_name"]] += 1
            continue
        if node.op == "placeholder":
            base = node.target
        elif node.op == "output":
            base = "output"
        elif node.op == "call_module":
            base = node.target
        elif node.op == "get_attr":
            base = node.target
        else:
            scope = node.meta.get("stitchc_scope", "")
            base = f"{scope}.{_op_name(node)}" if scope else _op_name(node)
        separator = ":" if node.op == "call_module" else "_"
        name = base if used[base] == 0 else f"{base}{separator}{used[base]}"
        used[base] += 1
        node.meta["stitchc_name"] = name


class _Annotator(torch.fx.Interpreter):
    """Runs the graph once and records a NodeInfo for every node."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.counted_modules: set[str] = set()
        self.counted_attributes: set[str] = set()
        self.flop_counted: list[str] = []

    def run_node(self, node: torch.fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        output = getattr(self, node.op)(node.target, args, kwargs)
        macs, params = self._costs(node, args, kwargs, output)
        is_tensor = isinstance(output, torch.Tensor)
        node.meta[META_KEY] = NodeInfo(
            name=node.meta.get("stitchc_name", node.name),
            kind=_KINDS[node.op],
            target=_target_text(node, self.module),
            shape=tuple(output.shape) if is_tensor else None,
            dtype=str(output.dtype) if is_tensor else None,
            macs=int(macs),
            params=int(params),
            is_layer=is_tensor and node.op in ("call_module", "call_function", "call_method"),
        )
        return output

    def _costs(self, node, args, kwargs, output) -> tuple[int, int]:
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            macs = costs.module_macs(module, args, kwargs, output)
            if macs is None:
                macs = 0
                if any(True for _ in module.parameters()) or any(True for _ in module.children()):
                    macs = costs.count_with_flop_counter(module, args, kwargs)
                    self.flop_counted.append(node.target)
            params = 0
            if node.target not in self.counted_modules:
                self.counted_modules.add(node.target)
                params = sum(p.numel() for p in module.parameters())
            return macs, params
        if node.op in ("call_function", "call_method"):
            return costs.function_macs(node.target, args, kwargs, output), 0
        if node.op == "get_attr" and node.target not in self.counted_attributes:
            self.counted_attributes.add(node.target)
            value = output
            is_parameter = isinstance(value, nn.Parameter)
            return 0, value.numel() if is_parameter else 0
        return 0, 0


_KINDS = {
    "placeholder": "input",
    "output": "output",
    "call_module": "module",
    "call_function": "function",
    "call_method": "method",
    "get_attr": "attribute",
}


def _target_text(node: torch.fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    if node.op == "call_function":
        module = getattr(node.target, "__module__", None) or ""
        return f"{module}.{getattr(node.target, '__qualname__', node.target)}".lstrip(".")
    return str(node.target)


def _annotate(gm: torch.fx.GraphModule, x: torch.Tensor) -> list[str]:
    gm.eval()
    annotator = _Annotator(gm)
    with torch.no_grad():
        annotator.run(x)
    # Parameters of leaf modules that are also read by get_attr nodes would count
    # twice; fx traces parameters of non-leaf modules as get_attr, never both.
    return annotator.flop_counted


def _flatten_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for key in value for t in _flatten_tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten_tensors(item)]
    return []


def _check_parity(original: nn.Module, gm: torch.fx.GraphModule, x: torch.Tensor,
                  options: CaptureOptions) -> float:
    with torch.no_grad():
        expected = original(x.clone())
        actual = gm(x.clone())
    if isinstance(expected, Mapping) and gm.meta.get("stitchc_output_key") is not None:
        expected = expected[gm.meta["stitchc_output_key"]]
    expected_tensors = _flatten_tensors(expected)
    actual_tensors = _flatten_tensors(actual)
    if len(expected_tensors) != len(actual_tensors) or any(
        e.shape != a.shape for e, a in zip(expected_tensors, actual_tensors)
    ):
        raise ParityError(
            f"the captured graph of {type(original).__name__} returns tensors of shapes "
            f"{[tuple(t.shape) for t in actual_tensors]} where the module returns "
            f"{[tuple(t.shape) for t in expected_tensors]}; report this model as untraceable"
        )
    diff = max((float((e - a).abs().max()) for e, a in zip(expected_tensors, actual_tensors)), default=0.0)
    scale = max([1.0] + [float(e.abs().max()) for e in expected_tensors if e.numel()])
    if not diff <= options.atol * scale:
        raise ParityError(
            f"the captured graph of {type(original).__name__} differs from the module by "
            f"{diff:.3g} (max abs), above the tolerance {options.atol * scale:.3g}; a submodule "
            "probably behaves differently when traced: pass it in leaf_modules"
        )
    return diff
