"""Recombine two networks trained on MNIST, one library call per pipeline step.

Usage::

    python examples/mnist.py --mnist-dir DIR [-o OUT] [--quick] [--seed S]

DIR contains MNIST in the idx format, gzipped or not. With only the ``t10k-*`` files (the
10,000-image test set), stitchc splits them into training, validation and test images.
With the ``train-*`` files as well, those give the training and validation splits and the
``t10k-*`` files the test split.

The script walks through the pipeline that ``stitchc demo`` runs, but calls each pass of
the library itself, so it can serve as a template for linking the passes into other code:

1. load and split the data;
2. train two parents of different families (a timm ResNet and a timm MobileNetV3);
3. capture both as torch.fx graphs;
4. find the layer pairs a stitch can join and solve the exact acyclic matching;
5. build the supernetwork (both parents, a stitch per direction of each pair, switches);
6. train every stitch at once (least-squares initialization, then AdamW);
7. search the offspring with the genetic algorithm for accuracy / MAC trade-offs on
   the validation split;
8. re-evaluate the parents, their ensemble and the validation front on the test split;
9. emit the most accurate offspring as ONNX, checked with onnxruntime.

OUT (default ``mnist-output``) receives ``parents/``, ``net.stitch``, ``run/`` (the search
run and ``front.png``), ``most_accurate.onnx``, ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save_file

from stitchc import StitchcError, capture_source
from stitchc.passes.build import insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.genotype import canonical_genotype
from stitchc.passes.matching import solve_matching
from stitchc.passes.prune import prune_to_genotype
from stitchc.passes.supernet_file import save_supernet
from stitchc.runtime.data import DataOptions, load_data
from stitchc.runtime.demo import train_parent
from stitchc.runtime.emit import count_emitted, emit_model
from stitchc.runtime.evaluate import EvalOptions, SupernetProblemFactory
from stitchc.runtime.search import SearchOptions, plot_run, read_config, run_search
from stitchc.runtime.train import TrainOptions, train_stitches

__all__ = ["Budget", "FULL", "QUICK", "main"]

# Both parents see MNIST at its own size; the data loader gives the images one channel.
INPUT_SHAPE = (1, 1, 28, 28)
PARENT_A = "timm:resnet10t,num_classes=10,in_chans=1"
PARENT_B = "timm:mobilenetv3_small_100,num_classes=10,in_chans=1"

# Files and folders this script writes into OUT; --overwrite removes only these.
OUTPUT_NAMES = ("parents", "net.stitch", "run", "most_accurate.onnx", "results.json", "results.md")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each step does."""

    parent_epochs: int
    """Training epochs of each parent."""
    stitch_epochs: int
    """Epochs of stitch training after the least-squares initialization."""
    evaluations: int
    """Search evaluations, skipped ones included."""
    population: int
    """Population size of the genetic algorithm."""
    max_train: int | None
    """Training images kept after splitting; None keeps all."""
    max_val: int | None
    """Validation images the search evaluates each offspring on; None keeps all."""
    max_test: int | None
    """Test images; None keeps all."""


# With only the t10k files, the full run splits them 60/20/20 (the defaults of
# stitchc.runtime.data.DataOptions): 6,000 training and 2,000 test images, and 1,000 of
# the 2,000 validation images, because each search evaluation runs on all of them.
FULL = Budget(parent_epochs=3, stitch_epochs=1, evaluations=200, population=16,
              max_train=None, max_val=1000, max_test=None)
QUICK = Budget(parent_epochs=1, stitch_epochs=1, evaluations=16, population=4,
               max_train=512, max_val=128, max_test=128)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train two MNIST classifiers, stitch them and search their offspring, step by step.")
    parser.add_argument("--mnist-dir", required=True, type=Path,
                        help="Folder with the MNIST idx files (t10k-* at least, train-* optional).")
    parser.add_argument("-o", "--output", type=Path, default=Path("mnist-output"),
                        help="Folder for the results and intermediate files (default: mnist-output).")
    parser.add_argument("--quick", action="store_true",
                        help="Shrink every step (512 training images, one epoch, 16 evaluations) "
                             "to check the setup; the parents stay near chance accuracy.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Seed of the data split, parent and stitch training, and search (default: 0).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the files of an earlier run in the output folder.")
    return parser.parse_args(argv)


class StepTimer:
    """Wall-clock seconds per named step, printed as each step ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        print(f"[{len(self.seconds) + 1}] {name} ...", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        print(f"    done in {self.seconds[name]:.1f} s", flush=True)


def prepare_output(output: Path, overwrite: bool) -> None:
    """Create ``output``; raise FileExistsError if it contains files of an earlier run and ``overwrite`` is off."""
    existing = [name for name in OUTPUT_NAMES if (output / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output} already contains {', '.join(existing)} from an earlier run; "
            "pass --overwrite to replace them or choose another folder with -o")
    for name in existing:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    output.mkdir(parents=True, exist_ok=True)


def train_and_save(source: str, splits, epochs: int, seed: int, path: Path) -> tuple[str, float]:
    """Train a parent, save its weights as safetensors; return its source string with them and its test accuracy."""
    model, metrics = train_parent(source, splits, epochs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.detach().contiguous() for key, value in model.state_dict().items()}, str(path))
    return f"{source},weights={path.resolve()}", metrics["accuracy"]


def stitches_used(supernet, genotype: tuple[int, ...]) -> int:
    """Count the switches that take a stitch's output in the subnetwork ``genotype`` selects."""
    return sum(canonical_genotype(supernet, genotype)[:-1])


def run(args: argparse.Namespace) -> dict:
    budget = QUICK if args.quick else FULL
    load_at_start = round(os.getloadavg()[0], 2)
    prepare_output(args.output, args.overwrite)
    timer = StepTimer()

    # 1. Data. One spec string names the source, and the same spec and options give the
    # same splits everywhere. That is why the search workers can reload them on their own.
    data_spec = f"mnist:{args.mnist_dir.resolve()}"
    data_options = DataOptions(seed=args.seed, max_train=budget.max_train, max_val=budget.max_val,
                               max_test=budget.max_test)
    with timer.step("load and split MNIST"):
        splits = load_data(data_spec, INPUT_SHAPE, data_options)
    print(f"    {len(splits.train)} training, {len(splits.val)} validation, {len(splits.test)} test images")

    # 2. Parents. Any trained networks work; these two are trained here because nothing
    # is downloaded. Saving the weights turns each parent into a source string
    # (architecture plus weights file) that the supernetwork file records to rebuild it.
    sources, parent_accuracy = {}, {}
    for label, source in (("A", PARENT_A), ("B", PARENT_B)):
        with timer.step(f"train parent {label} ({source.split(',')[0]}, {budget.parent_epochs} epochs)"):
            path = args.output / "parents" / f"{label.lower()}.safetensors"
            sources[label], parent_accuracy[label] = train_and_save(
                source, splits, budget.parent_epochs, args.seed, path)
        print(f"    test accuracy {parent_accuracy[label]:.4f}")

    # 3. Capture. Each parent becomes a torch.fx GraphModule whose nodes carry their output
    # shape and MACs; capture checks that the graph computes what the model computes.
    with timer.step("capture both parents"):
        capture_a = capture_source(sources["A"], INPUT_SHAPE)
        capture_b = capture_source(sources["B"], INPUT_SHAPE)

    # 4. Match. A candidate is a pair of layer nodes (one per parent) whose outputs a
    # stitch (a 1x1 convolution or a linear layer) can map onto each other in both
    # directions. solve_matching looks for the largest set of candidates that uses each
    # node at most once and creates no cycle when every pair is merged into one node, and
    # its status says whether it proved that set optimal.
    with timer.step("find candidates and solve the matching"):
        candidates = find_candidates(capture_a.gm, capture_b.gm)
        matching = solve_matching(to_digraph(capture_a.gm), to_digraph(capture_b.gm), candidates)
        by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
        pairs = [by_pair[tuple(pair)] for pair in matching.pairs]
    print(f"    {len(pairs)} matched pairs out of {len(candidates)} candidates ({matching.status})")

    # 5. Build. The supernetwork contains both parents and, for each matched pair, a stitch
    # in each direction with a switch that chooses between a layer's own output and the
    # stitched one. A genotype sets every switch (two per pair, in A's layer order), and
    # its last value picks the output: 0 = A, 1 = B, 2 = the ensemble of both.
    with timer.step("build the supernetwork"):
        supernet = insert_stitches(capture_a.gm, capture_b.gm, pairs)
    print(f"    genotype length {supernet.genotype_length}")

    # 6. Train the stitches. The parents stay frozen, and each stitch learns to map one
    # parent's activation onto the other's (mean squared error). A ridge least-squares
    # solve sets each stitch's weights first, then AdamW refines all of them together.
    with timer.step(f"train the stitches (least squares, then AdamW for {budget.stitch_epochs} epochs)"):
        report = train_stitches(supernet, splits.train,
                                TrainOptions(init="lstsq", epochs=budget.stitch_epochs, seed=args.seed))
        supernet_path = args.output / "net.stitch"
        save_supernet(supernet_path, supernet, extra={"train_report": report.to_json()})

    # 7. Search. The factory is a picklable recipe (supernetwork file, data spec, split)
    # that every evaluation worker calls to build its own problem. The evaluator caches
    # the parents' activations at matched layers, so an offspring recomputes only the
    # layers whose inputs differ from an unchanged parent's.
    run_dir = args.output / "run"
    factory = SupernetProblemFactory(str(supernet_path), data=data_spec, data_options=data_options)
    search_options = SearchOptions(algorithm="ga", budget=budget.evaluations, population=budget.population,
                                   seed=args.seed)
    with timer.step(f"search ({search_options.algorithm}, {search_options.budget} evaluations)"):
        result = run_search(factory, search_options, run_dir,
                            source={"supernet": str(supernet_path), "data": data_spec})
        plot_run(run_dir)
    print(f"    validation front of {len(result.front)}, hypervolume {result.hypervolume:.4f}")

    # 8. Test. The search optimized validation accuracy, so the front is re-evaluated on
    # the held-out test split. (stitchc.runtime.search.reevaluate_front does this too, but
    # keeps only the points still non-dominated on the test split; here every row stays.)
    with timer.step("evaluate on the test split"):
        test_problem = dataclasses.replace(factory, eval_options=EvalOptions(split="test"))()
        rows = reference_rows(read_config(run_dir)["reference_points"], test_problem)
        rows += offspring_rows(result.front, test_problem, supernet)

    # 9. Emit. Pruning keeps only the layers the genotype uses; the result is an ordinary
    # GraphModule, written as ONNX and compared with PyTorch's output in onnxruntime.
    with timer.step("emit the most accurate offspring as ONNX"):
        emitted = emit_most_accurate(rows, supernet, args.output / "most_accurate.onnx")

    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{torch.get_num_threads()} torch threads",
        # Other jobs on the machine slow every step, so the 1-minute load average is kept too.
        "load_average": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
        "quick": args.quick,
        "seed": args.seed,
        "budget": dataclasses.asdict(budget),
        "sources": sources,
        "images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "matches": len(pairs),
        "candidates": len(candidates),
        "genotype_length": supernet.genotype_length,
        "stitch_training": {"steps": report.steps, "lstsq_fallbacks": list(report.lstsq_fallbacks)},
        "search": {"evaluations": result.evaluations, "skipped": result.skipped, "failed": result.failed,
                   "front_size": len(result.front), "hypervolume": result.hypervolume},
        "rows": rows,
        "emitted": emitted,
        "seconds": {name: round(value, 1) for name, value in timer.seconds.items()},
    }


def reference_rows(validation_points: dict, test_problem) -> list[dict]:
    """Return the table rows of parent A, parent B and their ensemble."""
    rows = []
    for name, output in (("parent A", 0), ("parent B", 1), ("ensemble of A and B", 2)):
        genotype = (0,) * (test_problem.genotype_length - 1) + (output,)
        key = {0: "A", 1: "B", 2: "ensemble"}[output]
        rows.append(make_row(name, genotype, 0, validation_points[key], test_problem.evaluate(genotype)))
    return rows


def offspring_rows(front: list[dict], test_problem, supernet) -> list[dict]:
    """Return a row for each validation-front point that uses at least one stitch, by MACs."""
    rows = []
    for record in front:
        genotype = tuple(int(value) for value in record["genotype"])
        used = stitches_used(supernet, genotype)
        if used == 0:
            continue  # a parent or the ensemble itself, already in the table
        rows.append(make_row(f"offspring {len(rows) + 1}", genotype, used, record["objectives"],
                             test_problem.evaluate(genotype)))
    return rows


def make_row(name: str, genotype: tuple[int, ...], stitches: int, validation: dict, test: dict) -> dict:
    return {
        "name": name,
        "genotype": "".join(str(value) for value in genotype),
        "stitches": stitches,
        "val_accuracy": validation["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_ece": test["ece"],
        "macs": int(test["macs"]),
        "params": int(test["params"]),
    }


def emit_most_accurate(rows: list[dict], supernet, path: Path) -> dict | None:
    """Emit the offspring row with the highest validation accuracy; return what was written, or None."""
    offspring = [row for row in rows if row["stitches"] > 0]
    if not offspring:
        print("    the validation front holds no offspring that uses a stitch; nothing to emit")
        return None
    best = max(offspring, key=lambda row: (row["val_accuracy"], -row["macs"]))
    genotype = tuple(int(value) for value in best["genotype"])

    gm = prune_to_genotype(supernet, genotype)
    written = emit_model(gm, path, INPUT_SHAPE, verify=True)
    counted = count_emitted(path)
    best["name"] += " (emitted)"
    print(f"    {path}: {counted['macs']:,} MACs counted in the ONNX graph, "
          f"max |ONNX - PyTorch| = {written['max_abs_diff']:.2e}")
    return {"name": best["name"], "path": str(path), "genotype": best["genotype"],
            "macs_onnx": int(counted["macs"]), "max_abs_diff": float(written["max_abs_diff"])}


def format_table(rows: list[dict]) -> str:
    """Return the rows as a Markdown table."""
    lines = ["| network | stitches | val accuracy | test accuracy | test ECE | MACs | parameters |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['stitches']} | {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} "
                     f"| {row['test_ece']:.4f} | {row['macs']:,} | {row['params']:,} |")
    return "\n".join(lines)


def format_results(results: dict) -> str:
    """Return the Markdown of ``results.md``: the table, then each step's time."""
    images = results["images"]
    search = results["search"]
    lines = [
        "# MNIST example",
        "",
        f"{images['train']} training, {images['val']} validation and {images['test']} test images; "
        f"{results['matches']} matched pairs (genotype length {results['genotype_length']}); "
        f"GA search of {search['evaluations']} evaluations ({search['skipped']} skipped, "
        f"{search['failed']} failed), validation front of {search['front_size']}.",
        "",
        f"Command `{results['command']}`, {results['date']}, {results['machine']}, 1-minute load "
        f"average {results['load_average']['start']} at the start and {results['load_average']['end']} at the end.",
        "",
        "Validation accuracy is what the search optimized; test accuracy and the expected calibration "
        "error (ECE) come from the held-out test split. MACs are multiply-adds for one image; "
        "\"stitches\" counts the switches that take a stitch's output.",
        "",
        format_table(results["rows"]),
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in results["seconds"].items()]
    lines += [f"| total | {sum(results['seconds'].values()):.1f} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.mnist_dir.is_dir():
        print(f"error: MNIST folder {args.mnist_dir} not found; pass the folder with the idx files "
              "as --mnist-dir", file=sys.stderr)
        return 2
    try:
        results = run(args)
    except (StitchcError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = format_results(results)
    (args.output / "results.md").write_text(markdown)
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
