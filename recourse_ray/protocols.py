"""Named protocols: bundles of settings that reproduce another implementation's mechanisms.

A sweep file's ``protocol: ard-0.1.0`` (or the Python API's ``simulate(...,
protocol=...)``) switches on every mechanism by which the reference implementation
(AlgorithmicRecourseDynamics.jl v0.1.0 on CounterfactualExplanations.jl 0.1.4, the run
behind the study's December-2022 outputs) differs from this project's defaults. Each
mechanism is one or more ordinary settings, so it can also be set on its own, and
``protocol: {name: ard-0.1.0, without: [mechanism, ...]}`` leaves some out (the
ablation). Mechanisms that reproduce a flaw of the reference are marked ``bug`` and
exist only through these settings; the default protocol (``default``) is this project's
semantics (SPEC §1-6).

Sections a mechanism can set: ``simulation`` (``settings.SimulationSettings``),
``setup`` (``settings.SetupSettings``), ``metrics`` (``metrics.MetricSettings``),
``models`` (parameters of the built-in classifiers) and ``search`` (the generator
overrides of ``generators.reference``, by preset). A user's explicit settings always win
over the protocol's.

Where it sits: read by ``spec.parse`` (and ``_api.simulate``) before settings are built;
it imports only ``generators.reference``. docs/reference_mode.md lists every mechanism.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recourse_ray._registry import suggest
from recourse_ray.generators import reference as search_reference

__all__ = [
    "Mechanism",
    "PROTOCOLS",
    "DEFAULT",
    "protocol_names",
    "mechanisms",
    "Resolved",
    "resolve",
    "deep_merge",
]

DEFAULT = "default"
# The built-in classifiers whose parameters a protocol may set (user models keep theirs).
BUILTIN_MODELS = ("logistic_regression", "mlp", "deep_ensemble")


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """One mechanism of a protocol and the settings that switch it on.

    Attributes:
        name: its key (``without:`` entries name it).
        summary: what the reference does, in one sentence.
        bug: reproduces a flaw of the reference (labelled so in the docs).
        simulation / setup / metrics: settings fields and values.
        models: parameters of the built-in classifiers.
        search: True for a mechanism of the counterfactual search, whose overrides per
            generator preset come from ``generators.reference``.
    """

    name: str
    summary: str
    bug: bool = False
    simulation: Mapping[str, Any] = field(default_factory=dict)
    setup: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Any] = field(default_factory=dict)
    search: bool = False


def _search_mechanisms() -> tuple[Mechanism, ...]:
    found = [
        Mechanism(name=m.name, summary=m.summary, bug=m.bug, search=True)
        for m in search_reference.MECHANISMS.values()
    ]
    found.append(Mechanism(
        name=search_reference.RUN_SETTINGS,
        summary="the run's search settings: plain gradient descent with step 0.1 (Descent()), lambda 0.1 "
        "(DiCE [0.1, 1.0]), Greedy eps 0.1, T = 100, gamma = 0.5",
        search=True,
    ))
    return tuple(found)


_ARD_010: tuple[Mechanism, ...] = (
    Mechanism(
        name="candidates_not_certain",
        summary="candidates are the training rows whose float32 probability is not exactly 1.0 (raw "
        "probabilities compared with the target), so predicted positives are chosen too; fixed to round(p) "
        "in v0.1.2",
        bug=True,
        simulation={"candidates": "not_certain"},
    ),
    Mechanism(
        name="lockstep",
        summary="the systems of a (dataset, fold) cohort advance in lockstep and draw the same individuals "
        "from the intersection of their candidate sets",
        simulation={"selection": "lockstep"},
    ),
    Mechanism(
        name="no_retraining_when_nobody_chosen",
        summary="a round in which nobody is chosen leaves the model untouched",
        simulation={"retrain_when_none_selected": False},
    ),
    Mechanism(
        name="training_in_index_order",
        summary="pretraining and retraining visit the rows in index order every epoch (no shuffling)",
        simulation={"retrain_shuffle": False},
        setup={"pretrain_shuffle": False},
    ),
    Mechanism(
        name="domain_baseline_train_test",
        summary="domain MMD compares the original train + test target-class points with the current training "
        "target-class points, the current side cut to the size of the first",
        metrics={"domain_baseline": "train_test", "mmd_subsample": "match_first"},
    ),
    Mechanism(
        name="grid_linspace_redrawn",
        summary="the grid of the grid PP MMD takes each coordinate from a 100-value linspace over the data "
        "range and is drawn anew at every evaluation",
        metrics={"grid": "linspace", "grid_steps": 100, "grid_redraw": True},
    ),
    Mechanism(
        name="one_permutation_p_values",
        summary="MMD p-values from a single permutation, as the share of null statistics >= the observed one "
        "(0 or 1)",
        bug=True,
        metrics={"n_permutations": 1, "p_value": "reference"},
    ),
    Mechanism(
        name="recourse_after_retraining",
        summary="success rate and distance (mean absolute coordinate change over all K) of each round's "
        "counterfactuals, measured after the round's retraining and averaged over rounds; n_individuals",
        metrics={"reference_recourse_metrics": True},
    ),
    Mechanism(
        name="n_individuals_plus_one",
        summary="n_individuals counts one row too many (a placeholder entry of the set of chosen rows)",
        bug=True,
        metrics={"n_individuals_offset": 1},
    ),
    Mechanism(
        name="reference_vae",
        bug=True,
        summary="REVISE's VAE as the reference's: summed squared error / batch + full KL + 0.01 x squared L2 "
        "of the decoder's parameters, one Adam kept across all refits, trained by each system on its own data "
        "(it collapses on some data: recorded, see docs/semantics.md)",
        setup={"vae_objective": "reference", "vae_kl_weight": 1.0, "vae_decoder_weight_decay": 0.01,
               "vae_keep_optimizer": True, "vae_per_system": True},
    ),
) + _search_mechanisms()

PROTOCOLS: dict[str, tuple[Mechanism, ...]] = {DEFAULT: (), "ard-0.1.0": _ARD_010}


def protocol_names() -> list[str]:
    """The names a sweep file's ``protocol:`` accepts."""
    return list(PROTOCOLS)


def mechanisms(protocol: str) -> dict[str, Mechanism]:
    """The mechanisms of ``protocol`` by name (empty for ``default``)."""
    return {m.name: m for m in PROTOCOLS[protocol]}


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict:
    """``base`` updated by ``top``; mappings under the same key merge recursively, ``top`` wins."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """A protocol with some mechanisms left out, as settings per section.

    Attributes:
        name: the protocol's name.
        without: the mechanisms left out.
        simulation / setup / metrics: settings the protocol sets (a user's win).
        models: parameters for the built-in classifiers.
    """

    name: str = DEFAULT
    without: tuple[str, ...] = ()
    simulation: Mapping[str, Any] = field(default_factory=dict)
    setup: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> list[str]:
        """The mechanisms switched on."""
        return [m for m in mechanisms(self.name) if m not in self.without]

    def generator_overrides(self, preset: str) -> dict:
        """The search overrides of the protocol for a generator ``preset`` ({} when it has no reference form)."""
        if self.name == DEFAULT or preset not in search_reference.reference_presets():
            return {}
        own = search_reference.reference_mechanisms(preset)
        left_out = [m for m in own if m in self.without]
        return search_reference.reference_overrides(preset, without=left_out)

    def model_params(self, preset: str) -> dict:
        """The parameters the protocol sets for a classifier ``preset`` ({} for user models)."""
        return dict(self.models) if preset in BUILTIN_MODELS else {}

    def to_raw(self) -> Any:
        """The sweep-file form (``"ard-0.1.0"`` or ``{name, without}``)."""
        if not self.without:
            return self.name
        return {"name": self.name, "without": list(self.without)}


def resolve(raw: Any, problems: list[str]) -> Resolved:
    """A sweep file's ``protocol:`` value as settings; problems are appended to ``problems``.

    Args:
        raw: None (the default protocol), a protocol name, or a mapping
            ``{name: NAME, without: [mechanism, ...]}``.
        problems: where to report what is wrong (all of it).
    """
    if raw is None:
        return Resolved()
    names = protocol_names()
    if isinstance(raw, str):
        name, without = raw, []
    elif isinstance(raw, Mapping):
        unknown = [k for k in raw if k not in ("name", "without")]
        for key in unknown:
            problems.append(f"Unknown key {key!r} in 'protocol'.{suggest(str(key), ['name', 'without'])} "
                            "Valid keys: name, without.")
        name, without = raw.get("name"), raw.get("without", [])
    else:
        problems.append(f"'protocol' must be a protocol name or a mapping {{name: NAME, without: [...]}}. "
                        f"Got {type(raw).__name__} instead.")
        return Resolved()
    if name not in names:
        problems.append(f"Unknown protocol {name!r}.{suggest(str(name), names)} Valid protocols: {', '.join(names)}.")
        return Resolved()
    if isinstance(without, str):
        without = [without]
    if not isinstance(without, list) or not all(isinstance(w, str) for w in without):
        problems.append(f"'protocol.without' must be a list of mechanism names. Got {without!r} instead.")
        without = []
    known = mechanisms(name)
    for w in without:
        if w not in known:
            problems.append(f"Unknown mechanism {w!r} in 'protocol.without'.{suggest(w, list(known))} "
                            f"Mechanisms of {name}: {', '.join(known)}.")
    kept = [m for m in known.values() if m.name not in without]
    merged: dict[str, dict] = {"simulation": {}, "setup": {}, "metrics": {}, "models": {}}
    for m in kept:
        for section in merged:
            merged[section].update(getattr(m, section))
    return Resolved(name=name, without=tuple(w for w in without if w in known), **merged)


def describe(protocol: str, without: Iterable[str] = ()) -> list[dict]:
    """One row per mechanism (name, on/off, bug, summary): for docs, reports and ``recourse-ray protocols``."""
    left_out = set(without)
    return [
        {"mechanism": m.name, "on": m.name not in left_out, "bug": m.bug, "summary": m.summary}
        for m in PROTOCOLS[protocol]
    ]
