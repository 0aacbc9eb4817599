"""The reference-compatible search: the reference's mechanisms as ``create`` overrides.

The study's outputs were made by AlgorithmicRecourseDynamics.jl v0.1.0 on
CounterfactualExplanations.jl 0.1.4 (Julia). Its counterfactual search differs from ours
(SPEC §4, our choice) in a handful of separable mechanisms; each is an option of the
engine's pieces, off by default, and this module names them so that a sweep can switch
them on all at once or leave them out one at a time:

    overrides = reference_overrides("dice")                      # the reference's form
    gen = create("dice", **overrides)
    without = reference_overrides("dice", without=("joint_distance",))

:func:`reference_mechanisms` maps each mechanism's name to its overrides; their merge
(:func:`merge_overrides`) is :func:`reference_overrides`. :data:`MECHANISMS` says what each
one reproduces, whether it reproduces a bug of the reference, and which mechanisms it
needs. The entry ``"run_settings"`` is not a mechanism but the settings of the
reference's run (plain gradient descent, ``Descent(0.1)``; lambda 0.1, DiCE [0.1, 1.0];
Greedy eps 0.1; T = 100; gamma = 0.5); leaving it out keeps our presets' settings.

Where it sits: a table of overrides for ``presets.create``; it imports no other module
of the package. See docs/generators.md, "The reference-compatible mode".
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from recourse_ray._registry import suggest

__all__ = [
    "ReferenceMechanism",
    "MECHANISMS",
    "RUN_SETTINGS",
    "reference_presets",
    "reference_mechanisms",
    "reference_overrides",
    "reference_bugs",
    "merge_overrides",
]


@dataclass(frozen=True, kw_only=True)
class ReferenceMechanism:
    """One way the reference's search differs from ours.

    Attributes:
        name: the key in :func:`reference_mechanisms`.
        summary: what the reference does, in one sentence.
        overrides: the ``create`` overrides that switch it on.
        bug: whether it reproduces a flaw of the reference rather than a design choice.
        requires: the mechanisms it is meaningless without (left out with them).
    """

    name: str
    summary: str
    overrides: Mapping[str, Any]
    bug: bool = False
    requires: tuple[str, ...] = ()


def _mechanisms(*items: ReferenceMechanism) -> dict[str, ReferenceMechanism]:
    return {m.name: m for m in items}


MECHANISMS: dict[str, ReferenceMechanism] = _mechanisms(
    ReferenceMechanism(
        name="standardized_space",
        summary="search z-scored features (mean and ddof-1 std of the current training data, recomputed each "
        "round), starting at the standardized factual + 0.1 N(0, 1)",
        overrides={"space": {"kind": "standardized", "init_noise": 0.1}},
    ),
    ReferenceMechanism(
        name="straight_through_gradient",
        summary="apply the gradient with respect to the point x' to the standardized state (the inverse "
        "transform happens outside automatic differentiation)",
        overrides={"reference_gradient": True},
        requires=("standardized_space",),
    ),
    ReferenceMechanism(
        name="validity_mean",
        summary="one BCE per individual, averaged over its K states (Flux's default mean), so each state's "
        "validity gradient is 1/K of its own BCE's",
        overrides={"validity": {"reduction": "mean"}},
    ),
    ReferenceMechanism(
        name="joint_distance",
        summary="one Frobenius norm of the factual repeated K times minus the K points, per individual, "
        "instead of one norm per state",
        overrides={"distance": {"joint": True}},
    ),
    ReferenceMechanism(
        name="dice_reference_diversity",
        summary="DiCE's determinant over the states (standardized units), with a diagonal of 1e-5 N(0, 1) "
        "drawn afresh at every evaluation",
        overrides={"diversity": {"over": "states", "random_jitter": True, "jitter": 1e-5}},
    ),
    ReferenceMechanism(
        name="nan_steps_zero",
        summary="set every NaN component of a gradient step to 0 (the reference's stop-gap against exploding "
        "gradients; infinite components are kept)",
        overrides={"step_rule": {"kind": "gradient_descent", "zero_nan_steps": True}},
    ),
    ReferenceMechanism(
        name="greedy_random_ties",
        summary="Greedy breaks ties between equally salient coordinates uniformly at random",
        overrides={"step_rule": {"kind": "greedy", "random_ties": True}},
    ),
    ReferenceMechanism(
        name="greedy_unbounded_changes",
        summary="Greedy's limit of n = 10 moves per coordinate never binds: the reference counts every feature "
        "as changed at every step (it tests the inverse-transformed step, mu + sigma * delta, for non-zero)",
        overrides={"step_rule": {"kind": "greedy", "max_changes": None}},
        bug=True,
    ),
    ReferenceMechanism(
        name="skip_valid_factuals",
        summary="the first stopping check looks at the factual: an individual the model already places in the "
        "target class is returned at its (noisy) start with 0 iterations, the others take at least one step; "
        "later checks come after each step, which stops at the same iteration as ours before each step",
        overrides={"skip_valid_factuals": True},
    ),
    ReferenceMechanism(
        name="latent_sample_start",
        summary="REVISE starts every state at its own sample of q(z|x), not at the encoder mean",
        overrides={"space": {"kind": "latent", "start": "sample"}},
    ),
    ReferenceMechanism(
        name="latent_valid_factuals_kept",
        summary="REVISE maps a factual to the latent space only when the model does not already place it in the "
        "target class; such a factual is returned at its start in feature space, the factual + 0.1 N(0, 1) per "
        "feature, not as a VAE reconstruction",
        overrides={"space": {"kind": "latent", "valid_factuals": "factual", "factual_noise": 0.1}},
        requires=("skip_valid_factuals",),
    ),
)

#: The key of the reference run's settings in :func:`reference_mechanisms` (not a mechanism).
RUN_SETTINGS = "run_settings"

_RUN = {"max_iterations": 100, "decision_threshold": 0.5}
_GRADIENT_RUN = {**_RUN, "step_size": 0.1, "distance": {"weight": 0.1}}
_FEATURE_GRADIENT = (
    "standardized_space",
    "straight_through_gradient",
    "validity_mean",
    "joint_distance",
    "nan_steps_zero",
    "skip_valid_factuals",
)

# preset -> (its mechanisms, in order; the reference run's settings)
_PRESETS: dict[str, tuple[tuple[str, ...], Mapping[str, Any]]] = {
    "generic": (_FEATURE_GRADIENT, _GRADIENT_RUN),
    "dice": (_FEATURE_GRADIENT + ("dice_reference_diversity",), {**_GRADIENT_RUN, "diversity": {"weight": 1.0}}),
    "greedy": (
        ("standardized_space", "straight_through_gradient", "validity_mean", "greedy_random_ties",
         "greedy_unbounded_changes", "skip_valid_factuals"),
        {**_RUN, "step_size": 0.1},
    ),
    "revise": (
        ("latent_sample_start", "validity_mean", "joint_distance", "nan_steps_zero", "skip_valid_factuals",
         "latent_valid_factuals_kept"),
        _GRADIENT_RUN,
    ),
    # The mitigation generators existed in CE.jl 0.1.x too; only the shared mechanisms are
    # reproduced here (docs/generators.md lists what of their own is not).
    "claproar": (_FEATURE_GRADIENT, _GRADIENT_RUN),
    "gravitational": (_FEATURE_GRADIENT, _GRADIENT_RUN),
}


def reference_presets() -> list[str]:
    """The presets that have a reference form, sorted."""
    return sorted(_PRESETS)


def _entry(preset: str) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    if preset not in _PRESETS:
        valid = reference_presets()
        raise KeyError(
            f"The generator {preset!r} has no reference form.{suggest(str(preset), valid)} "
            f"Generators with one: {', '.join(valid)}."
        )
    return _PRESETS[preset]


def reference_mechanisms(preset: str) -> dict[str, dict]:
    """The reference's mechanisms for ``preset``, each with the overrides that switch it on.

    Args:
        preset: ``"generic"``, ``"dice"``, ``"greedy"``, ``"revise"``, ``"claproar"`` or
            ``"gravitational"``.

    Returns:
        ``{name: overrides}`` in a fixed order: the mechanisms of :data:`MECHANISMS` that
        apply to the preset, then :data:`RUN_SETTINGS`, the reference run's settings.
        Fresh dicts: changing them changes nothing here.

    Raises:
        KeyError: if the preset has no reference form (with the ones that have).
    """
    names, run = _entry(preset)
    out = {name: copy.deepcopy(dict(MECHANISMS[name].overrides)) for name in names}
    out[RUN_SETTINGS] = copy.deepcopy(dict(run))
    return out


def reference_overrides(preset: str, *, without: Iterable[str] = ()) -> dict:
    """The ``create`` overrides that give ``preset`` the reference's form.

    ``create(preset, **reference_overrides(preset))`` searches as the reference did;
    leaving mechanisms out switches just those off (a mechanism whose ``requires`` names
    a left-out one is left out with it: ``straight_through_gradient`` goes with
    ``standardized_space``).

    Args:
        preset: a preset with a reference form (:func:`reference_presets`).
        without: names of mechanisms (or :data:`RUN_SETTINGS`) to leave out.

    Returns:
        The merge (:func:`merge_overrides`) of the remaining entries of
        :func:`reference_mechanisms`.

    Raises:
        KeyError: if the preset has no reference form.
        ValueError: if ``without`` names something the preset does not have.
    """
    parts = reference_mechanisms(preset)
    left_out = set(without) if not isinstance(without, str) else {without}
    unknown = sorted(left_out - set(parts))
    if unknown:
        raise ValueError(
            f"The 'without' parameter of reference_overrides names {', '.join(map(repr, unknown))}, which the "
            f"reference form of {preset!r} does not have.{suggest(unknown[0], list(parts))} "
            f"It has: {', '.join(parts)}."
        )
    changed = True
    while changed:  # a mechanism goes with the ones it requires
        changed = False
        for name in parts:
            needs = MECHANISMS[name].requires if name in MECHANISMS else ()
            if name not in left_out and left_out & set(needs):
                left_out.add(name)
                changed = True
    return merge_overrides(*(v for k, v in parts.items() if k not in left_out))


def reference_bugs() -> list[str]:
    """The mechanisms that reproduce a flaw of the reference, sorted."""
    return sorted(name for name, m in MECHANISMS.items() if m.bug)


def merge_overrides(*parts: Mapping[str, Any]) -> dict:
    """Merge override dicts; mappings under the same key merge recursively.

    ``{"distance": {"weight": 0.1}}`` and ``{"distance": {"joint": True}}`` give
    ``{"distance": {"weight": 0.1, "joint": True}}``; two component mappings merge the
    same way (``{"step_rule": {"kind": "greedy", "random_ties": True}}`` and
    ``{"step_rule": {"kind": "greedy", "max_changes": None}}``).

    Raises:
        ValueError: if two parts give different plain values for the same key.
    """
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key in out and isinstance(out[key], Mapping) and isinstance(value, Mapping):
                out[key] = merge_overrides(out[key], value)
            elif key in out and out[key] != value:
                raise ValueError(f"The overrides disagree on {key!r}: {out[key]!r} and {value!r}.")
            else:
                out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out
