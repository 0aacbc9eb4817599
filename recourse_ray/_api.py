"""The Python API for a single system, without a sweep or Ray.

``simulate`` builds the initial state (data, split, pretrained classifier, VAE when
needed), runs the round loop and returns the metrics as a polars DataFrame together with
the final state; ``plot_system`` draws a 2-D dataset over a model's probability surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recourse_ray import data as data_mod
from recourse_ray import generators as gen_mod
from recourse_ray import metrics as metrics_mod
from recourse_ray import protocols as protocols_mod
from recourse_ray._config import INT64_MAX, build_settings, check_int, param_message
from recourse_ray.simulation import (
    RecourseSystem,
    SetupSettings,
    SimulationSettings,
    SystemIdentity,
    prepare_data,
    pretrain_model,
    pretrain_vae,
)
from recourse_ray.store import POLARS_SCHEMA

__all__ = ["SimulationResult", "simulate", "plot_system"]


@dataclass
class SimulationResult:
    """Outcome of ``simulate``.

    Attributes:
        metrics: long-format metric rows (round, metric, scope, value, p_value, and the
            identity columns dataset/model/generator/seed).
        data: the final training data (features moved by recourse, current labels).
        initial_data: the round-0 training data.
        test: the untouched test split.
        model: the final classifier. initial_model: the round-0 classifier.
        vae: the VAE (latent-space generators only).
        system: the ``RecourseSystem`` itself (timings, ``received`` mask, ...).
    """

    metrics: pl.DataFrame
    data: data_mod.Dataset
    initial_data: data_mod.Dataset
    test: data_mod.Dataset
    model: Any
    initial_model: Any
    vae: Any
    system: RecourseSystem

    def final(self, metric: str) -> float | None:
        """The value of ``metric`` at the last evaluated round."""
        rows = self.metrics.filter(pl.col("metric") == metric).sort("round")
        return None if rows.is_empty() else rows["value"][-1]


def _settings_from(cls, values: dict, where: str):
    obj, problems = build_settings(cls, values, where)
    if problems:
        raise ValueError(f"Invalid {where} settings: " + " ".join(problems))
    return obj


def _argument_problems(dataset: object, model: object, generator: object, seed: object, sweep_seed: object,
                       rounds: object) -> list[str]:
    """The checks a sweep file gets, for ``simulate``'s own arguments (before any work is done)."""
    problems = [m for m in (check_int(seed, "seed", "simulate", 0, INT64_MAX),
                            check_int(sweep_seed, "sweep_seed", "simulate", 0, INT64_MAX),
                            check_int(rounds, "rounds", "simulate", 1, 100_000)) if m]
    if not isinstance(dataset, (str, data_mod.Dataset)):
        problems.append(param_message("dataset", "simulate", "a dataset name (str) or a Dataset", dataset))
    if not isinstance(model, str) and not all(hasattr(model, a) for a in ("predict_proba", "fit")):
        problems.append(param_message("model", "simulate", "a model name (str) or a classifier (the Classifier "
                                      "protocol: predict_proba, fit, ...)", model))
    if not isinstance(generator, str) and not callable(getattr(generator, "search", None)):
        problems.append(param_message("generator", "simulate", "a generator preset name (str) or a Generator",
                                      generator))
    return problems


def simulate(
    dataset: str | data_mod.Dataset = "overlapping",
    model: str | Any = "mlp",
    generator: str | Any = "generic",
    *,
    seed: int = 0,
    rounds: int = 50,
    sweep_seed: int = 0,
    setup: dict | SetupSettings | None = None,
    metrics: dict | Any | None = None,
    dataset_options: dict | None = None,
    model_options: dict | None = None,
    generator_options: dict | None = None,
    protocol: str | dict | None = None,
    constraints: Any = None,
    **settings,
) -> SimulationResult:
    """Simulate one recourse system for ``rounds`` rounds (SPEC §2) and return its metrics.

    Args:
        dataset: a registered dataset name or a ``Dataset`` (split 80/20 here).
        model: a registered classifier name (created and pretrained on the training split)
            or a classifier object (used as the round-0 model as it is, no pretraining).
        generator: a preset name or a ``Generator`` object.
        seed: the replicate seed (selection, search and retraining randomness).
        rounds: number of rounds.
        sweep_seed: base seed of data, split and pretraining.
        setup: ``SetupSettings`` or a dict of its fields (pretraining, VAE, n_samples).
        metrics: ``MetricSettings`` or a dict of its fields.
        dataset_options / model_options / generator_options: passed to the loader, to
            ``models.create`` and to ``generators.create``.
        protocol: a protocol name (``"ard-0.1.0"``) or ``{"name": ..., "without": [...]}``
            (``recourse_ray.protocols``): its settings under the ones given here. One
            system is a cohort of one, so ``lockstep`` selection equals its own.
        constraints: actionability constraints of the dataset's counterfactuals, a
            ``recourse_ray.constraints.Constraints`` or its mapping (``{"immutable": ["SEX"],
            "bounds": {"LIMIT_BAL": [10000, None]}}``, docs/constraints.md); None: only
            the dataset's own one-hot groups. Checked against the data before anything runs.
        **settings: fields of ``SimulationSettings`` (recourse_share, n_counterfactuals,
            evaluate_every, retrain_epochs, retrain_batch_size, ...).

    Example:
        >>> result = simulate("overlapping", "logistic_regression", "generic", rounds=10)  # doctest: +SKIP
        >>> result.metrics.filter(pl.col("metric") == "domain_mmd")  # doctest: +SKIP
    """
    problems = _argument_problems(dataset, model, generator, seed, sweep_seed, rounds)
    if problems:
        raise ValueError(" ".join(problems))
    proto = protocols_mod.resolve(protocol, problems)
    if problems:
        raise ValueError("Invalid protocol: " + " ".join(problems))
    sim = _settings_from(SimulationSettings, {**proto.simulation, "rounds": rounds, **settings}, "simulation")
    if isinstance(setup, SetupSettings):
        setup_s = setup
    else:
        setup_s = _settings_from(SetupSettings, {**proto.setup, **dict(setup or {})}, "setup")
    if metrics is None or isinstance(metrics, dict):
        metric_s = _settings_from(metrics_mod.MetricSettings, {**proto.metrics, **dict(metrics or {})}, "metrics")
    else:
        metric_s = metrics
    if isinstance(generator, str):
        options = protocols_mod.deep_merge(proto.generator_overrides(generator), generator_options or {})
        gen = gen_mod.create(generator, **options)
    else:
        gen = generator
    if isinstance(model, str):
        model_options = protocols_mod.deep_merge(proto.model_params(model), model_options or {})
    gen_name = generator if isinstance(generator, str) else getattr(generator, "name", type(generator).__name__)
    dname = dataset if isinstance(dataset, str) else dataset.name
    train, test = prepare_data(dataset, setup_seed=0, sweep_seed=sweep_seed, settings=setup_s, options=dataset_options,
                               constraints=constraints)
    if isinstance(model, str):
        mname = model
        clf = pretrain_model(model, train, setup_seed=0, sweep_seed=sweep_seed, settings=setup_s, options=model_options, dataset_name=dname)
    else:
        mname = getattr(model, "name", type(model).__name__)
        clf = model
    vae = None
    if getattr(gen, "needs_vae", False):
        vae = pretrain_vae(train, setup_seed=0, sweep_seed=sweep_seed, settings=setup_s, dataset_name=dname)
    identity = SystemIdentity(dataset=dname, model=mname, generator=gen_name, seed=seed, sweep_seed=sweep_seed)
    system = RecourseSystem(
        train=train, test=test, model=clf, generator=gen, identity=identity, settings=sim, metric_settings=metric_s, vae=vae
    )
    rows = []
    ident = identity.columns()
    for out in system.run():
        rows.extend({**ident, **r} for r in out.rows)
    # the results dataset's row schema, without the columns that only a sweep fills in
    frame = pl.DataFrame(rows, schema=POLARS_SCHEMA).drop("sweep", "system_key")
    return SimulationResult(
        metrics=frame,
        data=train.with_data(system.X, system.y),
        initial_data=train,
        test=test,
        model=system.model,
        initial_model=system.initial_model,
        vae=vae,
        system=system,
    )


def plot_system(model, dataset: data_mod.Dataset, *, ax=None, title: str | None = None, resolution: int = 100):
    """Draw a 2-D dataset over the model's predicted probability of the target class.

    Args:
        model: a classifier with ``predict_proba``.
        dataset: a ``Dataset`` with exactly 2 features.
        ax: a matplotlib Axes to draw on (a new figure when None).
        title: the axes title.
        resolution: grid points per axis of the probability surface.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if dataset.n_features != 2:
        raise ValueError(f"plot_system needs a dataset with 2 features. Got {dataset.n_features} instead.")
    X, y = dataset.X, dataset.y
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.15 * (hi - lo)
    g1, g2 = np.meshgrid(
        np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution), np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    )
    proba = model.predict_proba(np.c_[g1.ravel(), g2.ravel()].astype(np.float32)).reshape(g1.shape)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.6), constrained_layout=True)
    else:
        fig = ax.figure
    surface = ax.contourf(g1, g2, proba, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.55, vmin=0, vmax=1)
    ax.contour(g1, g2, proba, levels=[0.5], colors="k", linewidths=1.0)
    ax.scatter(X[y == 0, 0], X[y == 0, 1], s=8, c="#D55E00", edgecolors="none", label="y = 0")
    ax.scatter(X[y == 1, 0], X[y == 1, 1], s=8, c="#0072B2", edgecolors="none", label="y = 1")
    ax.set_xlabel(dataset.feature_names[0])
    ax.set_ylabel(dataset.feature_names[1])
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, frameon=True)
    fig.colorbar(surface, ax=ax, label="p(y = 1)")
    return fig
