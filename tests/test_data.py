"""Datasets and splits: deterministic, stratified, fingerprinted; CIFAR read from the real file format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from eebench.data import Augmentation, channel_stats, get_splits, iterate_batches
from eebench.data.digits import load_digits
from eebench.data.synthetic import load_synthetic
from eebench.errors import ConfigError, DataError
from eebench.registry import UnknownNameError


@pytest.fixture(scope="module")
def digits():
    return get_splits("digits", seed=0)


def test_splits_are_disjoint_cover_everything_and_are_stratified(digits):
    ids = [set(digits.split(s).ids.tolist()) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(1797))
    labels = load_digits().labels
    for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        split = digits.split(name)
        assert torch.equal(split.y, torch.from_numpy(labels[split.ids]))
        for c in range(10):
            expected = frac * np.sum(labels == c)
            assert abs(int((split.y == c).sum()) - expected) <= 1.0, (name, c)


def test_splits_are_reproducible_and_seed_dependent(digits):
    again = get_splits("digits", seed=0)
    other = get_splits("digits", seed=1)
    assert again.fingerprint == digits.fingerprint
    for s in ("train", "val", "test"):
        assert np.array_equal(again.split(s).ids, digits.split(s).ids)
        assert torch.equal(again.split(s).x, digits.split(s).x)
        assert again.split(s).fingerprint == digits.split(s).fingerprint
    assert other.fingerprint != digits.fingerprint
    assert not np.array_equal(other.test.ids, digits.test.ids)


@pytest.mark.parametrize(
    "options",
    [
        {"size": 16},
        {"normalize": False},
        {"augment": True},
        {"val_fraction": 0.25},
        {"channels": 3},
        {"limit": 900},
    ],
)
def test_fingerprint_changes_when_preprocessing_changes(digits, options):
    changed = get_splits("digits", seed=0, **options)
    assert changed.fingerprint != digits.fingerprint
    assert changed.test.fingerprint != digits.test.fingerprint


def test_normalisation_statistics_come_from_train_only(digits):
    raw = load_digits()
    mean, std = channel_stats(raw.images[digits.train.ids])
    assert digits.normalization == {
        "mean": pytest.approx(list(mean)),
        "std": pytest.approx(list(std)),
    }
    expected_test = (raw.images[digits.test.ids] - mean[0]) / std[0]
    assert torch.allclose(
        digits.test.x, torch.from_numpy(expected_test.astype(np.float32)), atol=1e-5
    )
    # stats of everything would differ from stats of train
    assert not np.allclose(channel_stats(raw.images)[0], mean, rtol=0, atol=1e-9)


def test_digits_resize_and_no_flip_augmentation():
    s16 = get_splits("digits", size=16)
    assert s16.input_shape == (1, 16, 16) and s16.train.x.shape[1:] == (1, 16, 16)
    assert s16.augmentation is None  # off by default for digits
    aug = get_splits("digits", augment=True).augmentation
    assert aug is not None and aug.hflip is False and aug.crop_padding >= 1
    with pytest.raises(ConfigError, match="size"):
        get_splits("digits", size=4)


def test_augmentation_is_a_seeded_crop_and_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    aug = Augmentation(crop_padding=1, hflip=True)
    a = aug.apply(x, torch.Generator().manual_seed(3))
    b = aug.apply(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):  # every output is some crop of the padded input, possibly flipped
        crops = [padded[i, :, r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(a[i], cr) or torch.equal(a[i], cr.flip(-1)) for cr in crops)
    assert torch.equal(Augmentation(crop_padding=0, hflip=False).apply(x), x)
    with pytest.raises(ConfigError, match="crop_padding"):
        Augmentation(crop_padding=-1)


def test_loader_shuffles_by_generator_and_only_augments_when_asked(digits):
    def order(seed):
        return torch.cat(
            [
                y
                for _, y in iterate_batches(
                    digits.val, 100, shuffle=True, generator=torch.Generator().manual_seed(seed)
                )
            ]
        )

    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))
    plain = torch.cat([x for x, _ in iterate_batches(digits.val, 100)])
    assert torch.equal(plain, digits.val.x)


def test_unknown_dataset_and_option_get_suggestions():
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        get_splits("digit")
    with pytest.raises(ConfigError, match="Did you mean 'size'"):
        get_splits("digits", sise=16)
    with pytest.raises(ConfigError, match="below 1"):
        get_splits("digits", val_fraction=0.5, test_fraction=0.5)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_by_seed_and_stores_difficulty():
    a = load_synthetic(num_classes=4, samples_per_class=30, size=12, levels=3)
    b = load_synthetic(num_classes=4, samples_per_class=30, size=12, levels=3)
    c = load_synthetic(num_classes=4, samples_per_class=30, size=12, levels=3, data_seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (120, 1, 12, 12) and a.images.min() >= 0 and a.images.max() <= 1
    d = a.meta["difficulty"]
    assert set(np.unique(d)) == {0, 1, 2}
    # harder levels have less contrast, more noise, more occlusion
    for key, sign in (("contrast", -1), ("noise", 1), ("occlusion", 1)):
        means = [a.meta[key][d == level].mean() for level in range(3)]
        assert all(sign * (means[i + 1] - means[i]) > 0 for i in range(2)), key


def test_synthetic_splits_carry_difficulty_per_sample():
    s = get_splits("synthetic", num_classes=3, samples_per_class=20, size=10, channels=3)
    raw = load_synthetic(num_classes=3, samples_per_class=20, size=10, channels=3)
    assert s.input_shape == (3, 10, 10) and s.num_classes == 3
    for name in ("train", "val", "test"):
        split = s.split(name)
        assert np.array_equal(split.meta["difficulty"], raw.meta["difficulty"][split.ids])
    with pytest.raises(ConfigError, match="num_classes"):
        load_synthetic(num_classes=99)


def test_synthetic_hard_samples_are_harder_than_easy_ones():
    """A nearest-class-mean classifier does much better on level 0 than on the last level."""
    raw = load_synthetic(num_classes=4, samples_per_class=150, size=12, levels=4)
    x = raw.images.reshape(len(raw), -1)
    d = raw.meta["difficulty"]
    means = np.stack([x[(raw.labels == k) & (d == 0)].mean(0) for k in range(4)])
    pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    acc = [np.mean(pred[d == level] == raw.labels[d == level]) for level in (0, 3)]
    assert acc[0] > acc[1] + 0.2


# ----------------------------------------------------------------------------- CIFAR
def _write_pickle(path: Path, obj) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(folder: Path, per_batch: int = 20, test: int = 20) -> np.ndarray:
    """A tiny CIFAR-10 in the real python format; returns the test images as (N, 3, 32, 32)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(per_batch) % 10]
        _write_pickle(
            folder / f"data_batch_{i}",
            {
                b"batch_label": b"training batch",
                b"labels": labels,
                b"data": data,
                b"filenames": [b"x.png"] * per_batch,
            },
        )
    data = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    data[0, :1024] = 255  # first test image: red plane saturated, green and blue black
    data[0, 1024:] = 0
    _write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch",
            b"data": data,
            b"labels": [int(v) for v in np.arange(test) % 10],
        },
    )
    names = [
        n.encode()
        for n in (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        )
    ]
    _write_pickle(
        folder / "batches.meta",
        {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
    )
    return data.reshape(-1, 3, 32, 32)


def test_cifar10_reader_on_a_tiny_fixture_in_the_real_format(tmp_path):
    test_images = _write_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent or the folder itself
        s = get_splits("cifar10", root=str(root), reader="pickle")
        assert (
            s.input_shape == (3, 32, 32) and s.num_classes == 10 and s.class_names[0] == "airplane"
        )
        assert len(s.test) == 20 and len(s.train) + len(s.val) == 100
        assert len(s.val) == 10  # 0.1 of the official train split, stratified
        assert set(s.test.ids.tolist()) == set(range(100, 120))  # the official test split
        mean, std = (np.array(s.normalization[k]) for k in ("mean", "std"))
        first = s.test.x[0].numpy() * std[:, None, None] + mean[:, None, None]
        assert np.allclose(first, test_images[0] / 255.0, atol=1e-5)
        assert first[0].min() > 0.99 and first[1:].max() < 0.01  # channel order R, G, B
        assert s.augmentation == Augmentation(crop_padding=4, hflip=True)
    with pytest.raises(ConfigError, match="test_fraction"):
        get_splits("cifar10", root=str(tmp_path), test_fraction=0.2)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 200), ("test", 40)):
        fine = [int(v) for v in np.arange(n) % 100]
        _write_pickle(
            folder / name,
            {
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"fine_labels": fine,
                b"coarse_labels": [v // 5 for v in fine],
            },
        )
    _write_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
        },
    )
    fine = get_splits("cifar100", root=str(tmp_path), val_fraction=0.0 + 0.5)
    coarse = get_splits("cifar100", root=str(tmp_path), labels="coarse", val_fraction=0.5)
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert torch.equal(coarse.test.y, torch.div(fine.test.y, 5, rounding_mode="floor"))
    assert fine.fingerprint != coarse.fingerprint


def test_missing_cifar_folder_says_where_it_looked_and_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as err:
        get_splits("cifar10", root=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-10-batches-py" in msg
    assert "data_batch_1" in msg and "cifar-10-python.tar.gz" in msg and "root=" in msg


def test_incomplete_or_malformed_cifar_files_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"incomplete: missing data_batch_3"):
        get_splits("cifar10", root=str(tmp_path))
    _write_pickle(
        folder / "data_batch_3", {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0] * 4}
    )
    with pytest.raises(DataError, match=r"data_batch_3'.*shape \(N, 3072\)"):
        get_splits("cifar10", root=str(tmp_path), reader="pickle")
    (folder / "data_batch_3").write_bytes(
        b"\x80\x02c__builtin__\neval\n."
    )  # a pickle that would run code
    with pytest.raises(DataError, match="refusing to unpickle"):
        get_splits("cifar10", root=str(tmp_path), reader="pickle")


# ----------------------------------------------------------------------------- imagefolder
def test_imagefolder_reads_a_class_per_folder_tree(tmp_path):
    from PIL import Image

    for k, colour in enumerate(((255, 0, 0), (0, 0, 255))):
        (tmp_path / f"class{k}").mkdir()
        for i in range(10):
            Image.new("RGB", (12, 9), colour).save(tmp_path / f"class{k}" / f"{i}.png")
    s = get_splits("imagefolder", root=str(tmp_path), size=8)
    assert s.input_shape == (3, 8, 8) and s.class_names == ["class0", "class1"]
    assert sum(len(s.split(n)) for n in ("train", "val", "test")) == 20
    assert all(p.startswith(f"class{int(y)}/") for p, y in zip(s.train.meta["path"], s.train.y))
    with pytest.raises(DataError, match="needs root=PATH"):
        get_splits("imagefolder")
    with pytest.raises(DataError, match="is not a folder"):
        get_splits("imagefolder", root=str(tmp_path / "missing"))
