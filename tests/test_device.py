"""The ``device`` option: search and torch-path training on a torch device (never required)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray import spec
from recourse_ray.simulation import SimulationSettings

CUDA_MESSAGE = (
    "The 'device' parameter of simulation is 'cuda' but no CUDA device is available "
    "(torch.cuda.is_available() is False)."
)


@pytest.fixture(scope="module")
def setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    data = rr.data.load("overlapping", seed=0)
    train, _ = data.split(seed=0)
    model = rr.models.create("mlp", input_dim=2, seed=0)
    model.fit(train.X, train.y, epochs=5, batch_size=8, seed=0)
    vae = rr.models.VAE(2, seed=0)
    vae.fit(train.X, epochs=5, seed=0)
    negatives = train.X[model.predict(train.X) == 0][:20]
    yield {"train": train, "model": model, "vae": vae, "neg": negatives, "data": (train.X, train.y)}
    torch.set_num_threads(before)


def _assert_results_equal(a, b):
    for name in ("counterfactuals", "proba", "valid", "cost", "iterations", "finite"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    if a.path is None:
        assert b.path is None
    else:
        np.testing.assert_array_equal(a.path, b.path)


@pytest.mark.parametrize("name", ["generic", "wachter", "dice", "greedy", "gravitational", "revise"])
def test_explicit_cpu_search_is_bit_identical(setup, name):
    gen = G.create(name)
    kw = dict(n_counterfactuals=3, seeds=list(range(len(setup["neg"]))), data=setup["data"], vae=setup["vae"])
    params_before = setup["model"].params.clone()
    base = gen.search(setup["model"], setup["neg"], return_path=True, **kw)
    for device in ("cpu", torch.device("cpu")):
        other = gen.search(setup["model"], setup["neg"], return_path=True, device=device, **kw)
        _assert_results_equal(base, other)
        assert isinstance(other.counterfactuals, np.ndarray)
    assert torch.equal(setup["model"].params, params_before)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_explicit_cpu_fit_is_bit_identical(setup, backend):
    X, y = setup["train"].X, setup["train"].y
    a = rr.models.create("mlp", input_dim=2, seed=1, backend=backend)
    b = a.clone()
    la = a.fit(X, y, epochs=2, batch_size=16, seed=3)
    lb = b.fit(X, y, epochs=2, batch_size=16, seed=3, device="cpu")
    np.testing.assert_array_equal(la, lb)
    assert torch.equal(a.params, b.params)


def test_torch_path_on_a_device_copies_back_in_place(setup):
    # "cpu" takes the usual path in fit; call the device branch of the torch path
    # directly with a CPU device: it trains a copy and copies it back in place.
    X, y = setup["train"].X.astype(np.float32), setup["train"].y.astype(np.float32)
    a = rr.models.create("mlp", input_dim=2, seed=1, backend="torch", dropout=0.2)
    b = a.clone()
    view, ptr = b.layers()[0][0], b.params.data_ptr()
    rng = np.random.default_rng(0)
    orders = np.stack([[rng.permutation(len(y)) for _ in range(2)]])
    seeds = np.array([7], dtype=np.uint64)
    la = a._fit_torch(X, y, orders, 16, 1e-3, seeds)
    lb = b._fit_torch(X, y, orders, 16, 1e-3, seeds, device=torch.device("cpu"))
    np.testing.assert_array_equal(la, lb)
    assert torch.equal(a.params, b.params)
    assert b.params.data_ptr() == ptr
    assert torch.equal(view, b.layers()[0][0])
    assert not b.params.requires_grad and b.params.grad is None


def test_fused_fit_ignores_the_device(setup):
    # The fused kernel runs on the CPU whatever the device: "cuda" needs no GPU here.
    X, y = setup["train"].X, setup["train"].y
    a = rr.models.create("deep_ensemble", input_dim=2, seed=1, n_members=2)
    if a.training_backend(16) != "fused":
        pytest.skip("the fused kernel is unavailable")
    b = a.clone()
    la = a.fit(X, y, epochs=2, batch_size=16, seed=3)
    lb = b.fit(X, y, epochs=2, batch_size=16, seed=3, device="cuda")
    np.testing.assert_array_equal(la, lb)
    assert torch.equal(a.params, b.params)


def test_torch_classifier_explicit_cpu_fit_is_bit_identical(setup):
    X, y = setup["train"].X, setup["train"].y
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    a = rr.models.TorchClassifier(module, input_dim=2)
    b, c = a.clone(), a.clone()
    la = a.fit(X, y, epochs=2, batch_size=16, seed=3)
    lb = b.fit(X, y, epochs=2, batch_size=16, seed=3, device=torch.device("cpu"))
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a.parameters_vector(), b.parameters_vector())
    # The device branch of the training loop, with a CPU device: data moved, same numbers.
    rng = np.random.default_rng(3)
    orders = [rng.permutation(len(y)) for _ in range(2)]
    Xf, yf = X.astype(np.float32), y.astype(np.float32)
    params = list(c.module.parameters())
    ref = c.clone()
    lc = c._train(Xf, yf, orders, 16, 1e-3, 7, device=torch.device("cpu"))
    lr_ = ref._train(Xf, yf, orders, 16, 1e-3, 7)
    np.testing.assert_array_equal(lc, lr_)
    np.testing.assert_array_equal(c.parameters_vector(), ref.parameters_vector())
    assert all(p is q for p, q in zip(c.module.parameters(), params)) and not c.module.training


def test_vae_torch_path_on_a_device_copies_back_in_place(setup):
    X = setup["train"].X.astype(np.float32)
    a = rr.models.VAE(2, seed=1, backend="torch")
    a.fit(X, epochs=1, seed=0)  # fixes the likelihood scale
    b = a.clone()
    view, ptr = b.params["enc_w"], b.flat.data_ptr()
    rng = np.random.default_rng(0)
    orders = np.stack([rng.permutation(len(X)) for _ in range(2)])
    noise = rng.standard_normal((2, len(X), 2), dtype=np.float32)
    la = a._fit_torch(X, orders, noise, 50, 1e-3)
    lb = b._fit_torch(X, orders, noise, 50, 1e-3, device=torch.device("cpu"))
    np.testing.assert_array_equal(la, lb)
    assert torch.equal(a.flat, b.flat)
    assert b.flat.data_ptr() == ptr and view.data_ptr() == ptr and torch.equal(view, b.params["enc_w"])
    assert not b.flat.requires_grad
    c = a.clone()
    a.fit(X, epochs=1, seed=4)
    c.fit(X, epochs=1, seed=4, device="cpu")
    assert torch.equal(a.flat, c.flat)


@pytest.mark.parametrize(
    "fit",
    [
        lambda X, y, **kw: rr.models.create("mlp", input_dim=2, seed=0).fit(X, y, **kw),
        lambda X, y, **kw: rr.models.TorchClassifier(torch.nn.Linear(2, 1), input_dim=2).fit(X, y, **kw),
        lambda X, y, **kw: rr.models.VAE(2, seed=0).fit(X, **kw),
    ],
    ids=["feedforward", "torch", "vae"],
)
def test_fit_rejects_a_malformed_device(setup, fit):
    X, y = setup["train"].X, setup["train"].y
    with pytest.raises(ValueError, match=r"The 'device' parameter of \w+\.fit must be None, or a torch device .*'gpu'"):
        fit(X, y, epochs=1, batch_size=8, seed=0, device="gpu")
    with pytest.raises(TypeError, match=r"The 'device' parameter of \w+\.fit .* Got 3 instead"):
        fit(X, y, epochs=1, batch_size=8, seed=0, device=3)


class _NoDeviceClassifier:
    """Every Classifier member, but a ``fit`` from before the device keyword."""

    input_dim = 2

    def logits(self, x): ...

    def proba(self, x): ...

    def predict_proba(self, X): ...

    def predict(self, X): ...

    def fit(self, X, y, *, epochs, batch_size, seed, lr=1e-3): ...

    def parameter_arrays(self): ...

    def clone(self): ...


class _AnyKeywordsClassifier(_NoDeviceClassifier):
    def fit(self, X, y, **kwargs): ...


def test_create_refuses_a_classifier_whose_fit_takes_no_device(monkeypatch):
    # The simulation always passes fit(..., device=...): create says so before anything runs.
    module = types.ModuleType("user_models")
    module.no_device = lambda input_dim, *, seed: _NoDeviceClassifier()
    module.any_keywords = lambda input_dim, *, seed: _AnyKeywordsClassifier()
    monkeypatch.setitem(sys.modules, "user_models", module)
    with pytest.raises(TypeError, match=r"returned _NoDeviceClassifier, which lacks fit\(\.\.\., device=\.\.\.\)"):
        rr.models.create("user_models:no_device", input_dim=2)
    assert isinstance(rr.models.create("user_models:any_keywords", input_dim=2), rr.models.Classifier)


def test_unavailable_device_fails_early():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    problems = SimulationSettings(device="cuda").problems()
    assert CUDA_MESSAGE in problems
    with pytest.raises(ValueError, match=r"no CUDA device is available \(torch\.cuda\.is_available\(\) is False\)"):
        rr.simulate("overlapping", "mlp", "generic", rounds=1, device="cuda")
    assert SimulationSettings(device="cpu").problems() == []
    assert SimulationSettings().device == "cpu"
    assert any("'device' parameter of simulation" in p for p in SimulationSettings(device="nonsense").problems())
    assert any("'device' parameter of simulation" in p for p in SimulationSettings(device=3).problems())


def test_feedforward_on_device_copy_is_independent(setup):
    model = rr.models.FeedForwardClassifier(2, hidden=(8,), n_members=3, seed=0)
    before = model.params.clone()
    copy_ = model.on_device("cpu")
    x = torch.tensor(setup["neg"], dtype=torch.float32)
    assert torch.equal(copy_.member_logits(x), model.member_logits(x))
    assert torch.equal(copy_.logits(x), model.logits(x))
    assert torch.equal(copy_.proba(x), model.proba(x))
    assert copy_.params.data_ptr() != model.params.data_ptr()
    copy_.params.add_(1.0)
    assert torch.equal(model.params, before)
    assert copy_.on_device(torch.device("cpu")).params.device.type == "cpu"


def test_vae_on_device_copy_is_independent(setup):
    vae = setup["vae"]
    before = vae.flat.clone()
    copy_ = vae.on_device("cpu")
    x = torch.tensor(setup["neg"], dtype=torch.float32)
    assert torch.equal(copy_.encode(x), vae.encode(x))
    z = vae.encode(x)
    assert torch.equal(copy_.decode(z), vae.decode(z))
    assert copy_.flat.data_ptr() != vae.flat.data_ptr()
    assert all(copy_.params[k].data_ptr() != vae.params[k].data_ptr() for k in vae.params)
    copy_.flat.add_(1.0)
    assert torch.equal(vae.flat, before)
    assert copy_.params["enc_w"].data_ptr() == copy_.flat.data_ptr()


def test_torch_classifier_on_device_copy_is_independent(setup):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    clf = rr.models.TorchClassifier(module, input_dim=2)
    before = [p.detach().clone() for p in clf.module.parameters()]
    copy_ = clf.on_device("cpu")
    x = torch.tensor(setup["neg"], dtype=torch.float32)
    assert torch.equal(copy_.logits(x), clf.logits(x))
    assert copy_.module is not clf.module
    with torch.no_grad():
        for p in copy_.module.parameters():
            p.add_(1.0)
    assert all(torch.equal(p, q) for p, q in zip(clf.module.parameters(), before))
    # A custom model searches with device="cpu" exactly as without.
    gen = G.create("generic")
    a = gen.search(clf, setup["neg"], n_counterfactuals=2, seeds=0)
    b = gen.search(clf, setup["neg"], n_counterfactuals=2, seeds=0, device="cpu")
    _assert_results_equal(a, b)


def test_simulation_with_explicit_cpu_device_is_identical():
    kw = dict(rounds=2, evaluate_every=1, setup={"n_samples": 200, "pretrain_epochs": 2}, metrics={"n_permutations": 5})
    a = rr.simulate("overlapping", "mlp", "generic", **kw)
    b = rr.simulate("overlapping", "mlp", "generic", device="cpu", **kw)
    np.testing.assert_array_equal(a.data.X, b.data.X)
    np.testing.assert_array_equal(a.model.parameters_vector(), b.model.parameters_vector())


def test_sweep_spec_accepts_a_cpu_device():
    text = """
name: t
seeds: 1
grid:
  dataset: [overlapping]
  model: [logistic_regression]
  generator: [generic]
simulation: {rounds: 2, evaluate_every: 1, device: cpu}
"""
    s = spec.loads(text)
    assert s.simulation.device == "cpu"
    base = spec.loads(text.replace(", device: cpu", ""))
    # The device is kept out of system keys.
    assert [x.key for x in s.systems()] == [x.key for x in base.systems()]
