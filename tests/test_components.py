"""Tests of the generators' pluggable components: protocols, registries, overrides, descriptions.

A generator's space, step rule and convergence rule are any objects with their protocol's
methods; ``create`` takes them by registered name or import path with their fields as
overrides, and ``Generator.to_dict`` / ``from_dict`` carry a built generator to another
process. The user step rule ``examples/momentum_step.py`` is checked against plain
gradient descent (beta = 0), against a hand-rolled numpy heavy-ball, and for speed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import recourse_ray as rr
import recourse_ray.generators as G
from recourse_ray.generators import (
    CONVERGENCE,
    SPACES,
    STEP_RULES,
    ConvergenceRule,
    FullSearch,
    Generator,
    GradientDescent,
    Greedy,
    L2Distance,
    SearchSpace,
    StepRule,
    Validity,
    stream_rng,
)
from recourse_ray.generators._components import override_keys

REPO_ROOT = Path(__file__).resolve().parents[1]
MOMENTUM = "examples.momentum_step:Momentum"
SPARSITY = "examples.sparsity_term:L1Sparsity"
ROLES = [("space", SPACES, SearchSpace), ("step_rule", STEP_RULES, StepRule), ("convergence", CONVERGENCE, ConvergenceRule)]
REGISTERED = [(attr, kind) for attr, registry, _ in ROLES for kind in registry.names()]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))


# Tiny tensors: one torch thread (tests/conftest.py), extra threads only add contention.
pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture(scope="module")
def setup(_one_thread):
    train, _ = rr.data.load("overlapping", seed=0).split(seed=0)
    mlp = rr.models.create("mlp", input_dim=2, seed=0)
    mlp.fit(train.X, train.y, epochs=20, batch_size=8, seed=0)
    logreg = rr.models.create("logistic_regression", input_dim=2, seed=0)
    logreg.fit(train.X, train.y, epochs=5, batch_size=8, seed=0)
    return {"train": train, "mlp": mlp, "logreg": logreg, "neg": train.X[mlp.predict(train.X) == 0][:30]}


def _search(gen, setup, **kw):
    kw.setdefault("n_counterfactuals", 3)
    kw.setdefault("seeds", list(range(30)))
    return gen.search(setup["mlp"], setup["neg"], data=(setup["train"].X, setup["train"].y), **kw)


def _assert_identical(a, b):
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    np.testing.assert_array_equal(a.proba, b.proba)
    np.testing.assert_array_equal(a.iterations, b.iterations)


# ---------------------------------------------------------------------- components used by the tests
# Module-level, so that f"{__name__}:Class" imports them again (the tests' own import paths).
@dataclass(frozen=True, kw_only=True)
class HalvingSteps:
    """A user step rule with one override key only: ``shrink`` stays out of the flat overrides."""

    override_keys: ClassVar[tuple[str, ...]] = ("step_size",)
    step_size: float = 0.02
    shrink: float = 0.5

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        return -(self.step_size * self.shrink) * grad, state


@dataclass(frozen=True, kw_only=True)
class ShiftedSpace:
    """A user search space: features shifted by ``offset`` (f(s) = s - offset)."""

    needs_vae: ClassVar[bool] = False
    offset: float = 1.0
    labels: tuple[str, ...] = ("a", "b")

    def initial_states(self, problem: G.Problem) -> torch.Tensor:
        return problem.factuals[:, None, :].expand(-1, problem.n_counterfactuals, -1) + self.offset

    def decode(self, states: torch.Tensor, vae: object) -> torch.Tensor:
        return states - self.offset


@dataclass(frozen=True, kw_only=True)
class FixedSteps:
    """A user convergence rule: never stops early (only max_iterations ends the search)."""

    distance: float = 0.0  # shares its name with the 'distance' term: ambiguous as a flat key

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        return torch.zeros(proba.shape[0], dtype=torch.bool, device=proba.device)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)


@dataclass(frozen=True, kw_only=True)
class NoStep:
    """Has ``init`` but no ``step``: not a StepRule."""

    step_size: float = 0.1

    def init(self, states: torch.Tensor) -> dict:
        return {}


# ---------------------------------------------------------------------- layout
GENERATORS_DIR = REPO_ROOT / "recourse_ray" / "generators"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("module", ["terms", "problem", "spaces", "steps", "convergence", "_components", "_norm"])
def test_pieces_never_import_the_engine_or_presets(module):
    imported = _imports(GENERATORS_DIR / f"{module}.py")
    assert not imported & {"recourse_ray.generators.engine", "recourse_ray.generators.presets"}, imported


def test_engine_module_keeps_the_names_it_served():
    from recourse_ray.generators import engine

    for name in ("Generator", "SearchResult", "Problem", "Batch", "model_outputs", "search_device", "on_device"):
        assert hasattr(engine, name), name
    assert G.terms.safe_norm is G._norm.safe_norm


# ---------------------------------------------------------------------- protocols and registries
@pytest.mark.parametrize("attr, kind", REGISTERED)
def test_every_registered_component_satisfies_its_protocol_and_round_trips(attr, kind):
    registry, protocol = {a: (r, p) for a, r, p in ROLES}[attr]
    component = registry.get(kind)()
    assert isinstance(component, protocol)
    gen = G.create("generic", **{attr: kind})
    assert type(getattr(gen, attr)) is registry.get(kind)
    d = gen.to_dict()
    assert d[attr]["kind"] == kind
    assert Generator.from_dict(json.loads(json.dumps(d))) == gen


def test_override_keys_default_to_fields_and_can_be_narrowed():
    assert override_keys(Greedy) == ("step_size", "max_changes")
    assert override_keys(G.LatentSpace()) == ()
    assert override_keys(HalvingSteps()) == ("step_size",)
    gen = Generator(terms=(Validity(),), step_rule=HalvingSteps())
    valid = G.valid_overrides(gen)
    assert "step_size" in valid and "shrink" not in valid
    assert G.valid_overrides(G.create("greedy"))[: len(G.OVERRIDES)] == list(G.OVERRIDES)
    assert {"init_noise", "step_size", "max_changes"} <= set(G.valid_overrides(G.create("greedy")))
    assert "tolerance" not in G.valid_overrides(G.create("greedy"))


def test_a_user_component_from_an_import_path_takes_part(setup):
    space = f"{__name__}:ShiftedSpace"
    gen = G.create("generic", space={"kind": space, "offset": 2.0}, convergence=f"{__name__}:FixedSteps",
                   max_iterations=4)
    assert gen.space == ShiftedSpace(offset=2.0) and gen.convergence == FixedSteps()
    r = _search(gen, setup)
    np.testing.assert_array_equal(r.iterations, 4)  # FixedSteps never stops an individual
    # The shift cancels: the search equals the plain feature search from the noise-free start.
    # Validity only: next to the factual the distance term's gradient is a unit vector whose
    # direction the float32 rounding of (x + 2) - 2 would decide.
    kw = {"distance": 0.0, "max_iterations": 4}
    shifted = _search(G.create("generic", space={"kind": space, "offset": 2.0}, convergence="full", tolerance=0.0, **kw),
                      setup)
    plain = _search(G.create("generic", init_noise=0.0, convergence="full", tolerance=0.0, **kw), setup)
    assert np.abs(plain.counterfactuals - setup["neg"][:, None]).max() > 1e-3  # it moved
    np.testing.assert_allclose(shifted.counterfactuals, plain.counterfactuals, atol=1e-5)
    d = gen.to_dict()
    assert d["space"] == {"kind": space, "labels": ["a", "b"], "offset": 2.0}
    assert Generator.from_dict(json.loads(json.dumps(d))) == gen


def test_component_fields_are_flat_overrides_of_the_component_in_use():
    assert G.create("generic", step_rule="greedy").step_rule == Greedy()
    gen = G.create("generic", step_rule={"kind": "greedy", "max_changes": 3}, step_size=0.2)
    assert gen.step_rule == Greedy(step_size=0.2, max_changes=3)
    assert G.create("greedy", step_rule="gradient_descent", step_size=0.3).step_rule == GradientDescent(step_size=0.3)
    assert G.create("generic", step_rule={"kind": MOMENTUM}, beta=0.3).step_rule.beta == 0.3
    assert G.create("generic", convergence="full", tolerance=1e-4).convergence == FullSearch(tolerance=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"step_rule": "gradient_descent", "max_changes": 3}, "'max_changes' applies only to the 'greedy' step rule; "
         "generator 'greedy' uses 'gradient_descent'"),
        ({"step_rule": "greedy", "beta": 0.5}, "unknown override 'beta'"),
        ({"step_rule": "greed"}, "'step_rule': Unknown step rule 'greed'. Did you mean 'greedy'"),
        ({"step_rule": {"max_changes": 3}}, "'step_rule' needs a 'kind' key"),
        ({"step_rule": {"kind": "greedy", "max_change": 3}}, "unknown parameter 'max_change' of the step rule 'greedy'. "
         "Did you mean 'max_changes'"),
        ({"space": "latent", "init_noise": 0.2}, "'init_noise' applies only to the 'feature' space; generator 'greedy' "
         "uses 'latent'"),
        ({"tolerance": 0.1}, "'tolerance' applies only to 'full' convergence"),
        ({"convergence": {"kind": "full", "tolerance": -1.0}}, "'tolerance' parameter of FullSearch must be a float in "
         "the range \\[0, inf\\)"),
        ({"step_size": 0.0, "max_changes": 0}, "(?s)'step_size' parameter of Greedy.*'max_changes' parameter of Greedy"),
    ],
)
def test_bad_component_overrides(kwargs, message):
    with pytest.raises(ValueError, match=message):
        G.create("greedy", **kwargs)


def test_a_flat_key_that_names_a_term_means_the_term():
    # 'distance' is a term of generic and a field of FixedSteps: the flat key reweights the term,
    # and the field is set inside the component's mapping.
    gen = G.create("generic", convergence={"kind": f"{__name__}:FixedSteps", "distance": 1.0}, distance=0.5)
    assert gen.convergence.distance == 1.0 and gen.term("distance").weight == 0.5
    assert G.valid_overrides(gen).count("distance") == 1
    assert G.create("dice", convergence=f"{__name__}:FixedSteps", distance=0.5).convergence == FixedSteps()


# ---------------------------------------------------------------------- descriptions
def test_the_description_of_generic():
    assert G.create("generic").to_dict() == {
        "name": "generic",
        "terms": [{"kind": "validity", "weight": 1.0}, {"kind": "distance", "weight": 0.1}],
        "space": {"kind": "feature", "init_noise": 0.1},
        "step_rule": {"kind": "gradient_descent", "step_size": 0.01},
        "convergence": {"kind": "threshold"},
        "decision_threshold": 0.5,
        "max_iterations": 100,
    }


def _canonical(gen: Generator) -> str:
    return json.dumps(gen.to_dict(), sort_keys=True)


def test_equal_settings_give_equal_descriptions():
    assert _canonical(G.create("generic", decision_threshold=0.5)) == _canonical(G.create("generic"))
    assert _canonical(G.create("dice", diversity=1.0)) == _canonical(G.create("dice"))
    # An int for a float setting, a numpy scalar for an int: the same description, typed by the field.
    ints = G.create("greedy", step_size=1, max_changes=np.int64(4), validity=1, decision_threshold=np.float32(0.5))
    floats = G.create("greedy", step_size=1.0, max_changes=4, validity=1.0)
    assert _canonical(ints) == _canonical(floats)
    d = ints.to_dict()
    assert type(d["step_rule"]["step_size"]) is float and type(d["step_rule"]["max_changes"]) is int
    assert type(d["decision_threshold"]) is float and type(d["max_iterations"]) is int
    grav = G.create("gravitational", gravitational={"n_points": np.int32(20), "weight": 5})
    assert grav.to_dict()["terms"][2] == {"kind": "gravitational", "n_points": 20, "weight": 5.0}
    assert _canonical(grav) == _canonical(G.create("gravitational", gravitational={"n_points": 20}))
    # Different settings, different descriptions.
    assert _canonical(G.create("generic", step_size=0.02)) != _canonical(G.create("generic"))
    # Fields in sorted order, after the kind.
    assert list(G.create("greedy").to_dict()["step_rule"]) == ["kind", "max_changes", "step_size"]


# "TERM" stands for the preset's last term, "NEW_TERM" for a registered term it lacks.
OVERRIDE_KINDS = [
    {},
    {"decision_threshold": 0.9, "max_iterations": 7, "name": "renamed"},
    {"space": "latent"},
    {"space": {"kind": "feature", "init_noise": 0.3}},
    {"space": "feature", "init_noise": 0.2},
    {"convergence": "full"},
    {"convergence": {"kind": "full", "tolerance": 1e-4}},
    {"step_rule": "greedy", "max_changes": 3},
    {"step_rule": {"kind": MOMENTUM, "step_size": 0.05, "beta": 0.5}},
    {"step_size": 0.05},
    {"TERM": 0.5},
    {"TERM": {"weight": 0.3}},
    {"add_terms": [{"term": "NEW_TERM", "weight": 0.2}]},
    {"add_terms": [{"term": SPARSITY, "weight": 0.05}]},
]


def _for_preset(preset: str, overrides: dict) -> dict:
    have = [t.name for t in G.create(preset).terms]
    new_term = next(n for n in ("mad_distance", "distance") if n not in have)
    text = json.dumps(overrides).replace('"TERM"', json.dumps(have[-1])).replace('"NEW_TERM"', json.dumps(new_term))
    return json.loads(text)


@pytest.mark.parametrize("preset", G.names())
@pytest.mark.parametrize("overrides", OVERRIDE_KINDS, ids=lambda o: ",".join(o) or "defaults")
def test_descriptions_round_trip_for_every_preset_and_override_kind(preset, overrides):
    gen = G.create(preset, **_for_preset(preset, overrides))
    d = json.loads(json.dumps(gen.to_dict(), allow_nan=False))
    rebuilt = Generator.from_dict(d)
    assert rebuilt == gen
    assert rebuilt.to_dict() == gen.to_dict() == d


def test_a_user_term_is_described_by_its_import_path(setup):
    gen = G.create("generic", add_terms=[{"term": SPARSITY, "weight": 0.5}])
    assert gen.to_dict()["terms"][-1] == {"kind": SPARSITY, "weight": 0.5}
    rebuilt = Generator.from_dict(json.loads(json.dumps(gen.to_dict())))
    assert rebuilt.terms[-1].name == "l1_sparsity"  # the term's own name stays its label
    _assert_identical(_search(rebuilt, setup), _search(gen, setup))


def test_descriptions_rebuild_in_a_fresh_process():
    gens = [
        G.create("generic", step_rule={"kind": MOMENTUM, "step_size": 0.05, "beta": 0.5}),
        G.create("gravitational", space="latent", add_terms=[{"term": SPARSITY, "weight": 0.1}]),
        G.create("greedy", max_changes=3, convergence={"kind": "full", "tolerance": 0.01}),
    ]
    descriptions = json.dumps([g.to_dict() for g in gens])
    code = (
        "import json, sys\n"
        "from recourse_ray.generators import Generator\n"
        "ds = json.loads(sys.stdin.read())\n"
        "print(json.dumps([Generator.from_dict(d).to_dict() for d in ds]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=descriptions, capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120, check=True)
    assert json.loads(out.stdout) == json.loads(descriptions)


def test_a_class_no_other_process_can_import_is_refused_by_to_dict():
    @dataclass(frozen=True)
    class Local:
        def init(self, states):
            return {}

        def step(self, grad, state):
            return -grad, state

    gen = Generator(terms=(Validity(),), step_rule=Local())  # usable here...
    with pytest.raises(ValueError, match="cannot be named by an import path \\(it is defined inside a function\\)"):
        gen.to_dict()  # ...but not describable for a worker


def test_from_dict_reports_every_problem():
    bad = {
        "terms": [{"kind": "validty"}, {"kind": "distance", "wieght": 1.0}],
        "space": {"kind": "examples.nope:Space"},
        "step_rule": {"kind": "greedy", "max_change": 3},
        "convergence": "full",
        "max_iterations": 10,
        "colour": "red",
    }
    with pytest.raises(ValueError) as info:
        Generator.from_dict(bad)
    msg = str(info.value)
    for part in ("unknown key 'colour'", "missing key 'decision_threshold'", "Unknown term 'validty'. Did you mean "
                 "'validity'", "unknown parameter 'wieght' of the term 'distance'", "Cannot import the search space "
                 "'examples.nope:Space'", "unknown parameter 'max_change' of the step rule 'greedy'"):
        assert part in msg, part
    with pytest.raises(TypeError, match="'description' parameter of Generator.from_dict must be a mapping"):
        Generator.from_dict([("terms", [])])


# ---------------------------------------------------------------------- the user step rule: momentum
def test_momentum_with_zero_beta_is_gradient_descent(setup):
    """(a) beta = 0 is, bit for bit, the independent composition with GradientDescent."""
    momentum = G.create("generic", step_rule={"kind": MOMENTUM, "step_size": 0.05, "beta": 0.0})
    by_hand = Generator(terms=(Validity(), L2Distance(weight=0.1)), step_rule=GradientDescent(step_size=0.05))
    a, b = _search(momentum, setup, return_path=True), _search(by_hand, setup, return_path=True)
    _assert_identical(a, b)
    np.testing.assert_array_equal(a.path, b.path)
    assert np.unique(b.iterations).size > 3  # individuals stop at different steps: the frozen-row path is covered


def test_momentum_converges_in_fewer_steps(setup):
    """(b) Heavy-ball momentum reaches validity in fewer steps than plain gradient descent."""
    plain = _search(G.create("generic"), setup)
    heavy = _search(G.create("generic", step_rule={"kind": MOMENTUM, "step_size": 0.01, "beta": 0.9}), setup)
    assert heavy.valid.all() and plain.valid.all()
    assert (heavy.iterations <= plain.iterations).all()
    assert heavy.iterations.mean() < 0.5 * plain.iterations.mean()


def _numpy_heavy_ball(w, b, X, seeds, *, K, lr, beta, T=100, lam=0.1, gamma=0.5, noise=0.1):
    """Hand-rolled float64 heavy-ball for a logistic regression with closed-form gradients."""
    out, iters = [], []
    for x, seed in zip(X.astype(np.float64), seeds):
        s = (x.astype(np.float32) + stream_rng("init", seed).normal(0.0, noise, (K, x.size)).astype(np.float32))
        s, v, it = s.astype(np.float64), np.zeros((K, x.size)), 0
        for _ in range(T):
            p = 1.0 / (1.0 + np.exp(-(s @ w + b)))
            if (p >= gamma).all():
                break
            diff = s - x
            g = -(1.0 - p)[:, None] * w[None, :] + lam * diff / np.linalg.norm(diff, axis=1, keepdims=True)
            v = beta * v + g
            s = s - lr * v
            it += 1
        out.append(s)
        iters.append(it)
    return np.array(out), np.array(iters)


def test_momentum_on_logistic_regression_matches_numpy(setup):
    logreg = setup["logreg"]
    params = logreg.get_state()["params"][0].astype(np.float64)
    X = setup["train"].X[logreg.predict(setup["train"].X) == 0][:20]
    seeds = list(range(20))
    expected, iters = _numpy_heavy_ball(params[:2], params[2], X, seeds, K=3, lr=0.01, beta=0.9)
    gen = G.create("generic", step_rule={"kind": MOMENTUM, "step_size": 0.01, "beta": 0.9})
    r = gen.search(logreg, X, n_counterfactuals=3, seeds=seeds)
    np.testing.assert_array_equal(r.iterations, iters)
    assert iters.min() > 5
    np.testing.assert_allclose(r.counterfactuals, expected, atol=1e-4)


def test_momentum_round_trips(setup):
    """(c) The description names the class by import path and rebuilds an equal, equally searching generator."""
    gen = G.create("generic", step_rule={"kind": MOMENTUM, "step_size": 0.05, "beta": 0.5})
    d = gen.to_dict()
    assert d["step_rule"] == {"kind": MOMENTUM, "beta": 0.5, "step_size": 0.05}
    rebuilt = Generator.from_dict(json.loads(json.dumps(d)))
    assert rebuilt == gen
    _assert_identical(_search(rebuilt, setup), _search(gen, setup))


@pytest.mark.parametrize(
    "step_rule, message",
    [
        ({"kind": MOMENTUM, "bta": 0.5}, "unknown parameter 'bta' of the step rule 'examples.momentum_step:Momentum'. "
         "Did you mean 'beta'\\? Valid parameters: step_size, beta"),
        ({"kind": MOMENTUM, "beta": 1.5}, "The 'beta' parameter of Momentum must be a float in the range \\[0, 1\\)"),
        ({"kind": MOMENTUM, "step_size": -0.1}, "The 'step_size' parameter of Momentum must be a float in the range "
         "\\(0, inf\\)"),
        ("examples.nope:Momentum", "Cannot import the step rule 'examples.nope:Momentum': No module named 'examples.nope'"),
        ("examples.momentum_step:Momentun", "module 'examples.momentum_step' has no attribute 'Momentun'"),
        ("examples.momentum_step:torch", "'examples.momentum_step:torch' must name a dataclass"),
    ],
)
def test_bad_momentum_settings_are_clear(step_rule, message):
    """(d) A bad field, value or import path is a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        G.create("generic", step_rule=step_rule)


def test_components_lacking_their_protocol_are_refused():
    """(e) Checked by protocol: a missing method, a class instead of an instance, a misplaced component."""
    with pytest.raises(ValueError, match="'step_rule' parameter of Generator must be a StepRule instance .* which lacks step"):
        Generator(terms=(Validity(),), step_rule=NoStep())
    from examples.momentum_step import Momentum

    with pytest.raises(ValueError, match="Got the class Momentum instead: pass an instance, Momentum\\(\\)"):
        Generator(terms=(Validity(),), step_rule=Momentum)
    with pytest.raises(ValueError, match="'space' parameter of Generator must be a SearchSpace instance .* which lacks "
                       "decode, initial_states, needs_vae"):
        G.create("generic", space=MOMENTUM)  # a step rule is no search space
    with pytest.raises(ValueError, match="'step_rule' parameter of Generator must be a StepRule .* which lacks step"):
        G.create("generic", step_rule=f"{__name__}:NoStep")

    class NotADataclass:
        def init(self, states):
            return {}

        def step(self, grad, state):
            return -grad, state

    with pytest.raises(ValueError, match="which is not a dataclass"):
        Generator(terms=(Validity(),), step_rule=NotADataclass())
