"""Stitch timm's resnet152 and efficientnet_b4 with pretrained ImageNet weights, then search on GPUs.

This recipe follows the ImageNet pair of Guijt et al., "Stitching for Neuroevolution"
(GECCO 2024), with stitchc's passes. It needs data and weights that stitchc cannot
download, so it is not run in CI. Read ``examples/imagenet_pair.md`` first.

Usage::

    # 1. Cut class-balanced subsets of ImageNet into 224x224 center crops (once).
    python examples/imagenet_pair.py subset --source IMAGENET/train --per-class 16 -o subsets/train
    python examples/imagenet_pair.py subset --source IMAGENET/val --per-class 3 -o subsets/eval

    # 2. Check the setup without training: arguments, folders, weights, capture and matching.
    python examples/imagenet_pair.py run --dry-run [the options of step 3]

    # 3. Build the supernetwork, train the stitches, search with Ray on GPUs, emit.
    python examples/imagenet_pair.py run \\
        --resnet152-weights resnet152.safetensors --efficientnet-b4-weights efficientnet_b4.safetensors \\
        --train-dir subsets/train --eval-dir subsets/eval -o imagenet-output \\
        --device cuda --executor ray --workers 5 --gpus-per-worker 0.2

Stitches are trained on images of ``--train-dir``. The search evaluates offspring on
the validation part of ``--eval-dir`` and the chosen ones are tested on its test part.
Only the driver loads ``--train-dir``, while every search worker loads ``--eval-dir``,
so keeping the evaluation folder small keeps the workers' memory small.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from stitchc import StitchcError, capture_source, load_model, total_macs
from stitchc.passes.build import insert_stitches
from stitchc.passes.candidates import find_candidates, to_digraph
from stitchc.passes.genotype import canonical_genotype
from stitchc.passes.matching import solve_matching
from stitchc.passes.prune import prune_to_genotype
from stitchc.passes.supernet_file import save_supernet
from stitchc.runtime.data import DataOptions, load_data
from stitchc.runtime.emit import emit_model
from stitchc.runtime.evaluate import EvalOptions, SupernetProblemFactory, evaluate_module
from stitchc.runtime.search import ALGORITHMS, EXECUTOR_KINDS, ExecutorOptions, SearchOptions, plot_run, read_config, run_search
from stitchc.runtime.train import TrainOptions, train_stitches

__all__ = ["main", "make_subset", "build_options"]

INPUT_SHAPE = (1, 3, 224, 224)
NUM_CLASSES = 1000
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
# The usual ImageNet evaluation crop: shorter side resized to 256, then the central 224x224.
RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224


# ---------------------------------------------------------------------------------------------
# subset: class-balanced 224x224 crops of an ImageNet-style folder


def make_subset(source: Path, output: Path, per_class: int) -> tuple[int, int]:
    """Copy the first ``per_class`` images of each class folder of ``source`` as 224x224 center crops.

    Images are taken in file-name order and written as JPEG (quality 95) under the same
    class folder names, so torchvision's ImageFolder assigns the same class indices.
    A class with fewer images contributes all of them.

    Returns:
        The number of class folders and of images written.

    Raises:
        FileNotFoundError: ``source`` is not a folder or contains no class folders.
    """
    from PIL import Image

    if not source.is_dir():
        raise FileNotFoundError(f"source folder {source} not found; pass the ImageNet folder with one subfolder per class")
    classes = sorted(path for path in source.iterdir() if path.is_dir())
    if not classes:
        raise FileNotFoundError(f"{source} contains no class folders; expected SOURCE/<class name>/<image>")

    written = 0
    for class_dir in classes:
        files = sorted(path for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)[:per_class]
        if len(files) < per_class:
            print(f"warning: {class_dir.name} has only {len(files)} images", file=sys.stderr)
        (output / class_dir.name).mkdir(parents=True, exist_ok=True)
        for path in files:
            with Image.open(path) as image:
                crop = center_crop(image.convert("RGB"))
            crop.save(output / class_dir.name / f"{path.stem}.jpeg", quality=95)
            written += 1
    return len(classes), written


def center_crop(image):
    """Resize a PIL image so its shorter side is 256 pixels (bicubic), then cut the central 224x224."""
    from PIL import Image

    scale = RESIZE_SHORTER_SIDE / min(image.size)
    width, height = max(CROP_SIZE, round(image.width * scale)), max(CROP_SIZE, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - CROP_SIZE) // 2, (height - CROP_SIZE) // 2
    return image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


# ---------------------------------------------------------------------------------------------
# run: options


@dataclasses.dataclass(frozen=True)
class RecipeOptions:
    """Every option of a run, built and checked before any work starts."""

    sources: tuple[str, str]
    """Model sources of parents A (resnet152) and B (efficientnet_b4), with their weights."""
    train_spec: str
    """Data spec of the stitch-training images."""
    eval_spec: str
    """Data spec of the validation and test images."""
    train_data: DataOptions
    """Split of the stitch-training folder."""
    eval_data: DataOptions
    """Split of the validation and test folder; the search workers load it with these options."""
    stitch_training: TrainOptions
    evaluation: EvalOptions
    """Evaluator options of the search; the test re-evaluation changes only the split."""
    search: SearchOptions
    device: str
    """Torch device of stitch training and evaluation."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The ImageNet pair resnet152 + efficientnet_b4 with stitchc.")
    commands = parser.add_subparsers(dest="command", required=True)

    subset = commands.add_parser("subset", help="Cut a class-balanced subset of 224x224 center crops.")
    subset.add_argument("--source", type=Path, metavar="DIR", required=True,
                        help="ImageNet-style folder: SOURCE/<class name>/<image>, one folder per class.")
    subset.add_argument("--per-class", type=int, required=True, help="Images taken from each class folder.")
    subset.add_argument("-o", "--output", type=Path, required=True, help="New folder for the crops.")

    run = commands.add_parser("run", help="Capture, match, build, train stitches, search, test and emit.")
    run.add_argument("--resnet152-weights", type=Path, metavar="FILE",
                     help="State dict of timm's resnet152 (1000 classes): .safetensors, .pt, .pth or .bin.")
    run.add_argument("--efficientnet-b4-weights", type=Path, metavar="FILE",
                     help="State dict of timm's efficientnet_b4 (1000 classes).")
    run.add_argument("--train-dir", type=Path, metavar="DIR", help="Folder of stitch-training images, one subfolder per class.")
    run.add_argument("--eval-dir", type=Path, metavar="DIR",
                     help="Folder of validation and test images with the same class subfolders.")
    run.add_argument("-o", "--output", type=Path, default=Path("imagenet-output"),
                     help="New folder for the supernetwork, the search run and the emitted offspring.")
    run.add_argument("--device", default="cuda",
                     help="Torch device for stitch training and evaluation (default: cuda).")
    run.add_argument("--stitch-samples", type=int, default=16384,
                     help="Training images drawn for stitch training in total (default: 16384).")
    run.add_argument("--stitch-batch-size", type=int, default=32, help="Stitch training batch size (default: 32).")
    run.add_argument("--val-images", type=int, default=1000,
                     help="Validation images each evaluation runs on (default: 1000).")
    run.add_argument("--eval-batch-size", type=int, default=32, help="Evaluation batch size (default: 32).")
    run.add_argument("--algorithm", choices=ALGORITHMS, default="ga", help="Search algorithm (default: ga).")
    run.add_argument("--budget", type=int, default=20000,
                     help="Search evaluations, skipped ones included (default: 20000).")
    run.add_argument("--population", type=int, default=256, help="Population size (default: 256).")
    run.add_argument("--time-limit", type=float, help="Stop proposing offspring after this many seconds.")
    run.add_argument("--executor", choices=EXECUTOR_KINDS, default="ray",
                     help="Where evaluations run: local, process or ray (default: ray).")
    run.add_argument("--workers", type=int, default=5,
                     help="Worker processes or Ray actors; with --gpus-per-worker 0.2, five per GPU (default: 5).")
    run.add_argument("--gpus-per-worker", type=float, default=0.2,
                     help="GPUs reserved per Ray actor; 0.2 puts five actors on one GPU (default: 0.2).")
    run.add_argument("--ray-address", help="Address of a running Ray cluster (default: start a local one).")
    run.add_argument("--seed", type=int, default=0, help="Seed of the splits, stitch training and search.")
    run.add_argument("--dry-run", action="store_true",
                     help="Check the options, folders and weights, capture and match both architectures "
                          "at --dry-run-shape, then stop before loading data or training.")
    run.add_argument("--dry-run-shape", default="1x3x64x64",
                     help="Input shape of the dry-run capture, NxCxHxW (default: 1x3x64x64).")
    return parser.parse_args(argv)


def build_options(args: argparse.Namespace) -> RecipeOptions:
    """Turn the parsed arguments into the library's option types, which check their values.

    Raises:
        InvalidArgumentError: an option value is invalid (the message names it).
    """
    weights = (args.resnet152_weights, args.efficientnet_b4_weights)
    sources = tuple(f"timm:{name}" + (f",weights={path.resolve()}" if path else "")
                    for name, path in zip(("resnet152", "efficientnet_b4"), weights))
    executor = ExecutorOptions(kind=args.executor, workers=args.workers, ray_address=args.ray_address,
                               gpus_per_worker=args.gpus_per_worker if args.executor == "ray" else 0.0)
    return RecipeOptions(
        sources=sources,
        train_spec=f"imagefolder:{args.train_dir.resolve()}" if args.train_dir else "",
        eval_spec=f"imagefolder:{args.eval_dir.resolve()}" if args.eval_dir else "",
        # Stitch training uses 95 % of --train-dir; the rest is never read.
        train_data=DataOptions(val_fraction=0.05, test_fraction=0.0, seed=args.seed, num_classes=NUM_CLASSES),
        # --eval-dir: 40 % validation (at most --val-images), 50 % test. Like every split,
        # the remaining 10 % only supplies the per-channel normalization statistics.
        eval_data=DataOptions(val_fraction=0.4, test_fraction=0.5, seed=args.seed, max_val=args.val_images,
                              num_classes=NUM_CLASSES),
        stitch_training=TrainOptions(init="lstsq", samples=args.stitch_samples, batch_size=args.stitch_batch_size,
                           lr=1e-3, seed=args.seed),
        evaluation=EvalOptions(device=args.device, batch_size=args.eval_batch_size),
        search=SearchOptions(algorithm=args.algorithm, budget=args.budget, population=args.population,
                             seed=args.seed, time_limit_s=args.time_limit, executor=executor),
        device=args.device,
    )


def check_inputs(args: argparse.Namespace) -> list[str]:
    """Return a message for each missing input, inconsistent folder or unavailable dependency."""
    problems = []
    required = {"--resnet152-weights": args.resnet152_weights, "--efficientnet-b4-weights": args.efficientnet_b4_weights,
                "--train-dir": args.train_dir, "--eval-dir": args.eval_dir}
    for flag, path in required.items():
        if path is None:
            problems.append(f"{flag} is missing")
        elif not path.exists():
            problems.append(f"{flag} {path} not found")

    folders = [path for path in (args.train_dir, args.eval_dir) if path is not None and path.is_dir()]
    class_lists = [sorted(child.name for child in path.iterdir() if child.is_dir()) for path in folders]
    for path, classes in zip(folders, class_lists):
        if len(classes) != NUM_CLASSES:
            problems.append(f"{path} has {len(classes)} class folders; the pretrained heads expect {NUM_CLASSES}, "
                            "one per ImageNet class, so that folder order matches the class indices")
    if len(class_lists) == 2 and class_lists[0] != class_lists[1]:
        problems.append("--train-dir and --eval-dir have different class folders; give both the same classes")

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"--device {args.device} was requested but PyTorch sees no CUDA device; pass --device cpu")
    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            problems.append("--executor ray needs Ray; install it with pip install 'stitchc[ray]' "
                            "or pass --executor process")
    return problems


# ---------------------------------------------------------------------------------------------
# run: steps


def dry_run(args: argparse.Namespace, options: RecipeOptions) -> int:
    """Capture and match both architectures at a small input; report what a full run would lack."""
    from stitchc import parse_input_shape

    shape = parse_input_shape(args.dry_run_shape)
    # Only weights files that exist are loaded, which checks that they fit the architecture.
    sources = tuple(source if _weights_exist(source) else source.split(",weights=")[0] for source in options.sources)
    started = time.perf_counter()
    capture_a = capture_source(sources[0], shape)
    capture_b = capture_source(sources[1], shape)
    candidates = find_candidates(capture_a.gm, capture_b.gm)
    matching = solve_matching(to_digraph(capture_a.gm), to_digraph(capture_b.gm), candidates)

    for label, source, captured in (("A", sources[0], capture_a), ("B", sources[1], capture_b)):
        weights = "pretrained weights" if ",weights=" in source else "random weights"
        print(f"parent {label}: {source.split(',')[0]} ({weights}), {len(captured.gm.graph.nodes)} graph nodes, "
              f"{total_macs(captured.gm):,} MACs at {args.dry_run_shape}")
    print(f"matching at {args.dry_run_shape}: {len(matching.pairs)} pairs of {len(candidates)} candidates "
          f"({matching.status}), genotype length {2 * len(matching.pairs) + 1}")
    print(f"search: {options.search.algorithm}, budget {options.search.budget}, population "
          f"{options.search.population}, executor {options.search.executor.kind} with "
          f"{options.search.executor.workers} workers")
    print(f"dry run finished in {time.perf_counter() - started:.1f} s")

    problems = check_inputs(args)
    if problems:
        print("a full run would stop here:\n  " + "\n  ".join(problems))
    return 0


def _weights_exist(source: str) -> bool:
    _, _, path = source.partition(",weights=")
    return bool(path) and Path(path).is_file()


def check_parents(options: RecipeOptions) -> None:
    """Print each parent's accuracy on the validation images before any long step starts.

    A pretrained ImageNet parent scores far above chance here; an accuracy near 0.001
    means the weights or the class folder order do not fit.
    """
    splits = load_data(options.eval_spec, INPUT_SHAPE, options.eval_data)
    for label, source in zip("AB", options.sources):
        model = load_model(source).to(options.device)
        metrics = evaluate_module(model, splits.val, splits.task, splits.num_classes,
                                  options.evaluation.batch_size, options.device)
        print(f"parent {label} ({source.split(',')[0]}): validation accuracy {metrics['accuracy']:.4f}")
        del model


def build_supernet(options: RecipeOptions, output: Path, seconds: dict) -> Path:
    """Capture, match, build and train the stitches; return the supernetwork file."""
    started = time.perf_counter()
    capture_a = capture_source(options.sources[0], INPUT_SHAPE)
    capture_b = capture_source(options.sources[1], INPUT_SHAPE)
    candidates = find_candidates(capture_a.gm, capture_b.gm)
    matching = solve_matching(to_digraph(capture_a.gm), to_digraph(capture_b.gm), candidates)
    by_pair = {(candidate.a, candidate.b): candidate for candidate in candidates}
    supernet = insert_stitches(capture_a.gm, capture_b.gm, [by_pair[tuple(pair)] for pair in matching.pairs])
    seconds["capture, match and build"] = time.perf_counter() - started
    print(f"{len(matching.pairs)} matched pairs ({matching.status}), genotype length {supernet.genotype_length}")

    # Only the driver reads the training folder. Stitch training runs on the device.
    started = time.perf_counter()
    splits = load_data(options.train_spec, INPUT_SHAPE, options.train_data)
    supernet.to(options.device)
    report = train_stitches(supernet, splits.train, options.stitch_training)
    supernet.to("cpu")
    path = output / "net.stitch"
    save_supernet(path, supernet, extra={"train_report": report.to_json()})
    seconds["train stitches"] = time.perf_counter() - started
    return path


def evaluate_test_and_emit(options: RecipeOptions, supernet_path: Path, run_dir: Path, front: list[dict]) -> list[dict]:
    """Evaluate the references and the validation front on the test images; emit the most accurate offspring."""
    from stitchc.passes.supernet_file import load_supernet

    factory = SupernetProblemFactory(str(supernet_path), options.eval_spec, options.eval_data,
                                     dataclasses.replace(options.evaluation, split="test"))
    problem = factory()
    supernet = problem.supernet
    validation_points = read_config(run_dir)["reference_points"]

    rows = []
    for name, key, output in (("parent A", "A", 0), ("parent B", "B", 1), ("ensemble", "ensemble", 2)):
        genotype = (0,) * (problem.genotype_length - 1) + (output,)
        rows.append(_row(name, genotype, validation_points[key], problem.evaluate(genotype)))
    for record in front:
        genotype = tuple(int(value) for value in record["genotype"])
        if sum(canonical_genotype(supernet, genotype)[:-1]) > 0:
            rows.append(_row(f"offspring {len(rows) - 2}", genotype, record["objectives"], problem.evaluate(genotype)))

    offspring = rows[3:]
    if offspring:
        best = max(offspring, key=lambda row: (row["val_accuracy"], -row["macs"]))
        genotype = tuple(int(value) for value in best["genotype"])
        cpu_supernet = load_supernet(supernet_path)
        emit_model(prune_to_genotype(cpu_supernet, genotype), run_dir.parent / "most_accurate.onnx",
                   INPUT_SHAPE, verify=True)
        best["name"] += " (emitted)"
    return rows


def _row(name: str, genotype, validation: dict, test: dict) -> dict:
    return {"name": name, "genotype": "".join(map(str, genotype)), "val_accuracy": validation["accuracy"],
            "test_accuracy": test["accuracy"], "test_ece": test["ece"], "macs": int(test["macs"])}


def full_run(args: argparse.Namespace, options: RecipeOptions) -> int:
    # NOTE: this path has not been run on ImageNet or on a GPU. CI covers only the subset
    # step, the option checks and the dry run.
    problems = check_inputs(args)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    if args.output.exists() and any(args.output.iterdir()):
        print(f"error: {args.output} is not empty; choose a new folder with -o", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    check_parents(options)
    supernet_path = build_supernet(options, args.output, seconds)

    # Each Ray actor builds its own problem from the factory: it loads the supernetwork
    # file and --eval-dir, and evaluates on options.device with its share of a GPU.
    started = time.perf_counter()
    run_dir = args.output / "run"
    factory = SupernetProblemFactory(str(supernet_path), options.eval_spec, options.eval_data, options.evaluation)
    result = run_search(factory, options.search, run_dir,
                        source={"supernet": str(supernet_path), "data": options.eval_spec})
    plot_run(run_dir)
    seconds["search"] = time.perf_counter() - started

    started = time.perf_counter()
    rows = evaluate_test_and_emit(options, supernet_path, run_dir, result.front)
    seconds["test and emit"] = time.perf_counter() - started

    lines = ["| network | val accuracy | test accuracy | test ECE | MACs |", "|---|---|---|---|---|"]
    lines += [f"| {row['name']} | {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} | {row['test_ece']:.4f} "
              f"| {row['macs']:,} |" for row in rows]
    lines += ["", "| step | seconds |", "|---|---|"] + [f"| {step} | {value:.0f} |" for step, value in seconds.items()]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    (args.output / "results.json").write_text(json.dumps(
        {"sources": options.sources, "search": {"evaluations": result.evaluations, "skipped": result.skipped,
                                                "failed": result.failed, "hypervolume": result.hypervolume},
         "rows": rows, "seconds": seconds}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "subset":
            if args.per_class < 1:
                print(f"error: --per-class {args.per_class} is invalid; use 1 or more", file=sys.stderr)
                return 2
            classes, images = make_subset(args.source, args.output, args.per_class)
            print(f"wrote {images} images of {classes} classes to {args.output}")
            return 0
        options = build_options(args)
        return dry_run(args, options) if args.dry_run else full_run(args, options)
    except (StitchcError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
