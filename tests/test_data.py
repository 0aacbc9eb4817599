"""Datasets: synthetic generators, Dataset.split and standardisation, CSV loading and preprocessing.

Expected values are computed independently (the csv module, numpy by hand, hand-made
files), never taken from the code under test.
"""

from __future__ import annotations

import csv as csv_module
from pathlib import Path

import numpy as np
import pytest

import recourse_ray as rr
from recourse_ray.data import Dataset, load, tabular
from recourse_ray.data.tabular import load_csv

SYNTHETIC = ("overlapping", "linearly_separable", "circles", "moons", "blobs")
TABULAR = ("california_housing", "credit_default", "gmsc", "german_credit")
requires_tabular_data = pytest.mark.tabular_data


# ---------------------------------------------------------------------------------------
# Synthetic datasets


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shape_dtype_balance(name):
    data = load(name, seed=0)
    assert isinstance(data, Dataset)
    assert data.X.shape == (1000, 2)
    assert data.X.dtype == np.float32
    assert data.y.shape == (1000,)
    assert set(np.unique(data.y).tolist()) == {0, 1}
    assert np.bincount(data.y).tolist() == [500, 500]
    assert np.isfinite(data.X).all()
    assert data.name == name
    assert data.standardize is False  # the study does not z-score the 2-D sets


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_deterministic_per_seed_and_different_across_seeds(name):
    a, b, c = load(name, seed=3), load(name, seed=3), load(name, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_n_samples_and_odd_row(name):
    data = load(name, seed=0, n_samples=101)
    assert data.X.shape == (101, 2)
    assert np.bincount(data.y).tolist() == [50, 51]


@pytest.mark.parametrize(("name", "std"), [("overlapping", 0.5), ("linearly_separable", 0.1)])
def test_blob_spread_and_centres(name, std):
    data = load(name, seed=1)
    for label in (0, 1):
        points = data.X[data.y == label].astype(np.float64)
        per_axis_std = points.std(axis=0, ddof=1)
        # 500 points: the sample std is within ~3% of the truth with overwhelming probability.
        np.testing.assert_allclose(per_axis_std, std, rtol=0.1)
        centre = points.mean(axis=0)
        assert np.all(np.abs(centre) <= 2.0 + 4 * std / np.sqrt(500))


def test_linearly_separable_classes_are_far_apart_relative_to_spread():
    data = load("linearly_separable", seed=0)
    m0, m1 = (data.X[data.y == c].mean(axis=0) for c in (0, 1))
    # Not a guarantee for every seed (centres are random), but for this one the
    # centres are several stds apart, so a midpoint hyperplane separates the classes.
    gap = np.linalg.norm(m1 - m0)
    assert gap > 10 * 0.1
    w = m1 - m0
    scores = (data.X - (m0 + m1) / 2) @ w
    assert np.all((scores > 0) == (data.y == 1))


def _ks_distance_to_uniform(values: np.ndarray, low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance between the sample and U(low, high), by hand."""
    u = np.sort((values - low) / (high - low))
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


def _ks_critical(n: int) -> float:
    return 1.63 / np.sqrt(n)  # the 1% level of the one-sample KS test


def test_blob_centres_are_uniform_in_the_box():
    # With a tiny std every point sits on its centre, so the class means are the drawn centres.
    draws = [rr.data.synthetic.blobs(20, seed=s, std=1e-9) for s in range(200)]
    centres = np.array([d.X[d.y == c].mean(axis=0) for d in draws for c in (0, 1)], dtype=np.float64)
    assert centres.min() >= -2.0 and centres.max() <= 2.0
    for axis in (0, 1):
        assert _ks_distance_to_uniform(centres[:, axis], -2.0, 2.0) < _ks_critical(len(centres))
    shifted = rr.data.synthetic.blobs(50, seed=0, std=1e-9, n_features=3, center_box=(5.0, 6.0))
    assert shifted.X.shape == (50, 3) and shifted.X.min() >= 5.0 and shifted.X.max() <= 6.0


def test_circles_outer_ring_is_the_target_class_without_noise():
    data = rr.data.synthetic.circles(201, seed=0, noise=0.0)
    X = data.X.astype(np.float64)
    radius = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(radius[data.y == 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(radius[data.y == 0], 0.01, atol=1e-6)
    assert np.bincount(data.y).tolist() == [100, 101]  # the odd point is on the outer ring
    # MLJ's angles are uniform draws on [0, 2 pi), not an even grid.
    angle = np.mod(np.arctan2(X[:, 1], X[:, 0]), 2 * np.pi)
    outer = np.sort(angle[data.y == 1])
    gaps = np.diff(outer)
    assert gaps.std() > 0.5 * gaps.mean()  # an even grid has gaps of one size
    assert _ks_distance_to_uniform(angle, 0.0, 2 * np.pi) < _ks_critical(len(angle))


def test_circles_radii_with_paper_noise():
    data = load("circles", seed=0)
    radius = np.linalg.norm(data.X.astype(np.float64), axis=1)
    # Noise 0.15 per coordinate: the outer radius stays ~1, the inner cloud is a
    # Rayleigh-like blob around 0 with mean 0.15 * sqrt(pi/2) ~ 0.19.
    assert abs(radius[data.y == 1].mean() - 1.0) < 0.05
    assert 0.12 < radius[data.y == 0].mean() < 0.26
    assert radius[data.y == 0].max() < radius[data.y == 1].mean()


def test_moons_geometry():
    exact = rr.data.synthetic.moons(201, seed=0, noise=0.0)
    X = exact.X.astype(np.float64)
    upper, lower = X[exact.y == 0], X[exact.y == 1]
    assert (len(upper), len(lower)) == (100, 101)  # the odd point is on the lower moon
    # MLJ's make_moons: upper (cos t, sin t), lower (cos t + 1, 0.3 - sin t), t uniform in [0, pi).
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(lower - [1.0, 0.3], axis=1), 1.0, atol=1e-6)
    assert upper[:, 1].min() >= -1e-6 and lower[:, 1].max() <= 0.3 + 1e-6
    assert upper[:, 0].min() >= -1 - 1e-6 and upper[:, 0].max() <= 1 + 1e-6
    assert lower[:, 0].min() >= -1e-6 and lower[:, 0].max() <= 2 + 1e-6
    t_upper = np.arctan2(upper[:, 1], upper[:, 0])
    t_lower = np.arctan2(0.3 - lower[:, 1], lower[:, 0] - 1.0)
    for t in (t_upper, t_lower):
        assert _ks_distance_to_uniform(t, 0.0, np.pi) < _ks_critical(len(t))
    assert np.diff(np.sort(t_upper)).std() > 0.5 * np.diff(np.sort(t_upper)).mean()  # not an even grid

    noisy = load("moons", seed=0)
    Xn = noisy.X.astype(np.float64)
    d_upper = np.abs(np.linalg.norm(Xn[noisy.y == 0], axis=1) - 1.0)
    d_lower = np.abs(np.linalg.norm(Xn[noisy.y == 1] - [1.0, 0.3], axis=1) - 1.0)
    assert d_upper.mean() < 0.12 and d_lower.mean() < 0.12
    # Mean height of a uniform half circle is 2 / pi; the lower moon is that below y = 0.3.
    assert abs(Xn[noisy.y == 0, 1].mean() - 2 / np.pi) < 0.05
    assert abs(Xn[noisy.y == 1, 1].mean() - (0.3 - 2 / np.pi)) < 0.05
    shifted = rr.data.synthetic.moons(100, seed=0, noise=0.0, xshift=3.0, yshift=-1.0)
    lower_shifted = shifted.X[shifted.y == 1].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(lower_shifted - [3.0, -1.0], axis=1), 1.0, atol=1e-6)


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ValueError, match=r"'n_samples' parameter of moons must be an int in the range \[2, inf\)"):
        rr.data.synthetic.moons(0, seed=0)
    with pytest.raises(ValueError, match="'noise' parameter of circles"):
        rr.data.synthetic.circles(10, seed=0, noise=-1.0)
    with pytest.raises(ValueError, match=r"'n_samples' parameter of blobs.*'n_features' parameter of blobs"):
        rr.data.synthetic.blobs(1, seed=0, n_features=0)  # every problem in one message
    with pytest.raises(ValueError, match=r"'factor' parameter of circles must be a float in the range \(0, 1\)"):
        rr.data.synthetic.circles(10, seed=0, factor=0.0)
    with pytest.raises(ValueError, match=r"'center_box' parameter of blobs must be a pair \(low, high\).*low < high"):
        rr.data.synthetic.blobs(10, seed=0, center_box=(2.0, -2.0))
    with pytest.raises(ValueError, match="'std' parameter of blobs"):
        rr.data.synthetic.blobs(10, seed=0, std=0.0)


# ---------------------------------------------------------------------------------------
# Dataset.split and standardisation


def _id_dataset(n0: int = 60, n1: int = 40, standardize: bool = True) -> Dataset:
    """Rows with a unique id in column 0 (non-continuous), two continuous columns, a one-hot column."""
    rng = np.random.default_rng(123)
    n = n0 + n1
    ids = np.arange(n, dtype=np.float64)
    cont = np.c_[rng.normal(5.0, 3.0, n), rng.exponential(10.0, n)]
    onehot = (rng.random(n) < 0.3).astype(np.float64)
    X = np.c_[ids, cont, onehot]
    y = np.r_[np.zeros(n0), np.ones(n1)].astype(np.int64)
    return Dataset(
        X=X, y=y, feature_names=("id", "a", "b", "c=1"), name="ids",
        continuous=np.array([False, True, True, False]), standardize=standardize,
    )


def test_split_is_stratified_disjoint_covering_and_deterministic():
    data = _id_dataset(standardize=False)
    train, test = data.split(0.2, seed=7)
    assert np.bincount(test.y).tolist() == [12, 8]
    assert np.bincount(train.y).tolist() == [48, 32]
    train_ids, test_ids = train.X[:, 0].astype(int), test.X[:, 0].astype(int)
    assert set(train_ids).isdisjoint(test_ids)
    assert sorted(np.r_[train_ids, test_ids].tolist()) == list(range(100))
    # Each row keeps its own label.
    np.testing.assert_array_equal(train.y, data.y[train_ids])
    np.testing.assert_array_equal(test.y, data.y[test_ids])
    again_train, again_test = data.split(0.2, seed=7)
    np.testing.assert_array_equal(again_train.X, train.X)
    np.testing.assert_array_equal(again_test.X, test.X)
    other_train, _ = data.split(0.2, seed=8)
    assert not np.array_equal(other_train.X[:, 0], train.X[:, 0])


def test_split_standardises_with_training_statistics_only():
    data = _id_dataset()
    train, test = data.split(0.25, seed=0)
    train_ids, test_ids = train.X[:, 0].astype(int), test.X[:, 0].astype(int)
    raw = data.X.astype(np.float64)
    # Statistics by hand, from the raw training rows only.
    mean = raw[train_ids, 1:3].mean(axis=0)
    std = raw[train_ids, 1:3].std(axis=0)
    np.testing.assert_allclose(train.X[:, 1:3], (raw[train_ids, 1:3] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test.X[:, 1:3], (raw[test_ids, 1:3] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(train.X[:, 1:3].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.X[:, 1:3].std(axis=0), 1.0, atol=1e-5)
    # The test split is not re-centred on its own statistics.
    assert np.abs(test.X[:, 1:3].mean(axis=0)).max() > 1e-3
    # Non-continuous columns (id, one-hot) are untouched.
    np.testing.assert_array_equal(train.X[:, [0, 3]], raw[train_ids][:, [0, 3]])
    np.testing.assert_array_equal(test.X[:, [0, 3]], raw[test_ids][:, [0, 3]])
    assert train.standardizer is test.standardizer
    np.testing.assert_allclose(train.standardizer.inverse_transform(train.X), raw[train_ids], rtol=1e-5, atol=1e-4)


def test_split_without_standardisation_keeps_raw_values():
    data = _id_dataset(standardize=False)
    train, _ = data.split(0.2, seed=0)
    np.testing.assert_array_equal(train.X, data.X[train.X[:, 0].astype(int)])
    assert train.standardizer is None


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, "0.2"])
def test_split_rejects_bad_test_size(bad):
    with pytest.raises(ValueError, match="'test_size' parameter of Dataset.split"):
        _id_dataset().split(bad, seed=0)


# ---------------------------------------------------------------------------------------
# The shared CSVs (../shared/data/tabular)


def _read_csv_by_hand(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv_module.reader(handle))
    return rows[0], rows[1:]


def test_names_lists_synthetic_and_tabular():
    assert set(rr.data.names()) >= set(SYNTHETIC) | set(TABULAR) | {"csv"}


@requires_tabular_data
def test_credit_default_paper_sample(tabular_dir):
    data = load("credit_default", seed=0, n_samples=5000)
    assert data.X.shape[0] == 5000 and data.X.dtype == np.float32
    assert np.bincount(data.y).tolist() == [2500, 2500]
    assert data.name == "credit_default" and data.source
    assert data.standardize is True
    assert "ID" not in data.feature_names
    assert "default.payment.next.month" not in data.feature_names
    # Category codes by hand from the file.
    header, rows = _read_csv_by_hand(tabular_dir / "uci_credit_card_default.csv")
    expected_onehot = []
    for col in ("SEX", "EDUCATION", "MARRIAGE"):
        codes = sorted({int(r[header.index(col)]) for r in rows})
        expected_onehot += [f"{col}={c}" for c in codes]
    onehot = [n for n in data.feature_names if "=" in n]
    assert onehot == expected_onehot
    # 20 numeric columns (25 minus ID, target and the three categoricals) stay continuous.
    assert data.n_features == 20 + len(expected_onehot)
    continuous = dict(zip(data.feature_names, data.continuous.tolist()))
    assert not any(continuous[n] for n in onehot)
    assert all(continuous[n] for n in data.feature_names if "=" not in n)
    # Exactly one category of each variable is set per row.
    for col in ("SEX", "EDUCATION", "MARRIAGE"):
        cols = [j for j, n in enumerate(data.feature_names) if n.startswith(col + "=")]
        np.testing.assert_array_equal(data.X[:, cols].sum(axis=1), 1.0)


@requires_tabular_data
def test_credit_default_split_standardises_continuous_columns(tabular_dir):
    data = load("credit_default", seed=0, n_samples=5000)
    train, test = data.split(0.2, seed=1)
    assert train.n_samples == 4000 and test.n_samples == 1000
    cont = data.continuous
    np.testing.assert_allclose(train.X[:, cont].astype(np.float64).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.X[:, cont].astype(np.float64).std(axis=0), 1.0, atol=1e-4)
    assert set(np.unique(train.X[:, ~cont]).tolist()) == {0.0, 1.0}
    # Test rows use the training statistics: undo with them and compare to the raw rows.
    raw_train, raw_test = data.split(0.2, seed=1, standardize=False)
    mean = raw_train.X[:, cont].astype(np.float64).mean(axis=0)
    std = raw_train.X[:, cont].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(
        test.X[:, cont], (raw_test.X[:, cont].astype(np.float64) - mean) / std, rtol=1e-4, atol=1e-4
    )


@requires_tabular_data
def test_credit_default_flip_and_counts_match_the_file(tabular_dir):
    header, rows = _read_csv_by_hand(tabular_dir / "uci_credit_card_default.csv")
    target = [int(r[header.index("default.payment.next.month")]) for r in rows]
    n_default = sum(target)
    everything = load("credit_default", seed=0, balance=False)
    assert everything.n_samples == len(rows)
    assert int(everything.y.sum()) == len(rows) - n_default  # 1 = no default
    balanced = load("credit_default", seed=0)
    assert np.bincount(balanced.y).tolist() == [n_default, n_default]
    # Row order is the file's: the first kept row's LIMIT_BAL matches by hand.
    np.testing.assert_allclose(everything.X[:, 0], [float(r[header.index("LIMIT_BAL")]) for r in rows])


@requires_tabular_data
def test_california_housing_median_binarisation(tabular_dir):
    header, rows = _read_csv_by_hand(tabular_dir / "california_housing.csv")
    target = np.array([float(r[header.index("target")]) for r in rows])
    expected = (target >= np.median(target)).astype(int)
    everything = load("california_housing", seed=0, balance=False)
    np.testing.assert_array_equal(everything.y, expected)
    assert everything.feature_names == tuple(c for c in header if c != "target")
    assert everything.continuous.all()
    balanced = load("california_housing", seed=0, n_samples=5000)
    assert np.bincount(balanced.y).tolist() == [2500, 2500]
    n_min = int(min(expected.sum(), expected.size - expected.sum()))
    assert load("california_housing", seed=0).n_samples == 2 * n_min


@requires_tabular_data
def test_gmsc_and_german_credit(tabular_dir):
    header, rows = _read_csv_by_hand(tabular_dir / "give_me_some_credit_balanced.csv")
    n1 = sum(int(r[header.index("target")]) for r in rows)
    gmsc = load("gmsc", seed=0)
    assert gmsc.n_samples == 2 * min(n1, len(rows) - n1)
    assert gmsc.n_features == len(header) - 1
    assert np.bincount(load("gmsc", seed=0, n_samples=5000).y).tolist() == [2500, 2500]

    header, rows = _read_csv_by_hand(tabular_dir / "german_credit.csv")
    good = [r[header.index("24")] == "1" for r in rows]
    german = load("german_credit", seed=0, balance=False)
    np.testing.assert_array_equal(german.y, np.array(good, dtype=int))
    expected_X = np.array([[float(v) for v in r[:24]] for r in rows])
    np.testing.assert_array_equal(german.X, expected_X)
    balanced = load("german_credit", seed=0)
    n_bad = len(rows) - sum(good)
    assert np.bincount(balanced.y).tolist() == [n_bad, n_bad]


@requires_tabular_data
@pytest.mark.parametrize("name", TABULAR)
def test_tabular_loaders_are_deterministic_and_seeded(name, tabular_dir):
    a = load(name, seed=0, n_samples=200)
    b = load(name, seed=0, n_samples=200)
    c = load(name, seed=1, n_samples=200)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    assert a.name == name and a.source
    assert np.bincount(a.y).tolist() == [100, 100]
    # Same seed, smaller sample: a subset of the larger one.
    big = {tuple(row) for row in load(name, seed=0, n_samples=400).X.tolist()}
    assert {tuple(row) for row in a.X.tolist()} <= big


@requires_tabular_data
def test_named_loader_rejects_unknown_option(tabular_dir):
    with pytest.raises(TypeError, match=r"Unknown option\(s\) 'thresold'.*Did you mean 'threshold'\?"):
        load("california_housing", seed=0, thresold=2.0)


@requires_tabular_data
def test_named_loader_too_few_rows(tabular_dir):
    with pytest.raises(ValueError, match=r"n_samples=1000 needs 500 rows of class 0 and 500 of class 1.*only 300"):
        load("german_credit", seed=0, n_samples=1000)


def test_named_loader_missing_file_explains_data_dir(tmp_path):
    with rr.data.data_dir(tmp_path):
        with pytest.raises(ValueError, match=r"Data file not found.*give_me_some_credit_balanced\.csv") as info:
            load("gmsc", seed=0)
    message = str(info.value)
    assert str(tmp_path) in message and "RECOURSE_RAY_DATA" in message


# ---------------------------------------------------------------------------------------
# load_csv on hand-made files


def write(tmp_path: Path, text: str, name: str = "tiny.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rows_with_missing_values_are_dropped(tmp_path):
    path = write(tmp_path, "a,b,y\n1,10,0\n,11,1\n3,NA,0\n4,NaN,1\n5,14,1\n6,15,0\n7,16,\n")
    data = load_csv(path, target="y", seed=0, balance=False)
    np.testing.assert_array_equal(data.X, [[1, 10], [5, 14], [6, 15]])
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    assert data.feature_names == ("a", "b")
    assert data.name == "tiny" and data.standardize is True


def test_missing_value_in_dropped_column_keeps_the_row(tmp_path):
    path = write(tmp_path, "id,a,y\n,1,0\nx,2,1\n")
    data = load_csv(path, target="y", seed=0, drop="id", balance=False)
    np.testing.assert_array_equal(data.X, [[1], [2]])
    assert data.feature_names == ("a",)


def test_string_categorical_is_one_hot_encoded(tmp_path):
    path = write(tmp_path, "size,colour,y\n1.5,red,0\n2.5,blue,1\n3.5,green,0\n4.5,red,1\n")
    data = load_csv(path, target="y", seed=0, categorical=["colour"], balance=False)
    assert data.feature_names == ("size", "colour=blue", "colour=green", "colour=red")
    np.testing.assert_array_equal(
        data.X, [[1.5, 0, 0, 1], [2.5, 1, 0, 0], [3.5, 0, 1, 0], [4.5, 0, 0, 1]]
    )
    assert data.continuous.tolist() == [True, False, False, False]
    train, test = data.split(0.5, seed=0)
    assert set(np.unique(np.r_[train.X[:, 1:], test.X[:, 1:]]).tolist()) == {0.0, 1.0}


def test_text_only_file(tmp_path):
    path = write(tmp_path, "colour,answer\nred,yes\n,no\nblue,no\nred,no\n")
    data = load_csv(path, target="answer", positive="yes", seed=0, categorical="colour", balance=False)
    assert data.feature_names == ("colour=blue", "colour=red")
    np.testing.assert_array_equal(data.X, [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(data.y, [1, 0, 0])


def test_numeric_categorical_codes_sort_as_numbers(tmp_path):
    path = write(tmp_path, "code,y\n10,0\n2,1\n9,0\n2,1\n")
    data = load_csv(path, target="y", seed=0, categorical="code", balance=False)
    assert data.feature_names == ("code=2", "code=9", "code=10")
    np.testing.assert_array_equal(data.X, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])


def test_balancing_undersamples_the_majority(tmp_path):
    lines = ["x,y"] + [f"{i},0" for i in range(8)] + [f"{100 + i},1" for i in range(3)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    seen = set()
    for seed in range(10):
        data = load_csv(path, target="y", seed=seed)
        assert np.bincount(data.y).tolist() == [3, 3]
        x = data.X[:, 0]
        assert sorted(x[data.y == 1].tolist()) == [100, 101, 102]  # the minority is kept whole
        assert set(x[data.y == 0].tolist()) <= set(range(8))
        assert np.all(np.diff(x) > 0)  # file order is kept
        seen.add(tuple(x[data.y == 0].tolist()))
    assert len(seen) > 1  # different seeds draw different majority rows
    again = load_csv(path, target="y", seed=4)
    np.testing.assert_array_equal(again.X, load_csv(path, target="y", seed=4).X)


def test_n_samples_subsample(tmp_path):
    lines = ["x,y"] + [f"{i},{i % 2}" for i in range(20)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    data = load_csv(path, target="y", seed=0, n_samples=6)
    assert np.bincount(data.y).tolist() == [3, 3]
    np.testing.assert_array_equal(data.y, data.X[:, 0].astype(int) % 2)
    odd = load_csv(path, target="y", seed=0, n_samples=7)
    assert np.bincount(odd.y).tolist() == [3, 4]
    unbalanced = load_csv(path, target="y", seed=0, n_samples=5, balance=False)
    assert unbalanced.n_samples == 5
    with pytest.raises(ValueError, match=r"n_samples=30 needs 15 rows of class 0 and 15 of class 1"):
        load_csv(path, target="y", seed=0, n_samples=30)
    with pytest.raises(ValueError, match=r"n_samples=21 is larger than the 20 rows"):
        load_csv(path, target="y", seed=0, n_samples=21, balance=False)
    with pytest.raises(ValueError, match=r"'n_samples' parameter of load_csv must be an int"):
        load_csv(path, target="y", seed=0, n_samples=0)


def test_flip_swaps_labels(tmp_path):
    path = write(tmp_path, "x,y\n1,0\n2,1\n3,1\n")
    plain = load_csv(path, target="y", seed=0, balance=False)
    flipped = load_csv(path, target="y", seed=0, balance=False, flip=True)
    np.testing.assert_array_equal(plain.y, [0, 1, 1])
    np.testing.assert_array_equal(flipped.y, [1, 0, 0])


def test_threshold_number_and_median(tmp_path):
    path = write(tmp_path, "x,value\n1,0.5\n2,3.0\n3,1.0\n4,7.5\n5,2.0\n")
    at_two = load_csv(path, target="value", seed=0, threshold=2.0, balance=False)
    np.testing.assert_array_equal(at_two.y, [0, 1, 0, 1, 1])  # >= 2.0
    median = load_csv(path, target="value", seed=0, threshold="median", balance=False)
    np.testing.assert_array_equal(median.y, [0, 1, 0, 1, 1])  # median of 5 values is 2.0
    assert median.feature_names == ("x",)
    with pytest.raises(ValueError, match=r"The 'threshold' parameter of load_csv must be a number or 'median'\. Got 'mean'"):
        load_csv(path, target="value", seed=0, threshold="mean")


def test_positive_values(tmp_path):
    path = write(tmp_path, "x,outcome\n1,yes\n2,no\n3,maybe\n4,yes\n")
    data = load_csv(path, target="outcome", seed=0, positive="yes", balance=False)
    np.testing.assert_array_equal(data.y, [1, 0, 0, 1])
    several = load_csv(path, target="outcome", seed=0, positive=["yes", "maybe"], balance=False)
    np.testing.assert_array_equal(several.y, [1, 0, 1, 1])
    coded = write(tmp_path, "x,grade\n1,1\n2,2\n3,1\n", "coded.csv")
    np.testing.assert_array_equal(load_csv(coded, target="grade", seed=0, positive=1, balance=False).y, [1, 0, 1])


def test_csv_loader_through_the_registry(tmp_path):
    path = write(tmp_path, "x,label\n1,a\n2,b\n3,a\n4,b\n")
    data = load("csv", path=str(path), target="label", positive="b", seed=0, n_samples=2)
    assert data.n_samples == 2 and np.bincount(data.y).tolist() == [1, 1]
    assert data.name == "tiny"
    named = load("csv", path=path, target="label", positive="b", seed=0, name="mine")
    assert named.name == "mine"
    with pytest.raises(ValueError, match=r"The 'csv' dataset needs the option\(s\) 'path', 'target'"):
        load("csv", seed=0)
    with pytest.raises(TypeError, match=r"Did you mean 'positive'\?"):
        load("csv", path=path, target="label", positiv="b", seed=0)


def test_relative_path_is_found_in_the_data_dir(tmp_path):
    write(tmp_path, "x,y\n1,0\n2,1\n", "rel.csv")
    with rr.data.data_dir(tmp_path):
        data = load_csv("rel.csv", target="y", seed=0)
    np.testing.assert_array_equal(data.X, [[1], [2]])


def test_data_dir_context_manager_restores_the_previous_directory(tmp_path):
    before = rr.data.get_data_dir()
    with rr.data.data_dir(tmp_path) as inside:
        assert inside == tmp_path == rr.data.get_data_dir()
    assert rr.data.get_data_dir() == before
    with pytest.raises(RuntimeError):
        with rr.data.data_dir(tmp_path / "other"):
            raise RuntimeError("boom")
    assert rr.data.get_data_dir() == before


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOURSE_RAY_DATA", str(tmp_path / "env"))
    with rr.data.data_dir(None):  # no override: the environment variable
        assert rr.data.get_data_dir() == tmp_path / "env"
        rr.data.set_data_dir(tmp_path / "set")  # set_data_dir inside the block is undone with it
        assert rr.data.get_data_dir() == tmp_path / "set"
        monkeypatch.delenv("RECOURSE_RAY_DATA")
        rr.data.set_data_dir(None)
        assert rr.data.get_data_dir() == Path.home() / ".cache" / "recourse_ray" / "data"


# ---------------------------------------------------------------------------------------
# standardize=False and a given train/test split (split_column)

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ard-v0.1.0" / "overlapping_data.csv"


def test_standardize_false_keeps_raw_values_in_the_split(tmp_path):
    lines = ["x,y"] + [f"{i * 10},{i % 2}" for i in range(10)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    data = load_csv(path, target="y", seed=0, standardize=False)
    assert data.standardize is False
    train, test = data.split(0.2, seed=0)
    assert train.standardizer is None
    assert sorted(np.r_[train.X[:, 0], test.X[:, 0]].tolist()) == [10.0 * i for i in range(10)]
    assert load_csv(path, target="y", seed=0).standardize is True  # the default is unchanged
    with pytest.raises(TypeError, match=r"The 'standardize' parameter of load_csv must be a bool\. Got 'false' instead\."):
        load_csv(path, target="y", seed=0, standardize="false")


@requires_tabular_data
def test_named_loader_takes_standardize(tabular_dir):
    raw = load("german_credit", seed=0, standardize=False)
    assert raw.standardize is False
    train, _ = raw.split(0.2, seed=0)
    assert set(np.unique(train.X).tolist()) <= set(range(200))  # integer codes, not z-scores


@pytest.mark.skipif(not REFERENCE_CSV.is_file(), reason=f"reference data not found at {REFERENCE_CSV}")
def test_reference_csv_split_is_used_as_given():
    header, rows = _read_csv_by_hand(REFERENCE_CSV)
    assert header == ["x1", "x2", "target", "split"]
    by_part = {part: [r for r in rows if r[3] == part] for part in ("train", "test")}
    expected = {part: np.array([[float(r[0]), float(r[1])] for r in got], dtype=np.float32) for part, got in by_part.items()}
    labels = {part: np.array([int(r[2]) for r in got]) for part, got in by_part.items()}
    options = dict(path=str(REFERENCE_CSV), target="target", split_column="split", standardize=False)
    data = load("csv", seed=0, **options)
    assert data.feature_names == ("x1", "x2") and data.n_samples == 1000
    np.testing.assert_array_equal(data.given_test, [r[3] == "test" for r in rows])
    for seed, test_size in ((0, 0.2), (5, 0.5)):  # the given split ignores both
        train, test = data.split(test_size, seed=seed)
        assert (train.n_samples, test.n_samples) == (800, 200)
        assert train.X.dtype == np.float32 and train.standardizer is None
        np.testing.assert_array_equal(train.X, expected["train"])  # file order, bit for bit
        np.testing.assert_array_equal(test.X, expected["test"])
        np.testing.assert_array_equal(train.y, labels["train"])
        np.testing.assert_array_equal(test.y, labels["test"])
        assert train.given_test is None and test.given_test is None
    # The simulation's call, unchanged: prepare_data -> dataset.split(test_size, seed=...).
    from recourse_ray.simulation import prepare_data

    train, test = prepare_data("csv", setup_seed=3, options=options)
    np.testing.assert_array_equal(train.X, expected["train"])
    np.testing.assert_array_equal(test.X, expected["test"])
    # z-scored (the default): statistics of the 800 given training rows.
    train, test = prepare_data("csv", setup_seed=3, options={**options, "standardize": True})
    raw_train = expected["train"].astype(np.float64)
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    np.testing.assert_allclose(train.standardizer.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(test.X, (expected["test"] - mean) / std, rtol=1e-5, atol=1e-5)


def test_given_split_keeps_file_order_and_follows_dropped_rows(tmp_path):
    path = write(
        tmp_path,
        "a,part,y\n1,test,0\n2,train,1\n3,train,0\n,test,1\n5,test,1\n6,train,0\n 7 , train ,1\n8,test,0\n",
    )
    data = load_csv(path, target="y", seed=0, split_column="part", balance=False)
    assert data.feature_names == ("a",)  # the split column is not a feature
    np.testing.assert_array_equal(data.X[:, 0], [1, 2, 3, 5, 6, 7, 8])  # the row with a missing cell is dropped
    np.testing.assert_array_equal(data.given_test, [True, False, False, True, False, False, True])
    train, test = data.split(0.2, seed=0, standardize=False)
    np.testing.assert_array_equal(train.X[:, 0], [2, 3, 6, 7])
    np.testing.assert_array_equal(test.X[:, 0], [1, 5, 8])
    np.testing.assert_array_equal(train.y, [1, 0, 0, 1])
    np.testing.assert_array_equal(test.y, [0, 1, 0])
    # z-scoring (on by default) is fitted on the given training rows only.
    scaled_train, scaled_test = data.split(0.2, seed=0)
    mean, std = np.mean([2, 3, 6, 7]), np.std([2, 3, 6, 7])
    np.testing.assert_allclose(scaled_train.X[:, 0], (np.array([2, 3, 6, 7]) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(scaled_test.X[:, 0], (np.array([1, 5, 8]) - mean) / std, rtol=1e-6)
    # Without split_column, a column named 'split' is an ordinary (here: text) column.
    plain = write(tmp_path, "a,split,y\n1,train,0\n2,test,1\n", "plain.csv")
    with pytest.raises(ValueError, match=r"non-numeric columns 'split'"):
        load_csv(plain, target="y", seed=0)
    assert load_csv(plain, target="y", seed=0, drop="split").given_test is None


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a,s,y\n1,train,0\n2,valid,1\n3,Test,1\n4,test,0\n", {},
         r"the split column 's' must hold 'train' or 'test' in every row, but has 'valid' \(1 row\), 'Test' \(1 row\) "
         r"\(first in data row 2\)"),
        ("a,s,y\n1,train,0\n2,,1\n3,test,1\n", {}, r"split column 's' must hold 'train' or 'test'.*\(missing\) \(1 row\)"),
        ("a,s,y\n1,train,0\n2,train,1\n", {}, r"the split column 's' leaves no 'test' rows"),
        ("a,s,y\n1,test,0\n2,test,1\n", {}, r"the split column 's' leaves no 'train' rows"),
        ("a,s,y\n1,train,0\n2,test,1\n", {"split_column": "ss"}, r"the split column 'ss' is not in the file\. Did you mean 's'\?"),
        ("a,s,y\n1,train,0\n2,test,1\n", {"categorical": "s"}, r"the split column 's' cannot also be a categorical column"),
        ("a,s,y\n1,train,0\n2,test,1\n", {"drop": ["s"]}, r"the split column 's' cannot also be a drop column"),
        ("a,s,y\n1,train,0\n2,test,1\n", {"split_column": "y"}, r"the target column 'y' cannot also be the split column"),
        ("a,s,y\n1,train,0\n2,test,1\n3,train,1\n4,test,0\n", {"n_samples": 2},
         r"n_samples=2 cannot be combined with split_column='s'"),
        ("a,s,y\n1,train,0\n2,test,1\n3,train,1\n", {}, r"balance=True would drop rows from the given split.*1 and 2 rows"),
    ],
    ids=["unknown-values", "missing-value", "no-test", "no-train", "absent", "categorical", "drop", "target",
         "n_samples", "unbalanced"],
)
def test_given_split_errors(tmp_path, text, options, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_csv(path, target="y", seed=0, **{"split_column": "s", **options})


def test_given_split_unbalanced_with_balance_false(tmp_path):
    path = write(tmp_path, "a,s,y\n1,train,0\n2,test,1\n3,train,1\n")
    data = load_csv(path, target="y", seed=0, split_column="s", balance=False)
    assert data.class_counts() == (1, 2)
    with pytest.raises(TypeError, match=r"The 'split_column' parameter of load_csv must be a column name \(str\) or None"):
        load_csv(path, target="y", seed=0, split_column=["s"])


def test_dataset_given_test_is_checked_and_subset():
    data = _id_dataset(standardize=False)
    with pytest.raises(ValueError, match="given_test must be a bool array with one entry per row"):
        Dataset(X=data.X, y=data.y, feature_names=data.feature_names, name="x", given_test=np.zeros(3, dtype=bool))
    given = Dataset(
        X=data.X, y=data.y, feature_names=data.feature_names, name="x", given_test=np.arange(100) % 4 == 0
    )
    half = given.subset(np.arange(50))
    np.testing.assert_array_equal(half.given_test, np.arange(50) % 4 == 0)
    train, test = given.split(0.5, seed=0)
    np.testing.assert_array_equal(test.X[:, 0], np.arange(0, 100, 4))
    only_train = given.subset(np.arange(1, 4))
    with pytest.raises(ValueError, match=r"given split of dataset 'x' has 3 training and 0 test rows"):
        only_train.split(0.2, seed=0)


# ---------------------------------------------------------------------------------------
# load_csv errors


def test_error_single_class(tmp_path):
    path = write(tmp_path, "x,y\n1,1\n2,1\n3,1\n")
    with pytest.raises(ValueError, match=r"target 'y' has a single class after preprocessing \(all 3 rows are 1\)"):
        load_csv(path, target="y", seed=0)


def test_error_single_class_after_dropping_missing_rows(tmp_path):
    path = write(tmp_path, "x,y\n1,1\n,0\n3,1\n")
    with pytest.raises(ValueError, match="single class"):
        load_csv(path, target="y", seed=0)


def test_error_missing_target_lists_columns_and_closest_match(tmp_path):
    path = write(tmp_path, "income,age,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"target column 'lable' is not in the file\. Did you mean 'label'\?") as info:
        load_csv(path, target="lable", seed=0)
    assert "Available columns: 'income', 'age', 'label'" in str(info.value)


def test_error_non_numeric_column_is_named(tmp_path):
    path = write(tmp_path, "income,city,job,y\n1,Paris,cook,0\n2,Rome,pilot,1\n")
    with pytest.raises(ValueError, match=r"non-numeric columns 'city' \(e\.g\. 'Paris'\), 'job' \(e\.g\. 'cook'\)"):
        load_csv(path, target="y", seed=0)
    # Declaring them categorical fixes it.
    data = load_csv(path, target="y", seed=0, categorical=("city", "job"))
    assert data.feature_names == ("income", "city=Paris", "city=Rome", "job=cook", "job=pilot")


def test_error_lists_every_problem_at_once(tmp_path):
    path = write(tmp_path, "income,city,y\n1,Paris,0\n2,Rome,1\n")
    with pytest.raises(ValueError) as info:
        load_csv(path, target="why", seed=0, drop=["ID"], categorical=["citty"])
    message = str(info.value)
    for part in ("target column 'why'", "drop column 'ID'", "categorical column 'citty'", "Did you mean 'city'?",
                 "non-numeric columns 'city'"):
        assert part in message


def test_error_non_binary_target_without_rule(tmp_path):
    path = write(tmp_path, "x,y\n1,0\n2,1\n3,2\n")
    with pytest.raises(ValueError, match=r"must hold 0/1 labels, but has values \['0', '1', '2'\].*positive="):
        load_csv(path, target="y", seed=0)


def test_error_infinite_values(tmp_path):
    path = write(tmp_path, "a,b,y\n1,inf,0\n2,3,1\n")
    with pytest.raises(ValueError, match=r"infinite values in columns 'b'"):
        load_csv(path, target="y", seed=0)


def test_error_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ValueError, match=r"tiny.*the file is empty"):
        load_csv(path, target="y", seed=0)


def test_error_header_only(tmp_path):
    path = write(tmp_path, "x,y\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_csv(path, target="y", seed=0)


def test_error_every_row_missing(tmp_path):
    path = write(tmp_path, "x,y\n,0\n,1\n")
    with pytest.raises(ValueError, match=r"every row has a missing value.*'x' \(2\)"):
        load_csv(path, target="y", seed=0)


def test_error_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"Data file not found: .*nope\.csv.*RECOURSE_RAY_DATA"):
        load_csv(tmp_path / "nope.csv", target="y", seed=0)


def test_error_seed_required(tmp_path):
    path = write(tmp_path, "x,y\n1,0\n2,1\n")
    with pytest.raises(ValueError, match="A seed is required"):
        load_csv(path, target="y", seed=None)


def test_module_exports():
    assert set(tabular.__all__) >= {"load_csv", "california_housing", "credit_default", "gmsc", "german_credit"}
    for name in ("california_housing", "credit_default", "gmsc", "german_credit", "csv"):
        assert rr.data.DATASETS.get(name) is getattr(tabular, name)
