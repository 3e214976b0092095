"""Build pass: join two captured parents and a matching into one supernetwork.

For each matched pair (a, b), :func:`insert_stitches` adds a stitch b→a that reads
b's raw output and a switch s_a whose input 0 is a's output and input 1 that stitch.
Every consumer of a then reads s_a. The mirror stitch a→b and switch s_b follow. The
output switch picks parent A's output, parent B's output or their ensemble.

Genotype layout: ``[a_0, b_0, a_1, b_1, ..., out]`` with the matches in A's
topological order, so position ``2 * i`` is the switch of A's layer in match i,
``2 * i + 1`` the switch of B's layer and ``2 * m`` the output switch. Stitch K
(origin ``"stitch:K"``, module ``stitches.K``) feeds the switch at position K.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import logging
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import torch
import torch.fx
from torch import nn

from stitchc.errors import InvalidArgumentError, MatchingError, StitchcError
from stitchc.ir import META_KEY, NodeInfo, has_node_info, node_info
from stitchc.passes._switch import OUTPUT_SWITCH, OutputSwitch, Switch, switch_position
from stitchc.passes.candidates import get_stitch_kind

__all__ = [
    "BuildOptions",
    "Match",
    "Supernet",
    "insert_stitches",
    "check_supernet",
]

logger = logging.getLogger(__name__)

# Pruned modules kept per supernetwork for forward(); a search evaluates each genotype
# once in a row, so a few entries suffice.
_FORWARD_CACHE_SIZE = 8


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Options of :func:`insert_stitches`.

    Attributes:
        ensemble: What the output switch's choice 2 computes: ``"logits"`` (the mean
            of both parents' outputs) or ``"probabilities"`` (the log of the mean of
            both softmax distributions).
        seed: Seed of the stitches' initial weights.
    """

    ensemble: str = "logits"
    seed: int = 0

    def __post_init__(self):
        if self.ensemble not in ("logits", "probabilities"):
            raise InvalidArgumentError(
                f"invalid ensemble {self.ensemble!r}; use 'logits' or 'probabilities'"
            )


@dataclasses.dataclass(frozen=True)
class Match:
    """One matched pair in genotype order: A's node, B's node and the stitch kind."""

    a: str
    b: str
    kind: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]

    def to_json(self) -> dict:
        """Return the pair as a JSON-ready dict."""
        return {"a": self.a, "b": self.b, "kind": self.kind,
                "shape_a": list(self.shape_a), "shape_b": list(self.shape_b)}


class Supernet(nn.Module):
    """Two frozen parents, their stitches and switches, run under a current genotype.

    Attributes:
        gm: The joined GraphModule. Parent A's modules live under ``a.``, parent B's
            under ``b.``, stitches under ``stitches.K`` and switches under ``switches``.
            Running it computes every node, with each switch's current choice.
        matches: The matched pairs in genotype order.
        input_shape: The example input shape both parents were captured at.
        sources: The parents' model source strings, or None where unknown.
        options: The build options.
    """

    def __init__(self, gm: torch.fx.GraphModule, matches: Sequence[Match], input_shape: tuple[int, ...],
                 sources: tuple[str | None, str | None], options: BuildOptions):
        super().__init__()
        self.gm = gm
        self.matches = tuple(matches)
        self.input_shape = tuple(input_shape)
        self.sources = tuple(sources)
        self.options = options
        self._genotype = (0,) * self.genotype_length
        # Plain dict, so the cached modules (which share gm's parameters) are not
        # registered as submodules and never appear in state_dict().
        self._forward_cache: OrderedDict[tuple[int, ...], torch.fx.GraphModule] = OrderedDict()
        for parameter in self.parent_parameters():
            parameter.requires_grad_(False)
        self.train(False)

    @property
    def genotype_length(self) -> int:
        """Number of genotype positions: ``2 * len(matches) + 1``."""
        return 2 * len(self.matches) + 1

    @property
    def genotype(self) -> tuple[int, ...]:
        """The current genotype."""
        return self._genotype

    def set_genotype(self, genotype: Any) -> None:
        """Set every switch from a genotype string (``"0101...2"``) or integer sequence.

        Raises:
            InvalidGenotypeError: wrong length or a value outside a position's alphabet.
        """
        from stitchc.passes.genotype import parse_genotype

        parsed = parse_genotype(genotype, self.genotype_length)
        for _, module in self.switch_modules():
            module.choice = parsed[module.position]
        self._genotype = parsed

    def switch_modules(self) -> list[tuple[str, nn.Module]]:
        """Return ``(qualified name, module)`` of every switch, the output switch last."""
        return [(f"switches.{name}", module) for name, module in self.gm.switches.named_children()]

    def stitches(self) -> dict[str, nn.Module]:
        """Return every stitch keyed by its origin label ``"stitch:K"``, in position order."""
        return {f"stitch:{name}": module for name, module in self.gm.stitches.named_children()}

    def parent_parameters(self) -> list[nn.Parameter]:
        """Return the parameters of both parents (never trained)."""
        parameters = []
        for prefix in ("a", "b"):
            if hasattr(self.gm, prefix):
                parameters.extend(getattr(self.gm, prefix).parameters())
        return parameters

    def train(self, mode: bool = True) -> "Supernet":
        """Set train mode on the stitches only; both parents stay in eval mode."""
        super().train(mode)
        for prefix in ("a", "b"):
            if hasattr(self.gm, prefix):
                getattr(self.gm, prefix).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the subnetwork of the current genotype (only the nodes it reaches)."""
        module = self._forward_module()
        return module(x)

    def _forward_module(self) -> torch.fx.GraphModule:
        from stitchc.passes.genotype import canonical_genotype
        from stitchc.passes.prune import prune_graph

        key = canonical_genotype(self, self._genotype)
        module = self._forward_cache.get(key)
        if module is None:
            module = prune_graph(self, key, copy_weights=False)
            self._forward_cache[key] = module
            while len(self._forward_cache) > _FORWARD_CACHE_SIZE:
                self._forward_cache.popitem(last=False)
        else:
            self._forward_cache.move_to_end(key)
        return module


def insert_stitches(gm_a: torch.fx.GraphModule, gm_b: torch.fx.GraphModule, pairs: Iterable[Any],
                    options: BuildOptions = BuildOptions()) -> Supernet:
    """Join two captured parents and their matched pairs into a :class:`Supernet`.

    Neither input is changed: both parents are deep-copied into the supernetwork.

    Args:
        gm_a: Parent A, captured by :func:`stitchc.capture`.
        gm_b: Parent B, captured at the same input shape.
        pairs: Matched pairs, as candidates (with ``a``, ``b`` and ``kind``) or
            ``(a, b, kind)`` triples of stable node names. They must form an acyclic
            matching: each node at most once, and no pair that would close a cycle.
        options: Ensemble kind and stitch seed.

    Returns:
        The supernetwork, with genotype all zeros (parent A).

    Raises:
        InvalidArgumentError: the parents were captured at different input shapes or
            a pair names an unknown node, the input or the output.
        MatchingError: a node is matched twice, a stitch kind does not fit the shapes,
            or the pairs close a cycle.
    """
    input_shape = _common_input_shape(gm_a, gm_b)
    gm_a = copy.deepcopy(gm_a)
    gm_b = copy.deepcopy(gm_b)
    matches = _order_matches(gm_a, gm_b, pairs)

    builder = _GraphBuilder(gm_a, gm_b, options)
    gm = builder.build(matches)
    check_supernet(gm, len(matches))

    sources = (gm_a.meta.get("stitchc_source"), gm_b.meta.get("stitchc_source"))
    logger.info("built supernetwork: %d matches, genotype length %d, %d nodes",
                len(matches), 2 * len(matches) + 1, len(gm.graph.nodes))
    return Supernet(gm, matches, input_shape, sources, options)


def _common_input_shape(gm_a: torch.fx.GraphModule, gm_b: torch.fx.GraphModule) -> tuple[int, ...]:
    shape_a = gm_a.meta.get("stitchc_input_shape")
    shape_b = gm_b.meta.get("stitchc_input_shape")
    if shape_a is None or shape_b is None:
        raise InvalidArgumentError(
            "a parent has no recorded input shape; capture both parents with stitchc.capture() first"
        )
    if tuple(shape_a) != tuple(shape_b):
        raise InvalidArgumentError(
            f"parent A was captured at input shape {tuple(shape_a)} and parent B at {tuple(shape_b)}; "
            "capture both at the same --input-shape"
        )
    return tuple(shape_a)


def _pair_fields(pair: Any) -> tuple[str, str, str]:
    if hasattr(pair, "a") and hasattr(pair, "b") and hasattr(pair, "kind"):
        return pair.a, pair.b, pair.kind
    if isinstance(pair, dict):
        return pair["a"], pair["b"], pair["kind"]
    if isinstance(pair, (tuple, list)) and len(pair) == 3:
        return tuple(pair)
    raise InvalidArgumentError(f"invalid matched pair {pair!r}; pass a Candidate or an (a, b, kind) triple")


def _nodes_by_name(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    return {node_info(node).name: node for node in gm.graph.nodes}


def _order_matches(gm_a: torch.fx.GraphModule, gm_b: torch.fx.GraphModule, pairs: Iterable[Any]) -> list[Match]:
    """Validate the pairs and return them in A's topological order."""
    nodes_a = _nodes_by_name(gm_a)
    nodes_b = _nodes_by_name(gm_b)
    order_a = {name: index for index, name in enumerate(nodes_a)}
    used_a: set[str] = set()
    used_b: set[str] = set()
    matches = []
    for pair in pairs:
        a, b, kind = _pair_fields(pair)
        info_a = _matchable_info(nodes_a, a, "A")
        info_b = _matchable_info(nodes_b, b, "B")
        if a in used_a or b in used_b:
            raise MatchingError(
                f"pair ({a!r}, {b!r}) reuses a node that is already matched; each node may be matched once"
            )
        used_a.add(a)
        used_b.add(b)
        stitch_kind = get_stitch_kind(kind)
        if not (stitch_kind.applies(info_b.shape, info_a.shape) and stitch_kind.applies(info_a.shape, info_b.shape)):
            raise MatchingError(
                f"stitch kind {kind!r} cannot map between {a!r} {info_a.shape} and {b!r} {info_b.shape}; "
                "recompute the matching for these parents"
            )
        matches.append(Match(a, b, kind, tuple(info_a.shape), tuple(info_b.shape)))
    matches.sort(key=lambda match: order_a[match.a])
    return matches


def _matchable_info(nodes: dict[str, torch.fx.Node], name: str, parent: str) -> NodeInfo:
    node = nodes.get(name)
    if node is None:
        raise InvalidArgumentError(
            f"parent {parent} has no node named {name!r}; list the names with stitchc nodes MODEL"
        )
    info = node_info(node)
    if not info.is_layer or info.shape is None:
        raise InvalidArgumentError(
            f"node {name!r} of parent {parent} is not a layer node with one tensor output and cannot be matched"
        )
    if any(user.op == "output" for user in node.users):
        raise InvalidArgumentError(
            f"node {name!r} of parent {parent} feeds the output, which the output switch already covers; "
            "drop it from the matching"
        )
    return info


class _GraphBuilder:
    """Assembles the joined graph; used once per :func:`insert_stitches` call."""

    def __init__(self, gm_a: torch.fx.GraphModule, gm_b: torch.fx.GraphModule, options: BuildOptions):
        self.parents = {"A": gm_a, "B": gm_b}
        self.options = options
        self.graph = torch.fx.Graph()
        self.root = nn.Module()
        self.root.a = gm_a
        self.root.b = gm_b
        self.root.stitches = nn.ModuleDict()
        self.root.switches = nn.ModuleDict()
        # (origin, stable name) -> node of the joined graph.
        self.copied: dict[tuple[str, str], torch.fx.Node] = {}
        self.outputs: dict[str, Any] = {}

    def build(self, matches: Sequence[Match]) -> torch.fx.GraphModule:
        x = self.graph.placeholder("x")
        x.meta[META_KEY] = node_info(_placeholder(self.parents["A"])).replace(origin="A")
        self._copy_parent("A", x)
        self._copy_parent("B", x)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            for index, match in enumerate(matches):
                self._insert_pair(2 * index, "A", match.a, "B", match.b, match)
                self._insert_pair(2 * index + 1, "B", match.b, "A", match.a, match)

        switch = self._add_output_switch(2 * len(matches))
        output = self.graph.output(switch)
        output.meta[META_KEY] = node_info(switch).replace(name="output", kind="output", target="output")
        self._sort_topologically()
        gm = torch.fx.GraphModule(self.root, self.graph, class_name="Supernet")
        gm.meta["stitchc_input_shape"] = self.parents["A"].meta["stitchc_input_shape"]
        return gm

    def _copy_parent(self, origin: str, x: torch.fx.Node) -> None:
        gm = self.parents[origin]
        prefix = origin.lower()
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
                continue
            if node.op == "output":
                self.outputs[origin] = torch.fx.map_arg(node.args[0], lambda n: env[n])
                continue
            new = self.graph.node_copy(node, lambda n: env[n])
            if node.op in ("call_module", "get_attr"):
                new.target = f"{prefix}.{node.target}"
            new.meta = {META_KEY: node_info(node).replace(origin=origin)}
            env[node] = new
            self.copied[(origin, node_info(node).name)] = new

    def _insert_pair(self, position: int, target_origin: str, target: str, source_origin: str, source: str,
                     match: Match) -> None:
        """Insert the stitch source→target and the switch in front of the target's consumers."""
        target_node = self.copied[(target_origin, target)]
        source_node = self.copied[(source_origin, source)]
        target_info = node_info(target_node)
        source_info = node_info(source_node)
        # The mirror stitch, inserted just before, reads the raw output and keeps it.
        consumers = [user for user in target_node.users if node_info(user).origin == target_origin]

        stitch_kind = get_stitch_kind(match.kind)
        stitch = stitch_kind.make_module(source_info.shape, target_info.shape)
        self.root.stitches[str(position)] = stitch
        stitch_node = self.graph.call_module(f"stitches.{position}", (source_node,))
        stitch_node.meta[META_KEY] = NodeInfo(
            name=f"stitches.{position}", kind="module", target=type(stitch).__name__,
            shape=target_info.shape, dtype=target_info.dtype,
            macs=int(stitch_kind.macs(source_info.shape, target_info.shape)),
            params=sum(p.numel() for p in stitch.parameters()), is_layer=False,
            origin=f"stitch:{position}",
        )

        self.root.switches[str(position)] = Switch(position)
        switch_node = self.graph.call_module(f"switches.{position}", (target_node, stitch_node))
        switch_node.meta[META_KEY] = NodeInfo(
            name=f"switches.{position}", kind="module", target="Switch", shape=target_info.shape,
            dtype=target_info.dtype, macs=0, params=0, is_layer=False, origin="switch",
        )
        for consumer in consumers:
            consumer.replace_input_with(target_node, switch_node)
        self.outputs[target_origin] = torch.fx.map_arg(
            self.outputs[target_origin], lambda n: switch_node if n is target_node else n
        )

    def _add_output_switch(self, position: int) -> torch.fx.Node:
        output_a, output_b = self.outputs["A"], self.outputs["B"]
        if not isinstance(output_a, torch.fx.Node) or not isinstance(output_b, torch.fx.Node):
            raise InvalidArgumentError(
                "a parent returns several values; capture a model with a single tensor output "
                "(for a mapping, choose its entry with the source option output=KEY)"
            )
        info_a, info_b = node_info(output_a), node_info(output_b)
        if info_a.shape != info_b.shape:
            raise InvalidArgumentError(
                f"parent A outputs shape {info_a.shape} and parent B {info_b.shape}; both parents must "
                "solve the same task (for example the same num_classes)"
            )
        self.root.switches[OUTPUT_SWITCH] = OutputSwitch(position, self.options.ensemble)
        node = self.graph.call_module(f"switches.{OUTPUT_SWITCH}", (output_a, output_b))
        node.meta[META_KEY] = NodeInfo(
            name=f"switches.{OUTPUT_SWITCH}", kind="module", target="OutputSwitch", shape=info_a.shape,
            dtype=info_a.dtype, macs=0, params=0, is_layer=False, origin="switch",
        )
        return node

    def _sort_topologically(self) -> None:
        """Reorder the nodes topologically, keeping creation order where the edges allow.

        Nodes were created parent A first, then parent B, then the stitches and
        switches, so a switch may sit after consumers rewired to it.
        """
        nodes = list(self.graph.nodes)
        index = {node: position for position, node in enumerate(nodes)}
        waiting = {node: len(set(node.all_input_nodes)) for node in nodes}
        ready = [index[node] for node in nodes if waiting[node] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            node = nodes[heapq.heappop(ready)]
            order.append(node)
            for user in node.users:
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(ready, index[user])
        if len(order) != len(nodes):
            stuck = sorted(
                (_describe(node) for node in nodes if waiting[node] > 0 and node.op != "output"),
            )[:6]
            raise MatchingError(
                f"the matched pairs close a cycle through {', '.join(stuck)}; use an acyclic matching "
                "from stitchc match"
            )
        output = next(node for node in nodes if node.op == "output")
        for node in order:
            if node is not output:
                output.prepend(node)


def _describe(node: torch.fx.Node) -> str:
    info = node.meta.get(META_KEY)
    if isinstance(info, NodeInfo):
        return f"{info.origin}:{info.name}"
    return node.name


def _placeholder(gm: torch.fx.GraphModule) -> torch.fx.Node:
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise InvalidArgumentError(
            f"a parent takes {len(placeholders)} inputs; stitchc joins networks with exactly one input tensor"
        )
    return placeholders[0]


def check_supernet(gm: torch.fx.GraphModule, num_matches: int | None = None) -> None:
    """Check the invariants of a joined graph and raise when one is broken.

    Checks ``graph.lint()`` (which includes topological order, so the graph is
    acyclic), a metadata record on every node, exactly two inputs for every switch,
    and the switch positions ``0 .. 2 * m`` each used once.

    Raises:
        StitchcError: an invariant is broken; the message names the node.
    """
    try:
        gm.graph.lint()
    except RuntimeError as error:
        raise StitchcError(f"the joined graph fails torch.fx's lint ({error}); this is a stitchc bug") from error
    positions = []
    for node in gm.graph.nodes:
        if not has_node_info(node):
            raise StitchcError(f"node {node.name!r} of the joined graph has no stitchc metadata; this is a stitchc bug")
        position = switch_position(gm, node)
        if position is None:
            continue
        positions.append(position)
        if len(node.args) != 2 or node.kwargs:
            raise StitchcError(
                f"switch {node.target!r} has {len(node.args) + len(node.kwargs)} inputs, expected 2; this is a stitchc bug"
            )
    expected = len(positions) if num_matches is None else 2 * num_matches + 1
    if sorted(positions) != list(range(expected)):
        raise StitchcError(
            f"the joined graph has switch positions {sorted(positions)[:8]}..., expected 0 to {expected - 1} "
            "each once; this is a stitchc bug"
        )
