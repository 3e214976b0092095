"""Data sources for evaluation and search, parsed from the spec string that ``--data`` takes.

Accepted specs:

- ``digits``: scikit-learn's bundled handwritten digits (1,797 grayscale 8x8 images, 10 classes).
- ``mnist:DIR``: MNIST in the idx format, gzipped or not. When DIR contains the ``train-*``
  files, they supply the training and validation splits and the ``t10k-*`` files the test
  split. A directory with only the ``t10k-*`` files is split three ways like any other source.
- ``imagefolder:DIR``: torchvision's ImageFolder layout (``DIR/<class name>/<image>``).
- ``npz:FILE``: a NumPy archive with ``x`` and ``y`` (classification) or ``x`` and ``masks``
  (segmentation, where the mask value 255 means "ignore").

Every source is resized with bilinear interpolation to the models' input size (masks with
nearest-neighbour interpolation), given the channel count the models expect, and normalized
to zero mean and unit variance per channel with the training split's statistics.
"""

from __future__ import annotations

import gzip
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from stitchc.errors import DataError

__all__ = [
    "DATA_SPEC_PREFIXES",
    "DataOptions",
    "DataSplits",
    "load_data",
]

logger = logging.getLogger(__name__)

DATA_SPEC_PREFIXES = ("digits", "mnist:DIR", "imagefolder:DIR", "npz:FILE")
"""The forms of the ``--data`` spec string, as shown in error messages."""

_IGNORE_INDEX = 255
# ITU-R BT.601 luma weights, used to turn RGB images into one channel.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Images are resized in chunks of this many, to bound the temporary memory of interpolation.
_RESIZE_CHUNK = 1024


@dataclass(frozen=True)
class DataOptions:
    """Options for splitting, subsampling and checking a data source."""

    val_fraction: float = 0.2
    """Share of the source's samples in the validation split (the set the search optimizes)."""
    test_fraction: float = 0.2
    """Share of the source's samples in the test split, unused when the source has its own test set."""
    seed: int = 0
    """Seed of the split and subsampling permutations."""
    max_train: int | None = None
    """Maximum number of training samples kept after splitting; None keeps all."""
    max_val: int | None = None
    """Maximum number of validation samples kept after splitting; None keeps all."""
    max_test: int | None = None
    """Maximum number of test samples kept after splitting; None keeps all."""
    num_classes: int | None = None
    """Expected number of classes, so labels must lie in [0, num_classes). None infers max label + 1."""


@dataclass(frozen=True)
class DataSplits:
    """Normalized train, validation and test splits of one data source.

    Each split is a TensorDataset of float32 images ``(N, C, H, W)`` and int64 targets: labels
    ``(N,)`` for classification, masks ``(N, H, W)`` for segmentation (255 marks ignored pixels).
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    task: str
    """``"classification"`` or ``"segmentation"``."""
    num_classes: int
    mean: tuple[float, ...]
    """Per-channel mean of the training images before normalization, applied to every split."""
    std: tuple[float, ...]
    """Per-channel standard deviation of the training images before normalization."""
    spec: str
    """The spec string the splits were loaded from."""
    train_indices: np.ndarray
    """Positions of the training samples in the source's order (for MNIST, train files before t10k)."""
    val_indices: np.ndarray
    """Positions of the validation samples in the source's order."""
    test_indices: np.ndarray
    """Positions of the test samples in the source's order."""


@dataclass
class _RawSource:
    """A source as read from disk: images (N, C, H, W) float32 in the file's own scale, int64 targets."""

    images: torch.Tensor
    targets: torch.Tensor
    task: str
    # Indices of a test set that the source defines itself (MNIST's t10k files), or None.
    test_indices: np.ndarray | None = None


def load_data(spec: str, input_shape: tuple[int, ...], options: DataOptions = DataOptions()) -> DataSplits:
    """Load, split, resize and normalize the data source that ``spec`` names.

    Args:
        spec: one of ``digits``, ``mnist:DIR``, ``imagefolder:DIR`` or ``npz:FILE``.
        input_shape: the models' input ``(C, H, W)``, or ``(N, C, H, W)`` whose leading batch
            size is ignored. C must be 1 or 3 unless the source already has C channels.
        options: split fractions, seed, size limits and the expected number of classes.

    Returns:
        The splits; classification splits are stratified by label, and the same spec, shape
        and options give the same splits.

    Raises:
        DataError: the spec prefix is unknown, a path is missing, a file is malformed, the
            shapes do not fit, labels are out of range, or a split would be empty.
    """
    channels, height, width = _parse_input_shape(input_shape)
    _check_options(options)
    source = _read_source(spec, channels)
    num_classes = _check_targets(source, options.num_classes, spec)

    rng = np.random.default_rng(options.seed)
    train_idx, val_idx, test_idx = _split(source, options, rng, spec)

    splits = []
    for indices in (train_idx, val_idx, test_idx):
        images = _resize_images(_match_channels(source.images[indices], channels, spec), channels, height, width)
        targets = source.targets[indices]
        if source.task == "segmentation":
            targets = _resize_masks(targets, height, width)
        splits.append((images, targets))

    mean, std = _channel_statistics(splits[0][0])
    datasets = [TensorDataset(_normalize(images, mean, std), targets) for images, targets in splits]
    logger.info(
        "Loaded %s: %d train, %d validation, %d test samples of shape %s, %d classes",
        spec, len(train_idx), len(val_idx), len(test_idx), (channels, height, width), num_classes,
    )
    return DataSplits(
        train=datasets[0],
        val=datasets[1],
        test=datasets[2],
        task=source.task,
        num_classes=num_classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        spec=spec,
        train_indices=train_idx,
        val_indices=val_idx,
        test_indices=test_idx,
    )


# ---------------------------------------------------------------------------------------------
# Argument checks


def _parse_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise DataError(
            f"Input shape {tuple(input_shape)} is not an image shape; expected (C, H, W) or "
            "(N, C, H, W) with positive integers."
        )
    return shape  # type: ignore[return-value]


def _check_options(options: DataOptions) -> None:
    if not 0.0 < options.val_fraction < 1.0:
        raise DataError(f"val_fraction must lie in (0, 1), got {options.val_fraction}.")
    if not 0.0 <= options.test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in [0, 1), got {options.test_fraction}.")
    if options.val_fraction + options.test_fraction >= 1.0:
        raise DataError(
            f"val_fraction + test_fraction is {options.val_fraction + options.test_fraction}, "
            "which leaves no training data; make their sum less than 1."
        )
    for name in ("max_train", "max_val", "max_test"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise DataError(f"{name} must be a positive number of samples or None, got {value}.")
    if options.num_classes is not None and options.num_classes < 1:
        raise DataError(f"num_classes must be at least 1 or None, got {options.num_classes}.")


def _check_targets(source: _RawSource, expected_classes: int | None, spec: str) -> int:
    """Return the number of classes after checking the label range; raise DataError if out of range."""
    labels = source.targets
    if source.task == "segmentation":
        labels = labels[labels != _IGNORE_INDEX]
    if labels.numel() == 0:
        raise DataError(f"Data source {spec!r} has no labelled samples or pixels.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"Data source {spec!r} has the negative label {low}; labels must be class indices from 0.")
    if expected_classes is None:
        return high + 1
    if high >= expected_classes:
        raise DataError(
            f"Data source {spec!r} has the label {high}, but num_classes is {expected_classes} "
            f"so labels must lie in [0, {expected_classes - 1}]."
        )
    return expected_classes


# ---------------------------------------------------------------------------------------------
# Sources


def _read_source(spec: str, channels: int) -> _RawSource:
    prefix, _, argument = spec.partition(":")
    if prefix == "digits" and not argument:
        return _read_digits()
    if prefix in ("mnist", "imagefolder", "npz") and argument:
        path = Path(argument).expanduser()
        if prefix == "mnist":
            return _read_mnist(path)
        if prefix == "imagefolder":
            return _read_image_folder(path, channels)
        return _read_npz(path)
    raise DataError(
        f"Unknown data spec {spec!r}; expected one of {', '.join(DATA_SPEC_PREFIXES)}."
    )


def _read_digits() -> _RawSource:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32)).unsqueeze(1)
    targets = torch.from_numpy(digits.target.astype(np.int64))
    return _RawSource(images, targets, "classification")


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            payload = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"Could not read the idx file {path}: {error}.") from error

    # Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian
    # uint32 per dimension.
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not a valid idx file because its first 4 bytes {payload[:4].hex()} are not an idx magic number.")
    ndim = payload[3]
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise DataError(f"{path} is truncated: its header declares {ndim} dimensions but the file ends early.")
    shape = tuple(int(d) for d in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[payload[2]])
    expected_bytes = header_size + math.prod(shape) * dtype.itemsize
    if len(payload) != expected_bytes:
        raise DataError(
            f"{path} has {len(payload)} bytes but its header (shape {shape}, {dtype}) implies "
            f"{expected_bytes}; the file is truncated or corrupt."
        )
    return np.frombuffer(payload, dtype=dtype, offset=header_size).reshape(shape)


def _find_idx(directory: Path, split: str, kind: str) -> Path | None:
    """Return the idx file of one MNIST split and kind (``images``/``labels``), or None."""
    suffix = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
    for separator in ("-", "."):
        for extension in ("", ".gz"):
            candidate = directory / f"{split}-{kind}{separator}{suffix}{extension}"
            if candidate.is_file():
                return candidate
    return None


def _read_mnist_pair(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    images_path = _find_idx(directory, split, "images")
    labels_path = _find_idx(directory, split, "labels")
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        found = images_path if labels_path is None else labels_path
        missing = "labels" if labels_path is None else "images"
        raise DataError(
            f"Found {found} but no matching {split}-{missing} idx file in {directory}; "
            "add it or remove the other file."
        )
    images = _read_idx(images_path)
    labels = _read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path} has shape {images.shape}; expected (N, H, W) images.")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path} has shape {labels.shape}; expected ({images.shape[0]},), one label "
            f"per image in {images_path.name}."
        )
    return images, labels


def _read_mnist(directory: Path) -> _RawSource:
    if not directory.is_dir():
        raise DataError(f"MNIST directory {directory} does not exist; pass mnist:DIR with the idx files.")
    train = _read_mnist_pair(directory, "train")
    test = _read_mnist_pair(directory, "t10k")
    if train is None and test is None:
        raise DataError(
            f"No MNIST idx files in {directory}; expected t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz], optionally with the train-* files."
        )

    parts = [part for part in (train, test) if part is not None]
    images = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    # With both files, the t10k images come after the training images and form the test split.
    test_indices = None
    if train is not None and test is not None:
        test_indices = np.arange(train[0].shape[0], images.shape[0])
    return _RawSource(
        torch.from_numpy(images.astype(np.float32)).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        "classification",
        test_indices,
    )


def _read_image_folder(root: Path, channels: int) -> _RawSource:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist; pass imagefolder:DIR with one subfolder per class.")
    try:
        folder = ImageFolder(str(root))
    except FileNotFoundError as error:
        raise DataError(f"Image folder {root} has no class subfolders with images: {error}") from error

    # Images may differ in size, so each one is read at its own size and resized later on its own.
    # NOTE: every image is decoded and kept in memory, even when max_train and the other limits
    # keep only a few, so a large folder is slow to load and needs memory for all of it.
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path, _ in folder.samples:
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert(mode), dtype=np.float32)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"Could not read the image {path}: {error}.") from error
        tensor = torch.from_numpy(array)
        tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
        images.append(tensor)
    targets = torch.tensor(folder.targets, dtype=torch.int64)
    return _RawSource(_ImageList(images), targets, "classification")


class _ImageList:
    """Images of different sizes, indexable like a tensor by an index array."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: np.ndarray) -> "_ImageList":
        return _ImageList([self.images[int(i)] for i in indices])


def _read_npz(path: Path) -> _RawSource:
    if not path.is_file():
        raise DataError(f"NumPy archive {path} does not exist; pass npz:FILE with arrays x and y (or masks).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"Could not read the NumPy archive {path}: {error}.") from error

    if "x" not in arrays or ("y" in arrays) == ("masks" in arrays):
        raise DataError(
            f"{path} contains the arrays {sorted(arrays)}; expected x with exactly one of y "
            "(class labels) or masks (segmentation)."
        )
    images = _images_to_nchw(arrays["x"], path)
    task = "classification" if "y" in arrays else "segmentation"
    targets = arrays["y"] if task == "classification" else arrays["masks"]

    if not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"{path}: {'y' if task == 'classification' else 'masks'} has dtype {targets.dtype}; expected integers.")
    if task == "classification" and targets.shape != (images.shape[0],):
        raise DataError(f"{path}: y has shape {targets.shape}; expected ({images.shape[0]},), one label per image.")
    expected_masks = (images.shape[0], images.shape[2], images.shape[3])
    if task == "segmentation" and targets.shape != expected_masks:
        raise DataError(f"{path}: masks has shape {targets.shape}; expected {expected_masks}, one mask per image.")
    return _RawSource(images, torch.from_numpy(targets.astype(np.int64)), task)


def _images_to_nchw(x: np.ndarray, path: Path) -> torch.Tensor:
    """Return x as float32 (N, C, H, W).

    x may be (N, H, W), (N, C, H, W) or (N, H, W, C), with C = 1 or 3.
    """
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected integer or floating-point pixels.")
    images = torch.from_numpy(x.astype(np.float32))
    if images.dim() == 3:
        return images.unsqueeze(1)
    if images.dim() == 4 and images.shape[1] in (1, 3):
        return images
    if images.dim() == 4 and images.shape[3] in (1, 3):
        return images.permute(0, 3, 1, 2).contiguous()
    raise DataError(
        f"{path}: x has shape {tuple(x.shape)}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3."
    )


# ---------------------------------------------------------------------------------------------
# Splitting


def _split(
    source: _RawSource, options: DataOptions, rng: np.random.Generator, spec: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return train, validation and test indices, each sorted, disjoint, and within the size limits."""
    total = len(source.targets)
    stratify_by = source.targets.numpy() if source.task == "classification" else None

    if source.test_indices is not None:
        test_idx = source.test_indices
        pool = np.setdiff1d(np.arange(total), test_idx)
        # The source's own test set is not part of the fractions, so the validation
        # split takes val_fraction of the remaining samples alone.
        val_size = round(options.val_fraction * len(pool))
    else:
        pool = np.arange(total)
        test_size = round(options.test_fraction * total)
        test_idx, pool = _choose(pool, stratify_by, test_size, rng)
        val_size = round(options.val_fraction * total)
    val_idx, train_idx = _choose(pool, stratify_by, val_size, rng)

    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DataError(
            f"Data source {spec!r} has {total} samples, too few for non-empty training and "
            f"validation splits with val_fraction={options.val_fraction} and "
            f"test_fraction={options.test_fraction}; use a larger source or other fractions."
        )

    limited = []
    for indices, limit in ((train_idx, options.max_train), (val_idx, options.max_val), (test_idx, options.max_test)):
        if limit is not None and limit < len(indices):
            indices, _ = _choose(indices, stratify_by, limit, rng)
        limited.append(np.sort(indices))
    return limited[0], limited[1], limited[2]


def _choose(
    indices: np.ndarray, labels: np.ndarray | None, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into a random subset of exactly ``size`` and the rest.

    With labels, the subset is stratified: each class gets its proportional share, rounded
    down, and the samples still missing go to the classes with the largest remainders.
    """
    if labels is None:
        permuted = rng.permutation(indices)
        return permuted[:size], permuted[size:]

    subset_labels = labels[indices]
    classes, counts = np.unique(subset_labels, return_counts=True)
    quotas = counts * size / len(indices)
    shares = np.floor(quotas).astype(np.int64)
    # Largest remainder first; the stable sort breaks ties by class order.
    by_remainder = np.argsort(-(quotas - shares), kind="stable")
    shares[by_remainder[: size - int(shares.sum())]] += 1

    chosen, rest = [], []
    for label, share in zip(classes, shares):
        members = rng.permutation(indices[subset_labels == label])
        chosen.append(members[:share])
        rest.append(members[share:])
    return np.concatenate(chosen), np.concatenate(rest)


# ---------------------------------------------------------------------------------------------
# Channels, resizing and normalization


def _match_channels(images: torch.Tensor | _ImageList, channels: int, spec: str) -> torch.Tensor | _ImageList:
    """Give images ``channels`` channels: gray to RGB by repetition, RGB to gray by luma weights."""
    if isinstance(images, _ImageList):
        return _ImageList([_match_channels(image.unsqueeze(0), channels, spec)[0] for image in images.images])
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA_WEIGHTS, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise DataError(
        f"Data source {spec!r} has {have}-channel images but the models expect {channels} channels; "
        "only 1 to C and 3 to 1 channel conversions are supported."
    )


def _resize_images(images: torch.Tensor | _ImageList, channels: int, height: int, width: int) -> torch.Tensor:
    """Resize to (height, width) with bilinear interpolation (antialiased when shrinking)."""
    if len(images) == 0:
        return torch.empty(0, channels, height, width)
    if isinstance(images, _ImageList):
        return torch.cat([_resize_images(image.unsqueeze(0), channels, height, width) for image in images.images])
    if images.shape[2:] == (height, width):
        return images.contiguous()

    chunks = []
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK]
        chunks.append(F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(chunks)


def _resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize integer masks (N, H, W) with nearest-neighbour interpolation, so labels stay labels."""
    if masks.shape[1:] == (height, width):
        return masks
    resized = F.interpolate(masks.unsqueeze(1).to(torch.float32), size=(height, width), mode="nearest-exact")
    return resized.squeeze(1).to(torch.int64)


def _channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-channel mean and standard deviation; a constant channel gets std 1."""
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).to(torch.float64)
    mean = pixels.mean(dim=1)
    std = pixels.std(dim=1, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean, std


def _normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (images - mean.to(torch.float32).view(shape)) / std.to(torch.float32).view(shape)
