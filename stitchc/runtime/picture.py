"""Draw a supernetwork as a Graphviz DOT graph, and as SVG when Graphviz is installed.

Parent A's nodes are drawn in one cluster and parent B's in another, side by side;
stitches are orange boxes and switches diamonds. With a genotype, the nodes and edges
of the selected subnetwork are drawn bold and filled, and the rest grey.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from stitchc.errors import InvalidArgumentError
from stitchc.ir import node_info
from stitchc.passes._switch import chosen_inputs, reached_nodes

__all__ = ["supernet_dot", "write_picture"]

logger = logging.getLogger(__name__)

_CLUSTER_COLORS = {"A": "#dbe9f6", "B": "#f6e3db"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def supernet_dot(supernet, genotype=None) -> str:
    """Return the DOT source of the supernetwork, highlighting the subnetwork of ``genotype``."""
    from stitchc.passes.genotype import format_genotype, parse_genotype

    gm = supernet.gm
    selected = None
    used_edges: set[tuple[str, str]] = set()
    if genotype is not None:
        genotype = parse_genotype(genotype, supernet.genotype_length)
        selected = set(reached_nodes(gm, genotype))
        for node in selected:
            for source in chosen_inputs(gm, node, genotype):
                used_edges.add((source.name, node.name))

    lines = ["digraph supernet {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    if genotype is not None:
        lines.append(f"  label={_quote('genotype ' + format_genotype(genotype))}; labelloc=t;")
    by_origin: dict[str, list] = {"A": [], "B": [], "other": []}
    for node in gm.graph.nodes:
        origin = node_info(node).origin
        by_origin[origin if origin in ("A", "B") and node.op != "placeholder" else "other"].append(node)

    for origin in ("A", "B"):
        lines.append(f"  subgraph cluster_{origin} {{")
        lines.append(f'    label="parent {origin}"; style=filled; color={_quote(_CLUSTER_COLORS[origin])};')
        for node in by_origin[origin]:
            lines.append("    " + _node_line(node, selected))
        lines.append("  }")
    for node in by_origin["other"]:
        lines.append("  " + _node_line(node, selected))

    for node in gm.graph.nodes:
        for source in node.all_input_nodes:
            style = ""
            if selected is not None:
                style = " [penwidth=2.5]" if (source.name, node.name) in used_edges else ' [color="#bbbbbb"]'
            lines.append(f"  {_quote(source.name)} -> {_quote(node.name)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_line(node, selected) -> str:
    info = node_info(node)
    label = info.name
    attributes = {"shape": "box", "style": "rounded"}
    if info.origin and info.origin.startswith("stitch:"):
        attributes = {"shape": "box", "style": "filled", "fillcolor": "#ffb347"}
        label = f"{info.origin}\\n{info.target}"
    elif info.origin == "switch":
        attributes = {"shape": "diamond", "style": "filled", "fillcolor": "#fff3a0"}
        label = info.name.replace("switches.", "s")
    elif info.shape:
        label = f"{info.name}\\n{'x'.join(map(str, info.shape))}"
    if selected is not None:
        if node in selected:
            attributes["penwidth"] = "2.5"
        else:
            attributes["fontcolor"] = "#aaaaaa"
            attributes["color"] = "#cccccc"
    rendered = ", ".join(f"{key}={_quote(value)}" for key, value in attributes.items())
    return f"{_quote(node.name)} [label={_quote(label)}, {rendered}];"


def write_picture(supernet, path: str | Path, genotype=None) -> str:
    """Write the picture to ``path`` (``.dot`` or ``.svg``) and return the format written.

    Raises:
        InvalidArgumentError: the suffix is neither ``.dot`` nor ``.svg``, or ``.svg`` is
            asked for but Graphviz's ``dot`` program is not installed.
    """
    path = Path(path)
    source = supernet_dot(supernet, genotype)
    suffix = path.suffix.lower()
    if suffix == ".dot":
        path.write_text(source)
        return "dot"
    if suffix != ".svg":
        raise InvalidArgumentError(f"unknown picture format {suffix!r} in {str(path)!r}; use .svg or .dot")
    dot = shutil.which("dot")
    if dot is None:
        raise InvalidArgumentError(
            "writing .svg needs Graphviz's dot program, which is not installed; install graphviz or write .dot"
        )
    rendered = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True, check=False)
    if rendered.returncode != 0:
        raise InvalidArgumentError(f"Graphviz failed to draw the picture: {rendered.stderr.strip()[:300]}")
    path.write_text(rendered.stdout)
    return "svg"
