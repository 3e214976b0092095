"""Switch modules of a supernetwork and the walk that resolves them for a genotype.

A switch is a leaf module with two inputs: the original output of a parent's layer
(input 0) and the output of the stitch that stands in for that layer (input 1). Its
``choice`` is a plain Python attribute, never a tensor, so a traced or exported graph
never branches on data. The output switch has a third choice, the ensemble of both
parents' outputs.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.fx
from torch import nn

__all__ = [
    "OUTPUT_SWITCH",
    "Switch",
    "OutputSwitch",
    "ensemble_outputs",
    "switch_position",
    "chosen_inputs",
    "reached_nodes",
]

#: Module name, under ``switches``, of the output switch.
OUTPUT_SWITCH = "out"

_ENSEMBLES = ("logits", "probabilities")


class Switch(nn.Module):
    """Select the original output (choice 0) or the stitched one (choice 1) of one layer."""

    def __init__(self, position: int):
        super().__init__()
        self.position = position
        self.choice = 0

    def forward(self, original: torch.Tensor, stitched: torch.Tensor) -> torch.Tensor:
        return stitched if self.choice else original

    def extra_repr(self) -> str:
        return f"position={self.position}, choice={self.choice}"


class OutputSwitch(nn.Module):
    """Select parent A's output (0), parent B's output (1) or their ensemble (2)."""

    def __init__(self, position: int, ensemble: str = "logits"):
        super().__init__()
        if ensemble not in _ENSEMBLES:
            raise ValueError(f"unknown ensemble {ensemble!r}; use one of {_ENSEMBLES}")
        self.position = position
        self.ensemble = ensemble
        self.choice = 0

    def forward(self, output_a: torch.Tensor, output_b: torch.Tensor) -> torch.Tensor:
        if self.choice == 0:
            return output_a
        if self.choice == 1:
            return output_b
        return ensemble_outputs(output_a, output_b, self.ensemble)

    def extra_repr(self) -> str:
        return f"position={self.position}, choice={self.choice}, ensemble={self.ensemble}"


def ensemble_outputs(output_a: torch.Tensor, output_b: torch.Tensor, ensemble: str) -> torch.Tensor:
    """Combine two parents' outputs as the output switch's choice 2 does.

    ``"logits"`` returns ``(a + b) / 2``. ``"probabilities"`` returns the log of the
    mean of both softmax distributions over the last axis, so that a softmax of the
    result is the mean probability and the result can be used wherever logits are.
    """
    if ensemble == "logits":
        return (output_a + output_b) / 2
    mean = (torch.softmax(output_a, dim=-1) + torch.softmax(output_b, dim=-1)) / 2
    return torch.log(mean)


def switch_position(gm: torch.fx.GraphModule, node: torch.fx.Node) -> int | None:
    """Return the genotype position of a switch node, or None when ``node`` is no switch."""
    if node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    if isinstance(module, (Switch, OutputSwitch)):
        return module.position
    return None


def chosen_inputs(gm: torch.fx.GraphModule, node: torch.fx.Node, genotype: tuple[int, ...]) -> tuple[torch.fx.Node, ...]:
    """Return the inputs of ``node`` that the genotype keeps in use.

    A switch keeps only its chosen input (both for an output switch set to the
    ensemble); every other node keeps all of its input nodes.
    """
    position = switch_position(gm, node)
    if position is None:
        return tuple(node.all_input_nodes)
    choice = genotype[position]
    if choice == 2:
        return tuple(node.args[:2])
    return (node.args[choice],)


def reached_nodes(gm: torch.fx.GraphModule, genotype: tuple[int, ...]) -> Iterator[torch.fx.Node]:
    """Yield every node that the genotype's subnetwork computes, walking back from the output.

    The walk follows only the chosen input of each switch. Nodes come in no fixed
    order; callers that need graph order filter ``gm.graph.nodes`` with the result.
    """
    output = next(node for node in reversed(gm.graph.nodes) if node.op == "output")
    seen = {output}
    stack = [output]
    while stack:
        node = stack.pop()
        yield node
        for source in chosen_inputs(gm, node, genotype):
            if source not in seen:
                seen.add(source)
                stack.append(source)
