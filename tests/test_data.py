"""Data sources: round trips through files written here, the shared MNIST files, splits, errors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from stitchc.errors import DataError
from stitchc.runtime.data import DataOptions, load_data

SHARED_MNIST = Path("/work/shared/data/mnist")


def _denormalize(splits, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return images * std + mean


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx header: two zero bytes, dtype code 0x08 (uint8), ndim, then big-endian uint32 dims.
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _mnist_like(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 6, 6), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    return images, labels


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_and_disjoint():
    splits = load_data("digits", (1, 8, 8))
    # 1,797 samples: test round(0.2 * 1797) = 359, validation 359, training the other 1,079.
    assert len(splits.train) == 1079
    assert len(splits.val) == 359
    assert len(splits.test) == 359
    indices = [set(splits.train_indices), set(splits.val_indices), set(splits.test_indices)]
    assert not indices[0] & indices[1]
    assert not indices[0] & indices[2]
    assert not indices[1] & indices[2]
    assert indices[0] | indices[1] | indices[2] == set(range(1797))
    assert splits.task == "classification"
    assert splits.num_classes == 10


def test_digits_round_trip_at_native_size():
    digits = load_digits()
    splits = load_data("digits", (1, 8, 8))
    images, labels = splits.val.tensors

    expected = torch.from_numpy(digits.images[splits.val_indices]).unsqueeze(1).to(torch.float32)
    assert torch.allclose(_denormalize(splits, images), expected, atol=1e-4)
    assert torch.equal(labels, torch.from_numpy(digits.target[splits.val_indices]))
    assert labels.dtype == torch.int64
    assert images.dtype == torch.float32


def test_digits_normalized_with_training_statistics():
    splits = load_data("digits", (3, 12, 12))
    train_images = splits.train.tensors[0]

    assert train_images.shape == (1079, 3, 12, 12)
    assert torch.allclose(train_images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_images.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    # Gray to RGB repeats the one channel.
    assert torch.equal(train_images[:, 0], train_images[:, 2])
    assert splits.mean[0] == splits.mean[1] == splits.mean[2]


def test_digits_same_seed_same_splits():
    first = load_data("digits", (1, 8, 8), DataOptions(seed=3))
    second = load_data("digits", (1, 8, 8), DataOptions(seed=3))
    other = load_data("digits", (1, 8, 8), DataOptions(seed=4))

    assert np.array_equal(first.val_indices, second.val_indices)
    assert torch.equal(first.val.tensors[0], second.val.tensors[0])
    assert not np.array_equal(first.val_indices, other.val_indices)


def test_digits_sizes_follow_options():
    options = DataOptions(val_fraction=0.1, test_fraction=0.3, max_train=100, max_val=50, max_test=20, seed=1)
    splits = load_data("digits", (1, 8, 8), options)

    assert len(splits.train) == 100
    assert len(splits.val) == 50
    assert len(splits.test) == 20
    # A stratified draw of 100 from 10 near-equal classes gives each class 10.
    assert torch.bincount(splits.train.tensors[1]).tolist() == [10] * 10


def test_digits_validation_is_stratified():
    splits = load_data("digits", (1, 8, 8))
    counts = torch.bincount(splits.val.tensors[1], minlength=10)
    # 359 of 1,797 is about 20 % of each class (174 to 183 members), so 35 or 36 per class.
    assert counts.min() >= 35
    assert counts.max() <= 36
    assert int(counts.sum()) == 359


def test_zero_test_fraction_gives_empty_test():
    splits = load_data("digits", (1, 8, 8), DataOptions(test_fraction=0.0))
    assert len(splits.test) == 0
    assert splits.test.tensors[0].shape == (0, 1, 8, 8)
    assert len(splits.train) + len(splits.val) == 1797


# ---------------------------------------------------------------------------------------------
# MNIST idx files


@pytest.mark.parametrize("extension", ["", ".gz"])
def test_mnist_t10k_only_round_trip(tmp_path, extension):
    images, labels = _mnist_like(50, seed=0)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{extension}", images)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{extension}", labels)

    splits = load_data(f"mnist:{tmp_path}", (1, 6, 6))
    # 50 samples: 10 test, 10 validation, 30 training, all drawn from the t10k files.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    restored = _denormalize(splits, splits.train.tensors[0])
    expected = torch.from_numpy(images[splits.train_indices]).unsqueeze(1).to(torch.float32)
    assert torch.allclose(restored, expected, atol=1e-3)
    assert torch.equal(splits.train.tensors[1], torch.from_numpy(labels[splits.train_indices]).to(torch.int64))


def test_mnist_train_files_keep_t10k_as_test(tmp_path):
    train_images, train_labels = _mnist_like(40, seed=1)
    test_images, test_labels = _mnist_like(20, seed=2)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test_images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", test_labels)

    splits = load_data(f"mnist:{tmp_path}", (1, 6, 6), DataOptions(val_fraction=0.25))
    # The test split is exactly the 20 t10k images (positions 40..59); validation takes 25 % of the 40.
    assert splits.test_indices.tolist() == list(range(40, 60))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    restored = _denormalize(splits, splits.test.tensors[0])
    assert torch.allclose(restored, torch.from_numpy(test_images).unsqueeze(1).to(torch.float32), atol=1e-3)


def test_mnist_resized_to_input_size(tmp_path):
    images, labels = _mnist_like(20, seed=0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)

    splits = load_data(f"mnist:{tmp_path}", (1, 3, 12, 12))
    assert splits.train.tensors[0].shape == (12, 3, 12, 12)


def test_shared_mnist_loads_all_test_images():
    assert SHARED_MNIST.is_dir(), f"the shared MNIST files are missing from {SHARED_MNIST}"
    splits = load_data(f"mnist:{SHARED_MNIST}", (1, 28, 28))

    assert len(splits.train) + len(splits.val) + len(splits.test) == 10_000
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6000, 2000, 2000)
    labels = torch.cat([splits.train.tensors[1], splits.val.tensors[1], splits.test.tensors[1]])
    # Class counts of the MNIST test set (the t10k files).
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------------------------
# ImageFolder


def _write_image_folder(root: Path) -> dict[str, tuple[int, int, int]]:
    colors = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}
    for index, (name, color) in enumerate(colors.items()):
        (root / name).mkdir(parents=True)
        for copy in range(5):
            # Different sizes per image; solid colours stay solid after resizing.
            size = (5 + copy + index, 7 + copy)
            Image.new("RGB", size, color).save(root / name / f"{copy}.png")
    return colors


def test_image_folder_round_trip(tmp_path):
    colors = _write_image_folder(tmp_path)
    splits = load_data(f"imagefolder:{tmp_path}", (3, 4, 4), DataOptions(val_fraction=0.2, test_fraction=0.2))

    assert splits.num_classes == 3
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    images, labels = splits.train.tensors
    restored = _denormalize(splits, images)
    for image, label in zip(restored, labels):
        expected = torch.tensor(list(colors.values())[label], dtype=torch.float32).view(3, 1, 1).expand(3, 4, 4)
        assert torch.allclose(image, expected, atol=1e-3)


def test_image_folder_to_one_channel(tmp_path):
    _write_image_folder(tmp_path)
    splits = load_data(f"imagefolder:{tmp_path}", (1, 4, 4))
    images, labels = splits.val.tensors
    restored = _denormalize(splits, images)

    assert images.shape[1] == 1
    # PIL's "L" conversion: L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
    # cat (200, 10, 10): 59.8 + 5.87 + 1.14 = 66.81 -> 67.
    for image, label in zip(restored, labels):
        if label == 0:
            assert torch.allclose(image, torch.full((1, 4, 4), 67.0), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# npz


def test_npz_classification_channels_last(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((20, 5, 5, 3)).astype(np.float32)
    y = np.arange(20) % 4
    np.savez(tmp_path / "data.npz", x=x, y=y)

    splits = load_data(f"npz:{tmp_path / 'data.npz'}", (3, 5, 5))
    restored = _denormalize(splits, splits.test.tensors[0])
    expected = torch.from_numpy(x[splits.test_indices]).permute(0, 3, 1, 2)
    assert torch.allclose(restored, expected, atol=1e-5)
    assert splits.num_classes == 4
    assert torch.equal(splits.test.tensors[1], torch.from_numpy(y[splits.test_indices]))


def test_npz_segmentation_masks_resized_nearest(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 4, 4)).astype(np.float32)
    masks = rng.integers(0, 3, size=(10, 4, 4))
    masks[:, 0, 0] = 255
    np.savez(tmp_path / "seg.npz", x=x, masks=masks)

    splits = load_data(f"npz:{tmp_path / 'seg.npz'}", (1, 8, 8))
    images, resized = splits.train.tensors
    assert splits.task == "segmentation"
    assert splits.num_classes == 3
    assert images.shape == (len(splits.train_indices), 1, 8, 8)
    # Doubling with nearest neighbours repeats every mask pixel as a 2x2 block, 255 included.
    original = torch.from_numpy(masks[splits.train_indices])
    assert torch.equal(resized, original.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
    assert resized.dtype == torch.int64


# ---------------------------------------------------------------------------------------------
# Errors


def test_unknown_prefix_lists_accepted():
    with pytest.raises(DataError, match=r"Unknown data spec 'cifar:x'.*digits, mnist:DIR, imagefolder:DIR, npz:FILE"):
        load_data("cifar:x", (1, 8, 8))


def test_prefix_without_path_rejected():
    with pytest.raises(DataError, match="Unknown data spec 'mnist'"):
        load_data("mnist", (1, 8, 8))


def test_missing_paths_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"MNIST directory {missing} does not exist"):
        load_data(f"mnist:{missing}", (1, 8, 8))
    with pytest.raises(DataError, match=f"Image folder {missing} does not exist"):
        load_data(f"imagefolder:{missing}", (1, 8, 8))
    with pytest.raises(DataError, match=f"NumPy archive {missing}.npz does not exist"):
        load_data(f"npz:{missing}.npz", (1, 8, 8))


def test_empty_mnist_directory_rejected(tmp_path):
    with pytest.raises(DataError, match="No MNIST idx files"):
        load_data(f"mnist:{tmp_path}", (1, 8, 8))


def test_idx_bad_magic_rejected(tmp_path):
    images, labels = _mnist_like(10, seed=0)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + images.tobytes())
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is not a valid idx file"):
        load_data(f"mnist:{tmp_path}", (1, 6, 6))


def test_idx_truncated_rejected(tmp_path):
    images, labels = _mnist_like(10, seed=0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"has 369 bytes but its header .* implies 376"):
        load_data(f"mnist:{tmp_path}", (1, 6, 6))


def test_idx_label_count_mismatch_rejected(tmp_path):
    images, labels = _mnist_like(10, seed=0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:9])
    with pytest.raises(DataError, match=r"has shape \(9,\); expected \(10,\)"):
        load_data(f"mnist:{tmp_path}", (1, 6, 6))


def test_idx_missing_labels_rejected(tmp_path):
    images, _ = _mnist_like(10, seed=0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    with pytest.raises(DataError, match="no matching t10k-labels idx file"):
        load_data(f"mnist:{tmp_path}", (1, 6, 6))


def test_npz_missing_arrays_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 3, 3)), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match=r"contains the arrays \['images', 'y'\]; expected x"):
        load_data(f"npz:{tmp_path / 'bad.npz'}", (1, 3, 3))


def test_npz_wrong_image_shape_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2, 3, 5)), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(DataError, match=r"x has shape \(4, 2, 3, 5\); expected"):
        load_data(f"npz:{tmp_path / 'bad.npz'}", (1, 3, 3))


def test_npz_label_length_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 3)), y=np.zeros(5, dtype=np.int64))
    with pytest.raises(DataError, match=r"y has shape \(5,\); expected \(4,\)"):
        load_data(f"npz:{tmp_path / 'bad.npz'}", (1, 3, 3))


def test_npz_float_labels_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 3)), y=np.zeros(4, dtype=np.float32))
    with pytest.raises(DataError, match="y has dtype float32; expected integers"):
        load_data(f"npz:{tmp_path / 'bad.npz'}", (1, 3, 3))


def test_labels_beyond_num_classes_rejected(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((10, 3, 3)), y=np.arange(10) % 5)
    with pytest.raises(DataError, match=r"has the label 4, but num_classes is 3"):
        load_data(f"npz:{tmp_path / 'data.npz'}", (1, 3, 3), DataOptions(num_classes=3))


def test_negative_labels_rejected(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((10, 3, 3)), y=np.arange(10) - 1)
    with pytest.raises(DataError, match="negative label -1"):
        load_data(f"npz:{tmp_path / 'data.npz'}", (1, 3, 3))


def test_channel_mismatch_rejected(tmp_path):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((10, 3, 3, 3)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="has 3-channel images but the models expect 2 channels"):
        load_data(f"npz:{tmp_path / 'rgb.npz'}", (2, 3, 3))


def test_bad_input_shape_rejected():
    with pytest.raises(DataError, match=r"Input shape \(8, 8\) is not an image shape"):
        load_data("digits", (8, 8))


def test_bad_fractions_rejected():
    with pytest.raises(DataError, match="val_fraction \\+ test_fraction is 1.0"):
        load_data("digits", (1, 8, 8), DataOptions(val_fraction=0.5, test_fraction=0.5))
    with pytest.raises(DataError, match="val_fraction must lie in"):
        load_data("digits", (1, 8, 8), DataOptions(val_fraction=0.0))


def test_too_few_samples_rejected(tmp_path):
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 3, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="has 2 samples, too few"):
        load_data(f"npz:{tmp_path / 'two.npz'}", (1, 3, 3))
