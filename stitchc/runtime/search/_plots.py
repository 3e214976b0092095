"""``front.png``: the validation front beside the test front, with the reference networks marked.

The reference networks (parents A and B and their ensemble) are marked with an ``x``, and
the region where a network would dominate at least one of them (higher accuracy and fewer
MACs) is shaded.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files only, whatever backend the environment selects
import matplotlib.pyplot as plt  # noqa: E402

from stitchc.runtime.search._rundir import FRONT_FILE, PLOT_FILE, TEST_FRONT_FILE, read_config, read_front  # noqa: E402

__all__ = ["plot_run"]


def _draw(axes, front: list[dict], reference_points: dict, title: str) -> None:
    macs = [record["objectives"]["macs"] for record in front]
    accuracy = [record["objectives"]["accuracy"] for record in front]
    reference_macs = [float(point["macs"]) for point in reference_points.values()]
    right = max(macs + reference_macs) * 1.05 if macs or reference_macs else 1.0

    # Shade, for each reference network, the quadrant of networks that dominate it.
    for point in reference_points.values():
        axes.fill_between([0, float(point["macs"])], float(point["accuracy"]), 1.0, color="orange", alpha=0.15, linewidth=0)
    for name, point in reference_points.items():
        axes.scatter(float(point["macs"]), float(point["accuracy"]), marker="x", color="black", zorder=3)
        axes.annotate(name, (float(point["macs"]), float(point["accuracy"])), textcoords="offset points", xytext=(4, 4))
    if front:
        axes.step(macs, accuracy, where="post", color="tab:blue", alpha=0.6)
        axes.scatter(macs, accuracy, color="tab:blue", s=12, zorder=2, label=f"front ({len(front)})")
        axes.legend(loc="lower right")

    axes.set_xlim(0, right)
    axes.set_xlabel("multiply-adds (MACs)")
    axes.set_ylabel("accuracy")
    axes.set_title(title)


def plot_run(run_dir: str | Path) -> Path:
    """Draw ``front.png`` in ``run_dir`` from ``front.csv`` (and ``front_test.csv`` when present); return its path."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    reference_points = config.get("reference_points", {})
    panels = [("validation", run_dir / FRONT_FILE)]
    if (run_dir / TEST_FRONT_FILE).exists():
        panels.append(("test", run_dir / TEST_FRONT_FILE))

    figure, axes_list = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for axes, (title, path) in zip(axes_list[0], panels):
        front = read_front(path) if path.exists() else []
        points = reference_points if title == "validation" else config.get("test_reference_points", reference_points)
        _draw(axes, front, points, f"{title} front")
    figure.tight_layout()
    path = run_dir / PLOT_FILE
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
