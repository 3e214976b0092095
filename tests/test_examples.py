"""The runnable examples, run as a user runs them: ``python examples/NAME.py ...`` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from stitchc.passes.onnx_costs import count_onnx
from stitchc.passes.supernet_file import load_supernet

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
MNIST_SCRIPT = REPO / "examples" / "mnist.py"

needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"the MNIST idx files are not in {MNIST_DIR}",
)


def run_script(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def mnist_quick(tmp_path_factory):
    """Run the MNIST recipe once with --quick; return its output folder and stdout."""
    work = tmp_path_factory.mktemp("mnist")
    completed = run_script(MNIST_SCRIPT, "--mnist-dir", MNIST_DIR, "-o", "out", "--quick", cwd=work)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return work / "out", completed.stdout


@needs_mnist
@pytest.mark.slow
def test_mnist_quick_writes_every_file(mnist_quick):
    output, _ = mnist_quick
    for name in ("parents/a.safetensors", "parents/b.safetensors", "net.stitch", "run/config.json",
                 "run/archive.jsonl", "run/front.csv", "run/front.png", "most_accurate.onnx",
                 "results.json", "results.md"):
        assert (output / name).is_file(), name


@needs_mnist
@pytest.mark.slow
def test_mnist_quick_results_are_consistent(mnist_quick):
    output, _ = mnist_quick
    results = json.loads((output / "results.json").read_text())
    rows = {row["name"]: row for row in results["rows"]}

    # --quick keeps 512 / 128 / 128 images and spends 16 evaluations.
    assert results["images"] == {"train": 512, "val": 128, "test": 128}
    assert results["search"]["evaluations"] == 16
    assert results["genotype_length"] == 2 * results["matches"] + 1
    assert load_supernet(output / "net.stitch").genotype_length == results["genotype_length"]

    for row in results["rows"]:
        assert 0.0 <= row["val_accuracy"] <= 1.0, row["name"]
        assert 0.0 <= row["test_accuracy"] <= 1.0, row["name"]
        assert 0.0 <= row["test_ece"] <= 1.0, row["name"]
        assert len(row["genotype"]) == results["genotype_length"], row["name"]
    assert rows["ensemble of A and B"]["macs"] == rows["parent A"]["macs"] + rows["parent B"]["macs"]
    offspring = [row for row in results["rows"] if row["name"].startswith("offspring")]
    assert offspring
    assert all(row["stitches"] > 0 for row in offspring)


@needs_mnist
@pytest.mark.slow
def test_mnist_quick_emits_most_accurate(mnist_quick):
    output, _ = mnist_quick
    results = json.loads((output / "results.json").read_text())
    emitted = results["emitted"]
    offspring = [row for row in results["rows"] if row["stitches"] > 0]
    best_accuracy = max(row["val_accuracy"] for row in offspring)
    emitted_row = next(row for row in offspring if row["name"] == emitted["name"])

    assert emitted["name"].endswith("(emitted)")
    assert emitted_row["val_accuracy"] == best_accuracy
    assert emitted["genotype"] == emitted_row["genotype"]
    assert emitted["macs_onnx"] == emitted_row["macs"]
    assert count_onnx(output / "most_accurate.onnx").macs == emitted_row["macs"]
    assert emitted["max_abs_diff"] < 1e-3


@needs_mnist
@pytest.mark.slow
def test_mnist_quick_onnx_runs(mnist_quick):
    output, _ = mnist_quick
    session = onnxruntime.InferenceSession(str(output / "most_accurate.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    (logits,) = session.run(None, {name: np.zeros((3, 1, 28, 28), dtype=np.float32)})

    assert logits.shape == (3, 10)
    assert np.isfinite(logits).all()


@needs_mnist
@pytest.mark.slow
def test_mnist_quick_prints_table(mnist_quick):
    output, stdout = mnist_quick
    results = json.loads((output / "results.json").read_text())
    markdown = (output / "results.md").read_text()

    assert "| network | stitches | val accuracy | test accuracy | test ECE | MACs | parameters |" in stdout
    for row in results["rows"]:
        assert f"| {row['name']} |" in stdout, row["name"]
        assert f"| {row['name']} |" in markdown, row["name"]
    for step in results["seconds"]:
        assert f"| {step} |" in markdown, step


@needs_mnist
@pytest.mark.slow
def test_mnist_rejects_used_output(mnist_quick):
    output, _ = mnist_quick
    before = (output / "results.json").read_bytes()

    completed = run_script(MNIST_SCRIPT, "--mnist-dir", MNIST_DIR, "-o", output, "--quick", cwd=output.parent)

    assert completed.returncode == 1
    assert "already contains" in completed.stderr
    assert "--overwrite" in completed.stderr
    assert (output / "results.json").read_bytes() == before


def test_mnist_missing_folder(tmp_path):
    completed = run_script(MNIST_SCRIPT, "--mnist-dir", tmp_path / "absent", "-o", tmp_path / "out", cwd=tmp_path)

    assert completed.returncode == 2
    assert "MNIST folder" in completed.stderr
    assert "not found" in completed.stderr
    assert not (tmp_path / "out").exists()


IMAGENET_SCRIPT = REPO / "examples" / "imagenet_pair.py"


def test_imagenet_help_lists_options(tmp_path):
    completed = run_script(IMAGENET_SCRIPT, "run", "--help", cwd=tmp_path, timeout=120)

    assert completed.returncode == 0, completed.stderr
    for flag in ("--resnet152-weights", "--efficientnet-b4-weights", "--train-dir", "--eval-dir", "--executor",
                 "--gpus-per-worker", "--dry-run"):
        assert flag in completed.stdout, flag


def test_imagenet_subset_crops_classes(tmp_path):
    from PIL import Image

    source = tmp_path / "source"
    sizes = {"n01": [(300, 200), (180, 260), (500, 500)], "n02": [(256, 256)]}
    for name, class_sizes in sizes.items():
        (source / name).mkdir(parents=True)
        for index, size in enumerate(class_sizes):
            Image.new("RGB", size, color=(index * 60, 10, 200)).save(source / name / f"img{index}.png")
    (source / "n01" / "notes.txt").write_text("not an image")

    completed = run_script(IMAGENET_SCRIPT, "subset", "--source", source, "--per-class", 2, "-o", tmp_path / "out",
                           cwd=tmp_path, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert "wrote 3 images of 2 classes" in completed.stdout
    assert "n02 has only 1 images" in completed.stderr
    written = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.jpeg"))
    assert written == ["n01/img0.jpeg", "n01/img1.jpeg", "n02/img0.jpeg"]
    for path in (tmp_path / "out").rglob("*.jpeg"):
        with Image.open(path) as image:
            assert image.size == (224, 224), path


def test_imagenet_run_lists_missing_inputs(tmp_path):
    completed = run_script(IMAGENET_SCRIPT, "run", "--device", "cpu", "--executor", "process",
                           "--train-dir", tmp_path / "absent", cwd=tmp_path, timeout=120)

    assert completed.returncode == 2
    assert "--resnet152-weights is missing" in completed.stderr
    assert "--efficientnet-b4-weights is missing" in completed.stderr
    assert f"--train-dir {tmp_path / 'absent'} not found" in completed.stderr
    assert "--eval-dir is missing" in completed.stderr


def test_imagenet_run_rejects_bad_option(tmp_path):
    completed = run_script(IMAGENET_SCRIPT, "run", "--dry-run", "--population", 1, cwd=tmp_path, timeout=120)

    assert completed.returncode == 1
    assert "population=1 is invalid" in completed.stderr


@pytest.mark.slow
def test_imagenet_dry_run_rejects_wrong_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "wrong.safetensors"
    save_file({"fc.weight": torch.zeros(10, 2048)}, str(weights))

    completed = run_script(IMAGENET_SCRIPT, "run", "--dry-run", "--resnet152-weights", weights, cwd=tmp_path,
                           timeout=300)

    assert completed.returncode == 1
    assert "does not fit" in completed.stderr


@pytest.mark.slow
def test_imagenet_dry_run_matches_pair(tmp_path):
    completed = run_script(IMAGENET_SCRIPT, "run", "--dry-run", "--device", "cpu", "--executor", "ray",
                           cwd=tmp_path, timeout=300)

    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "parent A: timm:resnet152 (random weights)" in completed.stdout
    assert "parent B: timm:efficientnet_b4 (random weights)" in completed.stdout
    match_line = next(line for line in completed.stdout.splitlines() if line.startswith("matching at 1x3x64x64"))
    pairs = int(match_line.split(": ")[1].split(" pairs")[0])
    assert pairs > 0
    assert f"genotype length {2 * pairs + 1}" in match_line
    assert "a full run would stop here" in completed.stdout
    assert "--resnet152-weights is missing" in completed.stdout
    assert not (tmp_path / "imagenet-output").exists()
