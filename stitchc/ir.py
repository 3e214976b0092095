"""The metadata record that stitchc attaches to every node of a captured graph.

A captured :class:`torch.fx.GraphModule` carries one :class:`NodeInfo` per node under
``node.meta[META_KEY]``. Passes read it and passes that rebuild nodes copy it. The
record is a frozen dataclass of plain values, so it survives ``copy.deepcopy``,
pickling and a trip to another process, which private attributes on a ``Node`` would not.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import torch.fx

__all__ = [
    "META_KEY",
    "NodeInfo",
    "node_info",
    "has_node_info",
    "layer_nodes",
    "total_macs",
    "total_params",
]

#: Key under which every captured node stores its :class:`NodeInfo`.
META_KEY = "stitchc"


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """Shape, cost and identity of one fx node.

    Attributes:
        name: Stable name: the dotted module path for module calls (``layer1.0.conv1``),
            torchvision-style ``path.op`` names for tensor ops (``layer1.0.add``).
        kind: One of ``"input"``, ``"output"``, ``"module"`` (a leaf-module call),
            ``"function"`` (a ``call_function`` node), ``"method"`` (a ``call_method``
            node) or ``"attribute"`` (a ``get_attr`` node).
        target: Readable form of the node's target: the module's class name, the
            function's qualified name or the method name.
        shape: Output shape when the node outputs one tensor, else ``None``.
        dtype: Output dtype as a string (``"torch.float32"``), else ``None``.
        macs: Multiply-accumulate operations of this node for the captured input
            shape (one MAC is one multiply followed by one add).
        params: Parameters owned by this node (a leaf module's own parameters,
            counted once even when the module is called twice).
        is_layer: True when the node may take part in a match: a module call or a
            tensor op whose output is a single tensor.
        origin: Which network the node comes from once two graphs are joined:
            ``"A"``, ``"B"``, ``"stitch:K"``, ``"switch"``; ``None`` in a single capture.
    """

    name: str
    kind: str
    target: str
    shape: tuple[int, ...] | None
    dtype: str | None
    macs: int
    params: int
    is_layer: bool
    origin: str | None = None

    def replace(self, **changes) -> "NodeInfo":
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """Return the record as a JSON-ready dict (shape as a list)."""
        record = dataclasses.asdict(self)
        record["shape"] = list(self.shape) if self.shape is not None else None
        return record


def has_node_info(node: torch.fx.Node) -> bool:
    """Return whether ``node`` carries a stitchc metadata record."""
    return isinstance(node.meta.get(META_KEY), NodeInfo)


def node_info(node: torch.fx.Node) -> NodeInfo:
    """Return the stitchc metadata record of ``node``.

    Raises:
        KeyError: ``node`` was not produced by :func:`stitchc.capture` or a stitchc pass.
    """
    info = node.meta.get(META_KEY)
    if not isinstance(info, NodeInfo):
        raise KeyError(
            f"node {node.name!r} has no stitchc metadata; capture the module with "
            "stitchc.capture() before running stitchc passes on it"
        )
    return info


def layer_nodes(gm: torch.fx.GraphModule) -> Iterator[torch.fx.Node]:
    """Yield the layer nodes of a captured graph in topological order."""
    for node in gm.graph.nodes:
        if has_node_info(node) and node_info(node).is_layer:
            yield node


def total_macs(gm: torch.fx.GraphModule) -> int:
    """Return the sum of the MACs of every node of a captured graph."""
    return sum(node_info(node).macs for node in gm.graph.nodes if has_node_info(node))


def total_params(gm: torch.fx.GraphModule) -> int:
    """Return the parameters of a captured graph, counting shared modules once."""
    return sum(node_info(node).params for node in gm.graph.nodes if has_node_info(node))
