"""Stitch kinds and the candidate pairs of layer nodes they allow.

A stitch kind decides from two output shapes whether a trainable layer can map one to
the other, builds that layer, and counts its multiply-accumulates (MACs). Kinds live in
a registry: :func:`register_stitch_kind` adds one (duplicates are rejected) and the
matcher never needs to change. The built-in kinds, tried in this order:

* ``linear``: 2-D outputs ``[batch, n]`` and ``[batch, m]``; an ``nn.Linear(n, m)``.
* ``conv1x1``: 4-D outputs ``[batch, n, h, w]`` and ``[batch, m, h, w]`` with the same
  h and w; an ``nn.Conv2d(n, m, 1)``.
* ``token_linear``: 3-D outputs ``[batch, t, d]`` and ``[batch, t, e]`` with the same
  token count t; an ``nn.Linear(d, e)`` over the last axis.

A pair of layer nodes (a in A, b in B) is a candidate when a kind applies in both
directions. The first such kind is recorded.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections import defaultdict

import networkx as nx
import torch.fx
from torch import nn

from stitchc.errors import InvalidArgumentError
from stitchc.ir import has_node_info, node_info

__all__ = [
    "StitchKind",
    "register_stitch_kind",
    "get_stitch_kind",
    "stitch_kinds",
    "CandidateOptions",
    "Candidate",
    "find_candidates",
    "layer_node_names",
    "to_digraph",
    "input_shape_of",
]

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]


class StitchKind(abc.ABC):
    """A kind of stitching layer, identified by ``name``.

    Shapes are full output shapes, batch first, as captured.
    """

    name: str = ""

    @abc.abstractmethod
    def applies(self, shape_src: Shape, shape_dst: Shape) -> bool:
        """Return whether this kind can map an output of ``shape_src`` to ``shape_dst``."""

    @abc.abstractmethod
    def make_module(self, shape_src: Shape, shape_dst: Shape) -> nn.Module:
        """Build the stitching layer (with bias) mapping ``shape_src`` features to ``shape_dst``."""

    @abc.abstractmethod
    def macs(self, shape_src: Shape, shape_dst: Shape) -> int:
        """Return the MACs of the stitch for the captured batch size (bias adds not counted)."""


_REGISTRY: dict[str, StitchKind] = {}


def register_stitch_kind(kind: StitchKind | type[StitchKind]) -> StitchKind | type[StitchKind]:
    """Add a stitch kind to the registry; usable as a class decorator.

    Raises:
        InvalidArgumentError: the kind has no name or a kind of that name exists.
    """
    instance = kind() if isinstance(kind, type) else kind
    if not instance.name:
        raise InvalidArgumentError(f"stitch kind {type(instance).__name__} has no name; set its name attribute")
    if instance.name in _REGISTRY:
        raise InvalidArgumentError(
            f"a stitch kind named {instance.name!r} is already registered; choose another name"
        )
    _REGISTRY[instance.name] = instance
    return kind


def get_stitch_kind(name: str) -> StitchKind:
    """Return the registered stitch kind called ``name``.

    Raises:
        InvalidArgumentError: no kind has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidArgumentError(
            f"stitch kind {name!r} is not registered; registered kinds: {', '.join(_REGISTRY)}"
        ) from None


def stitch_kinds() -> tuple[StitchKind, ...]:
    """Return the registered stitch kinds in registration order."""
    return tuple(_REGISTRY.values())


@register_stitch_kind
class _LinearKind(StitchKind):
    name = "linear"

    def applies(self, shape_src: Shape, shape_dst: Shape) -> bool:
        return len(shape_src) == 2 and len(shape_dst) == 2 and shape_src[0] == shape_dst[0]

    def make_module(self, shape_src: Shape, shape_dst: Shape) -> nn.Module:
        return nn.Linear(shape_src[1], shape_dst[1], bias=True)

    def macs(self, shape_src: Shape, shape_dst: Shape) -> int:
        return shape_src[0] * shape_src[1] * shape_dst[1]


@register_stitch_kind
class _Conv1x1Kind(StitchKind):
    name = "conv1x1"

    def applies(self, shape_src: Shape, shape_dst: Shape) -> bool:
        return (
            len(shape_src) == 4
            and len(shape_dst) == 4
            and shape_src[0] == shape_dst[0]
            and shape_src[2:] == shape_dst[2:]
        )

    def make_module(self, shape_src: Shape, shape_dst: Shape) -> nn.Module:
        return nn.Conv2d(shape_src[1], shape_dst[1], kernel_size=1, bias=True)

    def macs(self, shape_src: Shape, shape_dst: Shape) -> int:
        batch, c_in, h, w = shape_src
        return batch * h * w * c_in * shape_dst[1]


@register_stitch_kind
class _TokenLinearKind(StitchKind):
    name = "token_linear"

    def applies(self, shape_src: Shape, shape_dst: Shape) -> bool:
        return len(shape_src) == 3 and len(shape_dst) == 3 and shape_src[:2] == shape_dst[:2]

    def make_module(self, shape_src: Shape, shape_dst: Shape) -> nn.Module:
        # nn.Linear acts on the last axis, so [batch, t, d] maps to [batch, t, e].
        return nn.Linear(shape_src[2], shape_dst[2], bias=True)

    def macs(self, shape_src: Shape, shape_dst: Shape) -> int:
        batch, tokens, d_in = shape_src
        return batch * tokens * d_in * shape_dst[2]


_LAYER_CHOICES = ("all", "parameterized")


@dataclasses.dataclass(frozen=True)
class CandidateOptions:
    """Options of :func:`find_candidates`.

    Attributes:
        layers: ``"all"`` for every tensor-valued node, ``"parameterized"`` for calls of
            leaf modules that own parameters (shorter genotypes).
        kinds: Names of the stitch kinds to try, in order; None for every registered kind.
    """

    layers: str = "all"
    kinds: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.layers not in _LAYER_CHOICES:
            raise InvalidArgumentError(f"layers {self.layers!r} is unknown; use one of {', '.join(_LAYER_CHOICES)}")
        for name in self.kinds or ():
            get_stitch_kind(name)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A pair of layer nodes that a stitch kind connects in both directions.

    Attributes:
        a: Stable name of the node in A; ``b`` likewise in B.
        kind: Name of the stitch kind.
        shape_a: Output shape of ``a``; ``shape_b`` likewise.
    """

    a: str
    b: str
    kind: str
    shape_a: Shape
    shape_b: Shape


def input_shape_of(gm: torch.fx.GraphModule) -> Shape:
    """Return the input shape a captured graph was annotated with.

    Raises:
        InvalidArgumentError: the graph was not captured by stitchc.
    """
    shape = gm.meta.get("stitchc_input_shape")
    if shape is None:
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and has_node_info(n)]
        if not placeholders:
            raise InvalidArgumentError(
                "the graph module carries no stitchc metadata; capture it with stitchc.capture() first"
            )
        shape = node_info(placeholders[0]).shape
    return tuple(shape)


def _is_parameterized(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op != "call_module":
        return False
    module = gm.get_submodule(node.target)
    return any(True for _ in module.parameters())


def layer_node_names(gm: torch.fx.GraphModule, options: CandidateOptions | None = None) -> list[str]:
    """Return the names of the nodes that may be matched, in topological order.

    A node qualifies when its metadata marks it a layer with a floating-point tensor
    output, it is neither an input nor the output, and it does not feed the output
    (the output switch covers that node). ``layers="parameterized"`` keeps only calls
    of leaf modules that own parameters.
    """
    options = options or CandidateOptions()
    output_nodes = [n for n in gm.graph.nodes if n.op == "output"]
    feeding_output = {id(p) for n in output_nodes for p in n.all_input_nodes}
    names = []
    for node in gm.graph.nodes:
        if not has_node_info(node) or id(node) in feeding_output:
            continue
        info = node_info(node)
        if not info.is_layer or info.kind in ("input", "output") or info.shape is None:
            continue
        if info.dtype is None or not info.dtype.startswith(("torch.float", "torch.bfloat", "torch.half")):
            continue
        if options.layers == "parameterized" and not _is_parameterized(gm, node):
            continue
        names.append(info.name)
    return names


def _shapes_by_name(gm: torch.fx.GraphModule) -> dict[str, Shape]:
    return {node_info(n).name: node_info(n).shape for n in gm.graph.nodes if has_node_info(n)}


def find_candidates(
    gm_a: torch.fx.GraphModule, gm_b: torch.fx.GraphModule, options: CandidateOptions | None = None
) -> list[Candidate]:
    """List every pair of layer nodes (a in A, b in B) that some stitch kind connects.

    Pairs come in A's topological order, then B's. A kind must apply in both directions
    (b to a and a to b), because the supernetwork stitches both ways.

    Raises:
        InvalidArgumentError: the two graphs were captured at different input shapes, or
            a graph carries no stitchc metadata.
    """
    options = options or CandidateOptions()
    shape_a, shape_b = input_shape_of(gm_a), input_shape_of(gm_b)
    if shape_a != shape_b:
        raise InvalidArgumentError(
            f"model A was captured at input shape {_shape_text(shape_a)} and model B at "
            f"{_shape_text(shape_b)}; capture both at the same input shape"
        )
    kinds = stitch_kinds() if options.kinds is None else tuple(get_stitch_kind(k) for k in options.kinds)

    shapes_a, shapes_b = _shapes_by_name(gm_a), _shapes_by_name(gm_b)
    names_a = layer_node_names(gm_a, options)
    by_shape_b: dict[Shape, list[str]] = defaultdict(list)
    for name in layer_node_names(gm_b, options):
        by_shape_b[shapes_b[name]].append(name)

    # Kinds depend on shapes only, so each distinct pair of shapes is decided once.
    kind_of: dict[tuple[Shape, Shape], str | None] = {}
    candidates = []
    for a in names_a:
        sa = shapes_a[a]
        for sb, names in by_shape_b.items():
            if (sa, sb) not in kind_of:
                kind_of[(sa, sb)] = next(
                    (k.name for k in kinds if k.applies(sa, sb) and k.applies(sb, sa)), None
                )
            kind = kind_of[(sa, sb)]
            if kind is not None:
                candidates.extend(Candidate(a, b, kind, sa, sb) for b in names)

    order_a = {name: i for i, name in enumerate(names_a)}
    order_b = {name: i for i, name in enumerate(shapes_b)}
    candidates.sort(key=lambda c: (order_a[c.a], order_b[c.b]))
    logger.info(
        "%d candidates between %d layer nodes of A and %d of B",
        len(candidates), len(names_a), sum(map(len, by_shape_b.values())),
    )
    return candidates


def _shape_text(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def to_digraph(gm: torch.fx.GraphModule) -> nx.DiGraph:
    """Return the data-flow graph of a captured module, with stable names as nodes.

    Every fx node becomes a node (inputs, attributes and the output included), with an
    edge from each input node to its user.
    """
    graph = nx.DiGraph()
    names = {}
    for node in gm.graph.nodes:
        name = node_info(node).name if has_node_info(node) else node.name
        names[node] = name
        graph.add_node(name)
        for source in node.all_input_nodes:
            graph.add_edge(names[source], name)
    return graph
