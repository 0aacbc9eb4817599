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

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from recourse_ray import data as data_mod
from recourse_ray import generators as gen_mod
from recourse_ray import metrics as metrics_mod
from recourse_ray import models as models_mod
from recourse_ray._rng import make_rng
from recourse_ray.constraints import Constraints
from recourse_ray.settings import SetupSettings, SimulationSettings
from recourse_ray._identity import identity_row

__all__ = [
    "SimulationSettings",
    "SetupSettings",
    "SystemIdentity",
    "RoundOutput",
    "RecourseSystem",
    "SimulationDiverged",
    "prepare_data",
    "attach_constraints",
    "bind_constraints",
    "select_from",
    "cohort_candidates",
    "pretrain_model",
    "pretrain_vae",
]

logger = logging.getLogger(__name__)


class SimulationDiverged(RuntimeError):
    """The classifier produced non-finite outputs (NaN/inf) after training."""


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
        """The identity columns of this system's rows (``store.IDENTITY_COLUMNS``)."""
        return identity_row(sweep=sweep, system_key=self.key, dataset=self.dataset, model=self.model,
                            generator=self.generator, seed=self.seed)


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
    constraints: Constraints | dict | None = None,
) -> tuple[data_mod.Dataset, data_mod.Dataset]:
    """Load (or take) a dataset and split it into (train, test) deterministically.

    Args:
        options: the loader's options; a ``constraints`` entry (a sweep file's
            ``datasets.<name>.constraints`` block) is taken out and attached.
        constraints: a :class:`~recourse_ray.constraints.Constraints` (or its mapping)
            for the dataset's counterfactuals; wins over one in ``options``.

    Returns:
        (train, test), each carrying the constraints (``Dataset.constraints``).

    Raises:
        ValueError: for constraints that do not fit the dataset's columns or that the
            loaded data already violate (every problem at once).
    """
    name = dataset if isinstance(dataset, str) else dataset.name
    options = dict(options or {})
    raw = options.pop("constraints", None) if constraints is None else constraints
    if isinstance(dataset, str):
        dataset = data_mod.load(
            dataset, seed=make_rng("data", sweep_seed, name, setup_seed), n_samples=settings.n_samples, **options
        )
    if raw is not None:
        dataset = attach_constraints(dataset, raw)
    return dataset.split(settings.test_size, seed=make_rng("split", sweep_seed, name, setup_seed))


def attach_constraints(dataset: data_mod.Dataset, constraints: Constraints | dict) -> data_mod.Dataset:
    """``dataset`` carrying ``constraints``, checked against its columns and rows (raw units).

    Raises:
        ValueError: listing every problem of the block, its columns and the data.
    """
    built = constraints if isinstance(constraints, Constraints) else Constraints.from_dict(constraints)
    built.bind(dataset)  # raises with every problem; the split is bound again in its own units
    return replace(dataset, constraints=built)


def bind_constraints(train: data_mod.Dataset):
    """The :class:`~recourse_ray.constraints.Feasibility` of a training split, or None when nothing applies.

    A dataset without declared constraints still has its one-hot groups kept one-hot.
    """
    return (train.constraints or Constraints()).bind(train)


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
        **({} if settings.pretrain_shuffle else {"shuffle": False}),
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
    owner: tuple = (),
):
    """Create and pretrain the VAE used by latent-space generators.

    Args:
        owner: () for the VAE shared by a (dataset, setup seed); a system's
            (model, generator, seed) when each system trains its own
            (``settings.vae_per_system``), which keys its random streams.
    """
    dname = dataset_name or train.name
    vae = models_mod.VAE(
        train.n_features,
        latent_dim=settings.vae_latent_dim,
        hidden=settings.vae_hidden,
        kl_weight=settings.vae_kl_weight,
        seed=make_rng("vae-init", sweep_seed, dname, setup_seed, *owner),
        objective=settings.vae_objective,
        decoder_weight_decay=settings.vae_decoder_weight_decay,
        keep_optimizer=settings.vae_keep_optimizer,
    )
    vae.fit(
        train.X,
        epochs=settings.vae_epochs,
        batch_size=settings.vae_batch_size,
        seed=make_rng("vae-pretrain", sweep_seed, dname, setup_seed, *owner),
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
def select_from(candidates: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The first ``round_half_even(share * |candidates|)`` candidates in a permutation drawn from ``rng``.

    Args:
        candidates: (n,) bool mask.
        share: mu, the share of the candidates to select.
        rng: the round's selection stream (one permutation of all n rows is drawn, so
            systems with equal candidate sets select equal rows).

    Returns:
        (n_select,) int64 row indices, in the permutation's order.
    """
    n_select = int(round(share * int(candidates.sum())))  # half-even
    order = rng.permutation(len(candidates))
    return order[candidates[order]][:n_select]


def cohort_candidates(masks: list[np.ndarray]) -> np.ndarray:
    """The intersection of a lockstep cohort's candidate sets (the reference's rule)."""
    out = np.asarray(masks[0], dtype=bool).copy()
    for m in masks[1:]:
        out &= np.asarray(m, dtype=bool)
    return out


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
        self.feasibility = bind_constraints(train)
        self.X = train.X.copy()
        self.y = train.y.copy()
        self.received = np.zeros(len(self.y), dtype=bool)
        self.chosen = np.zeros(len(self.y), dtype=bool)  # selected at least once
        self.negatives0 = self.initial_model.predict(self.X) == 0
        self.X_original = np.concatenate([train.X, test.X])
        ms = self.metric_settings
        self.grid = metrics_mod.make_grid(
            self.X_original,
            ms.n_grid,
            make_rng("grid", identity.sweep_seed, identity.dataset, identity.setup_seed),
            kind=ms.grid,
            steps=ms.grid_steps,
        )
        self.round_benchmarks: list = []  # the reference's per-round recourse measures
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

    def candidates(self) -> np.ndarray:
        """(n_train,) bool: who may be selected now, under the current model.

        ``settings.candidates`` chooses the rule: rows predicted as non-target (the
        study), or rows whose float32 probability is not exactly 1.0 (the reference
        implementation v0.1.0, positives included: a bug it fixed in v0.1.2).
        """
        if self.settings.candidates == "not_certain":
            return self.model.predict_proba(self.X).astype(np.float32) != np.float32(1.0)
        return self.model.predict(self.X) == 0

    def select(self, t: int, candidates: np.ndarray | None = None) -> np.ndarray:
        """Indices selected for recourse in round ``t`` (common random numbers).

        Args:
            t: the round.
            candidates: (n_train,) bool, the candidate set to draw from; default
                :meth:`candidates`. A lockstep cohort passes the intersection of its
                systems' sets, so all of them select the same rows.
        """
        mask = self.candidates() if candidates is None else np.asarray(candidates, dtype=bool)
        return select_from(mask, self.settings.recourse_share, self._crn("select", t))

    def step(self, t: int, candidates: np.ndarray | None = None) -> dict:
        """Run round ``t``: select, generate, implement, retrain. Returns recourse stats.

        Args:
            t: the round.
            candidates: the candidate set to select from (see :meth:`select`).
        """
        s = self.settings
        selected = self.select(t, candidates)
        self.chosen[selected] = True
        stats = {"n_recourse": 0, "validity": np.nan, "cost": np.nan, "iterations": np.nan}
        start = time.perf_counter()
        result = factuals = None
        if selected.size:
            n_train = len(self.y)
            factuals = self.X[selected].copy()
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
                # Only with constraints: a user's generator need not know about them.
                **({} if self.feasibility is None else {"constraints": self.feasibility}),
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
            if self.feasibility is not None:
                stats.update(self._feasibility_stats(result, factuals, applied_cf, ok))
            skipped = int((~result.finite[rows, choice]).sum())
            if skipped:
                logger.warning("Round %d: %d non-finite counterfactual(s) not applied.", t, skipped)
        self.timings["search"] += time.perf_counter() - start
        if selected.size == 0 and not s.retrain_when_none_selected:
            return stats  # the reference retrains only after somebody acted
        start = time.perf_counter()
        self.model.fit(
            self.X,
            self.y,
            epochs=s.retrain_epochs,
            batch_size=s.retrain_batch_size,
            lr=s.retrain_lr,
            seed=self._own("retrain", t),
            device=s.device,
            # Only when asked: a user's classifier need not take the reference's order.
            **({} if s.retrain_shuffle else {"shuffle": False}),
        )
        _check_finite(self.model, self.X, f"retraining in round {t}")
        if self.metric_settings.reference_recourse_metrics and result is not None:
            # The reference measures the round's recourse after retraining, over all K.
            self.round_benchmarks.append(
                metrics_mod.benchmark_round(self.model, factuals, result.counterfactuals,
                                            self.generator.decision_threshold)
            )
        if self.vae is not None and getattr(self.generator, "needs_vae", False) and s.vae_retrain_epochs > 0:
            self.vae.fit(self.X, epochs=s.vae_retrain_epochs, batch_size=s.vae_batch_size, seed=self._own("vae", t),
                         device=s.device)
        self.timings["retrain"] += time.perf_counter() - start
        return stats

    def _feasibility_stats(self, result, factuals: np.ndarray, applied: np.ndarray, ok: np.ndarray) -> dict:
        """The round's constraint measures: violations among the implemented, and who had no feasible valid option."""
        feas = self.feasibility
        violated = feas.violations(applied[ok], factuals[ok]) if ok.any() else np.zeros(0, bool)
        if violated.any():
            logger.error("%d implemented counterfactual(s) violate the constraints.", int(violated.sum()))
        feasible = result.valid & result.finite & ~feas.violations(result.counterfactuals, factuals)
        return {
            "constraint_violation_share": float(violated.mean()) if violated.size else np.nan,
            "no_feasible_share": float((~feasible.any(axis=1)).mean()),
        }

    def evaluate(self, t: int, stats: dict | None) -> list[dict]:
        """Metric rows for round ``t`` (SPEC §6), plus cumulative phase timings."""
        start = time.perf_counter()
        recourse = None
        if stats is not None:
            share = float(self.received[self.negatives0].mean()) if self.negatives0.any() else np.nan
            reference = self.metric_settings.reference_recourse_metrics
            recourse = metrics_mod.RecourseStats(
                n_recourse=stats["n_recourse"],
                validity=stats["validity"],
                cost=stats["cost"],
                iterations=stats["iterations"],
                share_recourse=share,
                n_chosen=int(self.chosen.sum()) if reference else None,
                round_benchmarks=tuple(self.round_benchmarks) if reference else (),
                **self._constraint_measures(stats),
            )
        ms = self.metric_settings
        grid = self.grid
        if ms.grid_redraw:
            # The reference draws a new grid at every evaluation (the same for a cohort).
            grid = metrics_mod.make_grid(self.X_original, ms.n_grid, self._crn("grid", t), kind=ms.grid,
                                         steps=ms.grid_steps)
        ctx = metrics_mod.EvaluationContext(
            initial_model=self.initial_model,
            model=self.model,
            X_train0=self.train0.X,
            y_train0=self.train0.y,
            X_train=self.X,
            y_train=self.y,
            X_test=self.test.X,
            y_test=self.test.y,
            grid=grid,
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
        rows.extend(self._vae_rows(t))
        self.timings["evaluate"] += time.perf_counter() - start
        for phase, seconds in self.timings.items():
            rows.append({"round": t, "metric": f"time_{phase}_s", "scope": "timing", "value": seconds, "p_value": None})
        return rows

    def _constraint_measures(self, stats: dict) -> dict:
        """The RecourseStats fields of the constraint measures: none without constraints."""
        if self.feasibility is None:
            return {}
        return {k: stats.get(k, np.nan) for k in ("constraint_violation_share", "no_feasible_share")}

    def _vae_rows(self, t: int) -> list[dict]:
        """The VAE's state after its last fit: reconstruction error and whether it collapsed.

        A collapsed VAE (decoded spread < 0.1 x the data's in every varying feature)
        makes latent-space recourse land near the data mean; it is recorded, never silent.
        """
        vae = self.vae
        if vae is None or getattr(vae, "reconstruction_error_", None) is None:
            return []
        spread = np.asarray(vae.decoded_spread_, dtype=np.float64)
        data = np.asarray(vae.data_spread_, dtype=np.float64)
        varying = data > 0
        ratio = float((spread[varying] / data[varying]).min()) if varying.any() else None
        return [
            {"round": t, "metric": "vae_reconstruction_error", "scope": "generative",
             "value": _finite_or_none(vae.reconstruction_error_), "p_value": None},
            {"round": t, "metric": "vae_spread_ratio", "scope": "generative", "value": _finite_or_none(ratio),
             "p_value": None},
            {"round": t, "metric": "vae_collapsed", "scope": "generative", "value": float(bool(vae.collapsed)),
             "p_value": None},
        ]

    def start(self) -> RoundOutput:
        """Round 0: the initial state's metric rows."""
        self.evaluation_rounds = set(self.settings.evaluation_rounds())
        return RoundOutput(0, self.evaluate(0, None))

    def advance(self, t: int, candidates: np.ndarray | None = None) -> RoundOutput | None:
        """Run round ``t`` (see :meth:`step`); its rows when ``t`` is an evaluation round, else None."""
        stats = self.step(t, candidates)
        self.round = t
        return RoundOutput(t, self.evaluate(t, stats)) if t in self.evaluation_rounds else None

    def run(self) -> Iterator[RoundOutput]:
        """Evaluate round 0, then run every round; yields one RoundOutput per evaluation round."""
        yield self.start()
        for t in range(1, self.settings.rounds + 1):
            out = self.advance(t)
            if out is not None:
                yield out

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
