"""Shared pieces of the benchmark suite: the run context, timing, machine facts and fragments.

Every benchmark module defines ``NAME`` (the fragment's file stem), ``TITLE`` (its section
heading on the results page) and ``run(context)``, which measures and then calls
:func:`write_fragment`. ``python -m benchmarks`` assembles the page from the fragments.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "BENCHMARKS_DIR",
    "REPO",
    "Context",
    "format_ratio",
    "machine_info",
    "machine_line",
    "markdown_table",
    "median_seconds",
    "write_fragment",
]

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO = BENCHMARKS_DIR.parent

#: Packages whose versions each fragment records.
VERSIONED_PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "ortools", "pymoo", "numpy")


@dataclasses.dataclass(frozen=True)
class Context:
    """Settings shared by every benchmark of one run.

    Attributes:
        fast: Run on tiny inputs only, to show that the benchmark still runs.
        results_dir: Folder the fragments (markdown, JSON, PNG) are written to.
        work_dir: Folder for reusable artifacts, such as the trained real pair.
        command: The command line that started the run, recorded in every fragment.
        supernet: A supernetwork file to use as the real stitched pair instead of the
            demo's pair; ``None`` uses the demo's pair.
    """

    fast: bool
    results_dir: Path
    work_dir: Path
    command: str
    supernet: Path | None = None

    def repeats(self, full: int) -> int:
        """Return the number of timed repeats: ``full`` in a full run, 1 in the fast tier."""
        return 1 if self.fast else full


def median_seconds(function: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Run ``function`` ``warmup`` times untimed, then ``repeats`` times, and return the median time in seconds."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def format_ratio(numerator: float, denominator: float) -> str:
    """Format ``numerator / denominator`` with two decimals, or ``-`` when the denominator is 0."""
    if not denominator:
        return "-"
    return f"{numerator / denominator:.2f}"


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _gpu() -> str:
    import torch

    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count()))
    return "none"


def machine_info() -> dict[str, Any]:
    """Return the facts a reader needs to compare figures: cores, memory, CPU, GPU and versions."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu": _cpu_model(),
        "gpu": _gpu(),
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def machine_line(info: dict[str, Any]) -> str:
    """Return ``info`` as one markdown line."""
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    return (f"{info['cores']} CPU cores ({info['cpu']}), {info['memory_gib']} GiB memory, GPU: {info['gpu']}, "
            f"{info['system']}, Python {info['python']}; {versions}")


def write_fragment(context: Context, name: str, title: str, body: str, data: Any) -> Path:
    """Write the fragment ``NAME.md`` (heading, command, date, machine, body) and ``NAME.json``.

    Returns the markdown file's path.
    """
    info = machine_info()
    tier = "fast tier: tiny inputs, so the figures only show that the benchmark runs" if context.fast else "full run"
    header = [
        f"## {title}",
        "",
        f"Command: `{context.command}` ({tier})  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='minutes')}  ",
        f"Machine: {machine_line(info)}",
        "",
    ]
    context.results_dir.mkdir(parents=True, exist_ok=True)
    path = context.results_dir / f"{name}.md"
    path.write_text("\n".join(header) + "\n" + body.rstrip() + "\n")
    payload = {"name": name, "fast": context.fast, "command": context.command,
               "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info, "data": data}
    (context.results_dir / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Return a markdown table of ``rows`` under ``headers``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join("-" if cell is None else str(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"
