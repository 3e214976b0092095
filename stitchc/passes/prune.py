"""Prune pass: turn a genotype of a supernetwork into a plain, standalone GraphModule.

The pass walks back from the output switch following only the chosen input of each
switch (stitchc's own reachability, not ``Graph.eliminate_dead_code``, whose rules
for which ops are pure change between torch versions), copies the reached nodes in
graph order, replaces each switch by its chosen input and the output switch by the
chosen parent output or the ensemble ops, and keeps only the modules and attributes
that the kept nodes use.
"""

from __future__ import annotations

import copy
import logging
import operator
from typing import Any

import torch
import torch.fx

from stitchc.errors import StitchcError
from stitchc.ir import META_KEY, NodeInfo, node_info
from stitchc.passes._switch import OutputSwitch, reached_nodes, switch_position
from stitchc.passes.genotype import parse_genotype

__all__ = ["prune_to_genotype", "prune_graph", "provenance_of", "check_pruned"]

logger = logging.getLogger(__name__)


def prune_to_genotype(supernet: Any, genotype: Any) -> torch.fx.GraphModule:
    """Return the subnetwork that ``genotype`` selects, as a standalone GraphModule.

    The result holds its own copies of the weights it uses, so training or changing it
    leaves the supernetwork untouched. Every node carries a :class:`~stitchc.ir.NodeInfo`
    whose ``origin`` is ``"A"``, ``"B"`` or ``"stitch:K"`` and whose ``name`` is the
    node's stable name inside that parent (``"stitches.K"`` for a stitch); the ops of an
    ensemble output have origin ``"switch"``. Each module's parameters are counted on
    its first call in the result. ``gm.meta["stitchc_provenance"]`` maps node names
    (under ``"nodes"``) and ``state_dict`` keys (under ``"parameters"``) to origins.

    Raises:
        InvalidGenotypeError: the genotype does not fit the supernetwork.
    """
    return prune_graph(supernet, genotype, copy_weights=True)


def prune_graph(supernet: Any, genotype: Any, *, copy_weights: bool) -> torch.fx.GraphModule:
    """Prune as :func:`prune_to_genotype` does; with ``copy_weights=False`` share the weights.

    The shared form is what :meth:`Supernet.forward` runs: cheap to build, but a change
    to its parameters changes the supernetwork.
    """
    genotype = parse_genotype(genotype, supernet.genotype_length)
    source = supernet.gm
    reached = set(reached_nodes(source, genotype))

    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in source.graph.nodes:
        if node not in reached:
            continue
        position = switch_position(source, node)
        if position is None:
            env[node] = graph.node_copy(node, lambda n: env[n])
            env[node].meta = dict(node.meta)
        elif isinstance(source.get_submodule(node.target), OutputSwitch):
            env[node] = _resolve_output_switch(graph, source, node, genotype[position], env)
        else:
            env[node] = env[node.args[genotype[position]]]

    _recount_parameters(graph, source)
    gm = torch.fx.GraphModule(source, graph, class_name="Subnetwork")
    if copy_weights:
        gm = copy.deepcopy(gm)
    gm.meta["stitchc_input_shape"] = tuple(supernet.input_shape)
    gm.meta["stitchc_genotype"] = genotype
    gm.meta["stitchc_provenance"] = provenance_of(gm)
    check_pruned(gm)
    gm.eval()
    return gm


def _resolve_output_switch(graph: torch.fx.Graph, source: torch.fx.GraphModule, node: torch.fx.Node,
                           choice: int, env: dict) -> torch.fx.Node:
    if choice in (0, 1):
        return env[node.args[choice]]
    output_a, output_b = env[node.args[0]], env[node.args[1]]
    info = node_info(node)
    ensemble = source.get_submodule(node.target).ensemble

    def record(new: torch.fx.Node, suffix: str, shape=info.shape) -> torch.fx.Node:
        new.meta[META_KEY] = NodeInfo(
            name=f"{info.name}.{suffix}", kind="function", target=suffix, shape=shape, dtype=info.dtype,
            macs=0, params=0, is_layer=False, origin="switch",
        )
        return new

    # These ops compute exactly what OutputSwitch's ensemble computes, as plain torch
    # ops, so the emitted module needs no stitchc import.
    if ensemble == "probabilities":
        output_a = record(graph.call_function(torch.softmax, (output_a,), {"dim": -1}), "softmax")
        output_b = record(graph.call_function(torch.softmax, (output_b,), {"dim": -1}), "softmax_1")
    total = record(graph.call_function(operator.add, (output_a, output_b)), "add")
    mean = record(graph.call_function(operator.truediv, (total, 2)), "truediv")
    if ensemble == "probabilities":
        mean = record(graph.call_function(torch.log, (mean,)), "log")
    return mean


def _recount_parameters(graph: torch.fx.Graph, source: torch.fx.GraphModule) -> None:
    """Count each module's parameters on its first call in the pruned graph.

    In the supernetwork, a module called twice counts its parameters on the first call,
    which the pruned graph may have dropped.
    """
    seen: set[str] = set()
    for node in graph.nodes:
        info = node.meta.get(META_KEY)
        if not isinstance(info, NodeInfo):
            continue
        params = 0
        if node.op == "call_module" and node.target not in seen:
            seen.add(node.target)
            params = sum(p.numel() for p in source.get_submodule(node.target).parameters())
        elif node.op == "get_attr" and node.target not in seen:
            seen.add(node.target)
            value = _get_attribute(source, node.target)
            params = value.numel() if isinstance(value, torch.nn.Parameter) else 0
        if node.op == "output":
            info = info.replace(origin=_output_origin(node))
        node.meta[META_KEY] = info.replace(params=params)


def _output_origin(node: torch.fx.Node) -> str:
    value = node.args[0]
    if isinstance(value, torch.fx.Node):
        return node_info(value).origin
    return "switch"


def _get_attribute(module: torch.nn.Module, target: str) -> Any:
    *path, name = target.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    return getattr(owner, name)


def provenance_of(gm: torch.fx.GraphModule) -> dict[str, dict[str, str]]:
    """Return ``{"nodes": {fx node name: origin}, "parameters": {state_dict key: origin}}``.

    A ``state_dict`` key takes the origin of the node that calls its module or reads it.
    """
    nodes = {}
    parameters = {}
    owners: dict[str, str] = {}
    for node in gm.graph.nodes:
        origin = node_info(node).origin
        nodes[node.name] = origin
        if node.op in ("call_module", "get_attr"):
            owners[node.target] = origin
    for key in gm.state_dict():
        parameters[key] = _owner_origin(key, owners)
    return {"nodes": nodes, "parameters": parameters}


def _owner_origin(key: str, owners: dict[str, str]) -> str:
    # Match whole dotted components, so "a.layer1" never claims "a.layer10.conv.weight".
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in owners:
            return owners[prefix]
    raise StitchcError(f"state_dict key {key!r} belongs to no node of the pruned graph; this is a stitchc bug")


def check_pruned(gm: torch.fx.GraphModule) -> None:
    """Check that a pruned graph has no switches and no unused modules or parameters.

    Raises:
        StitchcError: a switch remains, a node has no metadata, or a ``state_dict`` key
            belongs to no module or attribute that the graph uses.
    """
    gm.graph.lint()
    for node in gm.graph.nodes:
        info = node.meta.get(META_KEY)
        if not isinstance(info, NodeInfo) or info.origin is None:
            raise StitchcError(f"node {node.name!r} of the pruned graph has no origin; this is a stitchc bug")
        if info.origin == "switch" and node.op == "call_module":
            raise StitchcError(f"switch {node.target!r} survived pruning; this is a stitchc bug")
    provenance_of(gm)
