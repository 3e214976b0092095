"""Draw a supernetwork as a PNG: parents side by side, matches between them.

Parent A's layer nodes form the left column and parent B's the right one, each in
topological order from top (input) to bottom (output). A grey line joins every matched
pair. With a genotype, the nodes the subnetwork keeps are drawn dark, the others faint,
and each stitch it uses is an arrow from the layer it reads to the layer it replaces.
Graphviz draws the full graph from ``stitchc show``; this picture needs only matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from stitchc.ir import has_node_info, node_info  # noqa: E402

__all__ = ["draw_supernet"]


def _columns(supernet) -> dict[str, dict[str, float]]:
    """Return, per parent, each layer node's vertical position in [0, 1] (0 = input side)."""
    names: dict[str, list[str]] = {"A": [], "B": []}
    for node in supernet.gm.graph.nodes:
        if has_node_info(node):
            info = node_info(node)
            if info.origin in names and info.is_layer:
                names[info.origin].append(info.name)
    return {origin: {name: index / max(1, len(items) - 1) for index, name in enumerate(items)}
            for origin, items in names.items()}


def _kept_nodes(supernet, genotype) -> set[tuple[str, str]]:
    from stitchc.passes.prune import prune_graph

    gm = prune_graph(supernet, genotype, copy_weights=False)
    return {(node_info(n).origin, node_info(n).name) for n in gm.graph.nodes if has_node_info(n)}


def draw_supernet(supernet, path: str | Path, genotype=None) -> Path:
    """Write a PNG picture of ``supernet`` to ``path``, highlighting ``genotype`` if given."""
    from stitchc.passes.genotype import active_positions, parse_genotype

    columns = _columns(supernet)
    kept = None
    active: frozenset[int] = frozenset()
    if genotype is not None:
        genotype = parse_genotype(genotype, supernet.genotype_length)
        kept = _kept_nodes(supernet, genotype)
        active = active_positions(supernet, genotype)

    figure, axes = plt.subplots(figsize=(6, 10))
    x_of = {"A": 0.0, "B": 1.0}
    for origin, positions in columns.items():
        for name, y in positions.items():
            selected = kept is None or (origin, name) in kept
            axes.plot(x_of[origin], -y, "o", markersize=3, color="tab:blue" if origin == "A" else "tab:orange",
                      alpha=1.0 if selected else 0.2)

    for index, match in enumerate(supernet.matches):
        y_a = -columns["A"].get(match.a, 0.0)
        y_b = -columns["B"].get(match.b, 0.0)
        axes.plot([0, 1], [y_a, y_b], color="grey", linewidth=0.4, alpha=0.35)
        for position, (start, end) in ((2 * index, ((1, y_b), (0, y_a))), (2 * index + 1, ((0, y_a), (1, y_b)))):
            if genotype is not None and position in active and genotype[position] == 1:
                axes.annotate("", xy=end, xytext=start,
                              arrowprops={"arrowstyle": "->", "color": "tab:green", "linewidth": 1.6})

    axes.set_xticks([0, 1], ["parent A", "parent B"])
    axes.set_yticks([])
    axes.set_xlim(-0.3, 1.3)
    title = f"supernetwork: {len(supernet.matches)} matches"
    if genotype is not None:
        output = ("A", "B", "ensemble")[genotype[-1]]
        title += f"\nhighlighted offspring: output {output}, stitches in green"
    axes.set_title(title)
    for spine in axes.spines.values():
        spine.set_visible(False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
