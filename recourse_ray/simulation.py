"""The round loop of ONE recourse system (SPEC §2), plus the setup it starts from.

Pure Python + torch: no Ray and no file I/O, so the same code runs inside a Ray task,
in a test, or from ``recourse_ray.simulate``. All randomness is drawn from streams keyed
by the system's identity (``_rng.make_rng``), so a system's output is a function of its
settings alone; rows of scope ``timing`` (wall-clock seconds) are the one exception.

Flow: ``prepare_data`` -> ``pretrain_model`` / ``pretrain_vae`` (shared setup, computed
once per dataset x model x setup seed in a sweep) -> ``RecourseSystem.run()``, which
yields one ``RoundOutput`` (metric rows) per evaluation round.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from recourse_ray import data as data_mod
from recourse_ray import generators as gen_mod
from recourse_ray import metrics as metrics_mod
from recourse_ray import models as models_mod
from recourse_ray._rng import make_rng

__all__ = [
    "SimulationSettings",
    "SetupSettings",
    "SystemIdentity",
    "RoundOutput",
    "RecourseSystem",
    "SimulationDiverged",
    "prepare_data",
    "pretrain_model",
    "pretrain_vae",
    "check_fields",
    "settings_dict",
]

logger = logging.getLogger(__name__)


class SimulationDiverged(RuntimeError):
    """The classifier produced non-finite outputs (NaN/inf) after training."""


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_fields(obj: Any, rules: dict[str, tuple[str, float | None, float | None]], where: str) -> list[str]:
    """Range/type checks for dataclass fields; returns one message per problem.

    ``rules[name] = (kind, low, high)`` with kind "int" or "float"; bounds inclusive,
    None for unbounded.
    """
    problems = []
    for name, (kind, low, high) in rules.items():
        value = getattr(obj, name)
        ok_type = _is_int(value) if kind == "int" else _is_num(value)
        ok = ok_type and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            problems.append(
                f"The '{name}' parameter of {where} must be {'an int' if kind == 'int' else 'a number'} "
                f"in the range [{lo}, {hi}]. Got {value!r} instead."
            )
    return problems


def _device_problems(device: Any) -> list[str]:
    """Why ``device`` cannot be used as simulation's torch device (empty when it can)."""
    import torch

    if not isinstance(device, str):
        return [f"The 'device' parameter of simulation must be a str such as 'cpu' or 'cuda'. Got {device!r} instead."]
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return [f"The 'device' parameter of simulation must be a torch device such as 'cpu' or 'cuda'. Got {device!r} instead."]
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return [
                f"The 'device' parameter of simulation is {device!r} but no CUDA device is available "
                "(torch.cuda.is_available() is False)."
            ]
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return [
                f"The 'device' parameter of simulation is {device!r} but only {torch.cuda.device_count()} "
                "CUDA device(s) are available."
            ]
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return [
                f"The 'device' parameter of simulation is {device!r} but no MPS device is available "
                "(torch.backends.mps.is_available() is False)."
            ]
    elif dev.type != "cpu":
        return [f"The 'device' parameter of simulation must be a CPU, CUDA or MPS device. Got {device!r} instead."]
    return []


@dataclass(frozen=True, kw_only=True)
class SimulationSettings:
    """Settings of the round loop (SPEC §2); defaults are the study's values.

    Attributes:
        rounds: number of rounds T_rounds.
        recourse_share: share mu of the current candidates selected per round.
        n_counterfactuals: counterfactuals K generated per selected individual.
        evaluate_every: evaluate every this many rounds (and always round 0 and the last).
        retrain_epochs: epochs of classifier retraining per round.
        retrain_batch_size: mini-batch size of retraining (the study: 1).
        retrain_lr: Adam learning rate of retraining.
        vae_retrain_epochs: epochs of VAE retraining per round (latent generators only).
        vae_batch_size: VAE mini-batch size.
        implement_only_valid: apply only counterfactuals that reached the threshold
            (the study applies all finite ones).
        device: torch device of counterfactual search, and of retraining when the
            model does not take the fused path (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``); never required. It changes speed, not results' meaning, and is
            kept out of system keys.
    """

    rounds: int = 50
    recourse_share: float = 0.05
    n_counterfactuals: int = 5
    evaluate_every: int = 10
    retrain_epochs: int = 10
    retrain_batch_size: int = 1
    retrain_lr: float = 1e-3
    vae_retrain_epochs: int = 10
    vae_batch_size: int = 50
    implement_only_valid: bool = False
    device: str = "cpu"

    def problems(self) -> list[str]:
        out = check_fields(
            self,
            {
                "rounds": ("int", 1, None),
                "recourse_share": ("float", 0.0, 1.0),
                "n_counterfactuals": ("int", 1, None),
                "evaluate_every": ("int", 1, None),
                "retrain_epochs": ("int", 0, None),
                "retrain_batch_size": ("int", 1, None),
                "retrain_lr": ("float", 1e-12, None),
                "vae_retrain_epochs": ("int", 0, None),
                "vae_batch_size": ("int", 1, None),
            },
            "simulation",
        )
        if self.recourse_share == 0:
            out.append("The 'recourse_share' parameter of simulation must be > 0. Got 0 instead.")
        if not isinstance(self.implement_only_valid, bool):
            out.append(f"The 'implement_only_valid' parameter of simulation must be a bool. Got {self.implement_only_valid!r} instead.")
        out.extend(_device_problems(self.device))
        return out

    def evaluation_rounds(self) -> list[int]:
        rounds = set(range(0, self.rounds + 1, self.evaluate_every)) | {0, self.rounds}
        return sorted(rounds)


@dataclass(frozen=True, kw_only=True)
class SetupSettings:
    """How the initial state is built (shared across seeds when ``shared_setup``).

    Attributes:
        n_samples: rows drawn from the dataset (None: the loader's default).
        test_size: share of rows in the untouched test split (stratified).
        pretrain_epochs / pretrain_batch_size / pretrain_lr: initial classifier training
            (study: 100 epochs; batch 1 synthetic, 500 real-world; lr 1e-3).
        vae_latent_dim / vae_hidden / vae_epochs / vae_batch_size: the VAE of latent
            generators (study: latent 2 synthetic / 8 real-world; 100 / 250 epochs; batch 50).
        vae_kl_weight: weight of the VAE's KL term (see models/vae.py for why 0.1).
    """

    n_samples: int | None = None
    test_size: float = 0.2
    pretrain_epochs: int = 100
    pretrain_batch_size: int = 1
    pretrain_lr: float = 1e-3
    vae_latent_dim: int = 2
    vae_hidden: int = 32
    vae_epochs: int = 100
    vae_batch_size: int = 50
    vae_kl_weight: float = 0.1

    def problems(self) -> list[str]:
        out = check_fields(
            self,
            {
                "test_size": ("float", 0.01, 0.99),
                "pretrain_epochs": ("int", 0, None),
                "pretrain_batch_size": ("int", 1, None),
                "pretrain_lr": ("float", 1e-12, None),
                "vae_latent_dim": ("int", 1, None),
                "vae_hidden": ("int", 1, None),
                "vae_epochs": ("int", 0, None),
                "vae_batch_size": ("int", 1, None),
                "vae_kl_weight": ("float", 1e-6, None),
            },
            "setup",
        )
        if self.n_samples is not None and not (_is_int(self.n_samples) and self.n_samples >= 4):
            out.append(f"The 'n_samples' parameter of setup must be an int >= 4 or null. Got {self.n_samples!r} instead.")
        return out


@dataclass(frozen=True, kw_only=True)
class SystemIdentity:
    """Who a system is: the names its rows carry and the keys of its random streams.

    Attributes:
        dataset / model / generator: names (grid labels).
        seed: the replicate index.
        setup_seed: seed of data, split and pretraining (== 0 for every seed when the
            setup is shared, == seed otherwise).
        sweep_seed: base seed of the whole sweep.
        key: the system key (hash of its resolved settings).
    """

    dataset: str
    model: str
    generator: str
    seed: int
    setup_seed: int = 0
    sweep_seed: int = 0
    key: str = ""

    def columns(self, sweep: str = "") -> dict:
        return {
            "sweep": sweep,
            "system_key": self.key,
            "dataset": self.dataset,
            "model": self.model,
            "generator": self.generator,
            "seed": int(self.seed),
        }


@dataclass(frozen=True)
class RoundOutput:
    """The metric rows of one evaluation round.

    ``rows`` hold ``round, metric, scope, value, p_value`` (value/p_value None when
    undefined); callers add the identity columns.
    """

    round: int
    rows: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------- setup
def prepare_data(
    dataset: str | data_mod.Dataset,
    *,
    setup_seed: int,
    sweep_seed: int = 0,
    settings: SetupSettings = SetupSettings(),
    options: dict | None = None,
) -> tuple[data_mod.Dataset, data_mod.Dataset]:
    """Load (or take) a dataset and split it into (train, test) deterministically."""
    name = dataset if isinstance(dataset, str) else dataset.name
    if isinstance(dataset, str):
        dataset = data_mod.load(
            dataset, seed=make_rng("data", sweep_seed, name, setup_seed), n_samples=settings.n_samples, **(options or {})
        )
    return dataset.split(settings.test_size, seed=make_rng("split", sweep_seed, name, setup_seed))


def pretrain_model(
    model: str,
    train: data_mod.Dataset,
    *,
    setup_seed: int,
    sweep_seed: int = 0,
    settings: SetupSettings = SetupSettings(),
    options: dict | None = None,
    dataset_name: str | None = None,
):
    """Create the named classifier with seeded weights and pretrain it on ``train``."""
    dname = dataset_name or train.name
    clf = models_mod.create(
        model, input_dim=train.n_features, seed=make_rng("init", sweep_seed, dname, model, setup_seed), **(options or {})
    )
    clf.fit(
        train.X,
        train.y,
        epochs=settings.pretrain_epochs,
        batch_size=settings.pretrain_batch_size,
        lr=settings.pretrain_lr,
        seed=make_rng("pretrain", sweep_seed, dname, model, setup_seed),
    )
    _check_finite(clf, train.X, "pretraining")
    return clf


def pretrain_vae(
    train: data_mod.Dataset,
    *,
    setup_seed: int,
    sweep_seed: int = 0,
    settings: SetupSettings = SetupSettings(),
    dataset_name: str | None = None,
):
    """Create and pretrain the VAE used by latent-space generators."""
    dname = dataset_name or train.name
    vae = models_mod.VAE(
        train.n_features,
        latent_dim=settings.vae_latent_dim,
        hidden=settings.vae_hidden,
        kl_weight=settings.vae_kl_weight,
        seed=make_rng("vae-init", sweep_seed, dname, setup_seed),
    )
    vae.fit(
        train.X,
        epochs=settings.vae_epochs,
        batch_size=settings.vae_batch_size,
        seed=make_rng("vae-pretrain", sweep_seed, dname, setup_seed),
    )
    return vae


def _check_finite(model, X: np.ndarray, phase: str) -> np.ndarray:
    p = model.predict_proba(X)
    if not np.isfinite(p).all():
        raise SimulationDiverged(
            f"The classifier's predictions became non-finite (NaN/inf) after {phase}; "
            "the system diverged (try a smaller learning rate)."
        )
    return p


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


# ---------------------------------------------------------------------------- round loop
class RecourseSystem:
    """One recourse system evolving over rounds (SPEC §2).

    Args:
        train / test: the initial split (the test split is never modified).
        model: the pretrained classifier; the system trains it in place.
        generator: a ``recourse_ray.generators.Generator``.
        identity: names and seeds (``SystemIdentity``).
        settings: ``SimulationSettings``.
        metric_settings: ``recourse_ray.metrics.MetricSettings``.
        vae: a pretrained VAE (required when the generator searches a latent space);
            the system trains it in place.

    Attributes (after ``run``):
        X / y: current training features and labels.
        model / initial_model / vae: current classifier, frozen round-0 copy, VAE.
        received: (n_train,) bool, individuals who have received recourse.
    """

    def __init__(
        self,
        *,
        train: data_mod.Dataset,
        test: data_mod.Dataset,
        model,
        generator,
        identity: SystemIdentity,
        settings: SimulationSettings = SimulationSettings(),
        metric_settings=None,
        vae=None,
    ) -> None:
        problems = settings.problems()
        if problems:
            raise ValueError("Invalid simulation settings: " + " ".join(problems))
        if getattr(generator, "needs_vae", False) and vae is None:
            raise ValueError(f"Generator {identity.generator!r} searches a latent space and needs a VAE; none was given.")
        self.train0, self.test = train, test
        self.model = model
        self.initial_model = model.clone()
        self.generator = generator
        self.identity = identity
        self.settings = settings
        self.metric_settings = metric_settings or metrics_mod.MetricSettings()
        self.vae = vae
        self.X = train.X.copy()
        self.y = train.y.copy()
        self.received = np.zeros(len(self.y), dtype=bool)
        self.negatives0 = self.initial_model.predict(self.X) == 0
        self.X_original = np.concatenate([train.X, test.X])
        self.grid = metrics_mod.make_grid(
            self.X_original,
            self.metric_settings.n_grid,
            make_rng("grid", identity.sweep_seed, identity.dataset, identity.setup_seed),
        )
        self.timings = {"search": 0.0, "retrain": 0.0, "evaluate": 0.0}
        self.round = 0

    # -- random streams (see SPEC §2 "Selection with common random numbers")
    def _crn(self, stream: str, t: int) -> np.random.Generator:
        """A stream shared by all systems with the same (sweep seed, dataset, seed, round)."""
        ident = self.identity
        return make_rng(stream, ident.sweep_seed, ident.dataset, ident.setup_seed, ident.seed, t)

    def _own(self, stream: str, t: int) -> np.random.Generator:
        """A stream private to this system, keyed by its identity (names and seeds).

        Not by the system key: the key hashes every setting, including a CSV's
        absolute path, so keying streams on it made results depend on where the
        repository was checked out, and made ``simulate()`` differ from a sweep.
        """
        ident = self.identity
        return make_rng(
            stream, "system", ident.sweep_seed, ident.dataset, ident.model, ident.generator, ident.setup_seed,
            ident.seed, t,
        )

    def select(self, t: int) -> np.ndarray:
        """Indices selected for recourse in round ``t`` (common random numbers)."""
        candidates = self.model.predict(self.X) == 0
        n_select = int(round(self.settings.recourse_share * int(candidates.sum())))  # half-even
        order = self._crn("select", t).permutation(len(self.y))
        return order[candidates[order]][:n_select]

    def _fit_device(self) -> dict:
        """``{"device": ...}`` for retraining off the CPU, when the model takes it and not the fused path."""
        device = self.settings.device
        if device is None or str(device) == "cpu" or self.settings.retrain_epochs == 0:
            return {}
        if "device" not in inspect.signature(self.model.fit).parameters:
            return {}
        batch = min(int(self.settings.retrain_batch_size), len(self.y))
        try:
            fused = self.model.uses_fused(batch)
        except TypeError:
            fused = self.model.uses_fused()
        return {} if fused else {"device": device}

    def step(self, t: int) -> dict:
        """Run round ``t``: select, generate, implement, retrain. Returns recourse stats."""
        s = self.settings
        selected = self.select(t)
        stats = {"n_recourse": 0, "validity": np.nan, "cost": np.nan, "iterations": np.nan}
        start = time.perf_counter()
        if selected.size:
            n_train = len(self.y)
            search_seeds = self._crn("search", t).integers(0, 2**63 - 1, size=n_train)[selected]
            choice = self._crn("implement", t).integers(0, s.n_counterfactuals, size=n_train)[selected]
            result = self.generator.search(
                self.model,
                self.X[selected],
                n_counterfactuals=s.n_counterfactuals,
                seeds=search_seeds,
                data=(self.X, self.y),
                vae=self.vae,
                # Only off the CPU: a user's generator need not know about devices.
                **({} if str(s.device) == "cpu" else {"device": s.device}),
            )
            rows = np.arange(selected.size)
            applied_cf = result.counterfactuals[rows, choice]
            ok = result.finite[rows, choice]
            if s.implement_only_valid:
                ok &= result.valid[rows, choice]
            if ok.any():
                idx = selected[ok]
                cf = applied_cf[ok].astype(np.float32)
                self.y[idx] = self.model.predict(cf)
                self.X[idx] = cf
                self.received[idx] = True
                stats = {
                    "n_recourse": int(ok.sum()),
                    "validity": float(result.valid[rows, choice][ok].mean()),
                    "cost": float(result.cost[rows, choice][ok].mean()),
                    "iterations": float(result.iterations[ok].mean()),
                }
            skipped = int((~result.finite[rows, choice]).sum())
            if skipped:
                logger.warning("Round %d: %d non-finite counterfactual(s) not applied.", t, skipped)
        self.timings["search"] += time.perf_counter() - start

        start = time.perf_counter()
        self.model.fit(
            self.X,
            self.y,
            epochs=s.retrain_epochs,
            batch_size=s.retrain_batch_size,
            lr=s.retrain_lr,
            seed=self._own("retrain", t),
            **self._fit_device(),
        )
        _check_finite(self.model, self.X, f"retraining in round {t}")
        if self.vae is not None and getattr(self.generator, "needs_vae", False) and s.vae_retrain_epochs > 0:
            self.vae.fit(self.X, epochs=s.vae_retrain_epochs, batch_size=s.vae_batch_size, seed=self._own("vae", t))
        self.timings["retrain"] += time.perf_counter() - start
        return stats

    def evaluate(self, t: int, stats: dict | None) -> list[dict]:
        """Metric rows for round ``t`` (SPEC §6), plus cumulative phase timings."""
        start = time.perf_counter()
        recourse = None
        if stats is not None:
            share = float(self.received[self.negatives0].mean()) if self.negatives0.any() else np.nan
            recourse = metrics_mod.RecourseStats(
                n_recourse=stats["n_recourse"],
                validity=stats["validity"],
                cost=stats["cost"],
                iterations=stats["iterations"],
                share_recourse=share,
            )
        ctx = metrics_mod.EvaluationContext(
            initial_model=self.initial_model,
            model=self.model,
            X_train0=self.train0.X,
            y_train0=self.train0.y,
            X_train=self.X,
            y_train=self.y,
            X_test=self.test.X,
            y_test=self.test.y,
            grid=self.grid,
            settings=self.metric_settings,
            rng=self._own("metrics", t),
            recourse=recourse,
        )
        rows = [
            {
                "round": t,
                "metric": mv.name,
                "scope": mv.scope,
                "value": _finite_or_none(mv.value),
                "p_value": _finite_or_none(mv.p_value),
            }
            for mv in metrics_mod.evaluate(ctx)
        ]
        self.timings["evaluate"] += time.perf_counter() - start
        for phase, seconds in self.timings.items():
            rows.append({"round": t, "metric": f"time_{phase}_s", "scope": "timing", "value": seconds, "p_value": None})
        return rows

    def run(self) -> Iterator[RoundOutput]:
        """Evaluate round 0, then run every round; yields one RoundOutput per evaluation round."""
        evaluation_rounds = set(self.settings.evaluation_rounds())
        yield RoundOutput(0, self.evaluate(0, None))
        for t in range(1, self.settings.rounds + 1):
            stats = self.step(t)
            self.round = t
            if t in evaluation_rounds:
                yield RoundOutput(t, self.evaluate(t, stats))

    def state_arrays(self, surface_points: int = 60) -> dict[str, np.ndarray]:
        """The final state as arrays (data, weights and, for 2-D data, probability surfaces)."""
        out = {
            "X_initial": self.train0.X,
            "y_initial": self.train0.y,
            "X_final": self.X,
            "y_final": self.y,
        }
        for name, m in (("initial", self.initial_model), ("final", self.model)):
            if hasattr(m, "parameters_vector"):
                out[f"params_{name}"] = m.parameters_vector()
        if self.X.shape[1] == 2:
            both = np.concatenate([self.X_original, self.X])
            lo, hi = both.min(axis=0), both.max(axis=0)
            pad = 0.1 * (hi - lo)
            x1 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], surface_points, dtype=np.float32)
            x2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], surface_points, dtype=np.float32)
            g1, g2 = np.meshgrid(x1, x2, indexing="xy")
            pts = np.c_[g1.ravel(), g2.ravel()]
            out["surface_x1"], out["surface_x2"] = x1, x2
            out["surface_initial"] = self.initial_model.predict_proba(pts).reshape(g1.shape)
            out["surface_final"] = self.model.predict_proba(pts).reshape(g1.shape)
        return out


def settings_dict(obj) -> dict:
    """A dataclass's fields as a plain dict (for hashing and manifests)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}

