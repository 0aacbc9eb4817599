"""The study's generators as named presets over the engine's pieces (SPEC §4 table).

A preset is an alias for one composition, like optax's ``adamw = chain(...)``:
``create("gravitational")`` is ``generic``'s terms plus a ``gravitational`` term with
full-search convergence. Sweep files name a preset and override settings by keyword:

- ``decision_threshold`` (float in (0, 1)), ``max_iterations`` (int >= 0);
- ``space``: ``"feature"`` or ``"latent"``; ``convergence``: ``"threshold"`` or ``"full"``;
- ``step_size`` (of the step rule: gradient step or greedy ``eps``), ``max_changes``
  (greedy only), ``tolerance`` (full search only), ``init_noise`` (feature space only);
- a term's name (one of the preset's terms): a number sets its weight
  (``dice``'s ``diversity=2.0``); a mapping sets any of its fields
  (``gravitational={"weight": 5.0, "n_points": 20}``);
- ``name``: the label of the resulting generator;
- ``add_terms``: a list of extra terms, each a mapping ``{"term": NAME, **fields}`` where
  NAME is a registered term (``mad_distance``, ...) or an import path
  ``"package.module:TermClass"`` of a user :class:`~recourse_ray.generators.terms.Term`
  subclass (e.g. ``{"term": "mypkg.terms:Sparsity", "weight": 0.05}``).

Unknown names and invalid values raise, listing every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any

from recourse_ray._registry import Registry, suggest
from recourse_ray.generators.engine import (
    CONVERGENCE,
    SPACES,
    FeatureSpace,
    FullSearch,
    Generator,
    Greedy,
    GradientDescent,
    LatentSpace,
)
from recourse_ray.generators.terms import (
    TERMS,
    ClassifierLoss,
    Diversity,
    Gravitational,
    L2Distance,
    MADDistance,
    PredictiveEntropy,
    Term,
    Validity,
)

__all__ = ["PRESETS", "register", "create", "names", "OVERRIDES"]

Preset = Callable[[], Generator]
PRESETS: Registry[Preset] = Registry("generator")

OVERRIDES = (
    "decision_threshold",
    "max_iterations",
    "space",
    "convergence",
    "step_size",
    "max_changes",
    "tolerance",
    "init_noise",
    "name",
    "add_terms",
)


def register(name: str, preset: Preset | None = None):
    """Register a preset ``() -> Generator`` under ``name`` (usable as a decorator)."""
    return PRESETS.register(name, preset)


def names() -> list[str]:
    """Names of all registered generator presets."""
    return PRESETS.names()


def _check_kind(registry: Registry, key: str, value: Any, problems: list[str]):
    if isinstance(value, Mapping):
        spec = dict(value)
        kind = spec.pop("kind", None)
    else:
        kind, spec = value, {}
    if kind not in registry:
        problems.append(f"'{key}': {registry.unknown_message(kind)}")
        return None
    try:
        return registry.get(kind)(**spec)
    except (TypeError, ValueError) as exc:
        problems.append(f"'{key}': {exc}")
        return None


def create(name: str, **overrides: Any) -> Generator:
    """Build the preset ``name`` with ``overrides`` applied (see the module docstring).

    Examples:
        ``create("generic", decision_threshold=0.9)``, ``create("gravitational", space="latent")``,
        ``create("dice", diversity=2.0)``, ``create("greedy", step_size=0.05, max_changes=5)``.

    Raises:
        KeyError: unknown preset name (with the valid names and the closest match).
        ValueError: unknown override keys or invalid values (all problems listed).
    """
    entry = PRESETS.get(name)  # a registered preset, or an import path "package.module:factory"
    gen = entry if isinstance(entry, Generator) else entry()
    if not isinstance(gen, Generator):
        raise TypeError(
            f"The generator {name!r} must be a Generator or a function returning one. Got {type(gen).__name__} instead."
        )
    term_names = [t.name for t in gen.terms]
    valid_keys = list(OVERRIDES) + term_names
    problems: list[str] = []
    unknown = [k for k in overrides if k not in valid_keys]
    for key in unknown:
        problems.append(f"unknown override {key!r}.{suggest(key, valid_keys)}")

    changes: dict[str, Any] = {}
    if "space" in overrides:
        space = _check_kind(SPACES, "space", overrides["space"], problems)
        if space is not None:
            changes["space"] = space
    if "convergence" in overrides:
        conv = _check_kind(CONVERGENCE, "convergence", overrides["convergence"], problems)
        if conv is not None:
            changes["convergence"] = conv
    for key in ("decision_threshold", "max_iterations", "name"):
        if key in overrides:
            changes[key] = overrides[key]

    def sub(component: Any, key: str, kinds: tuple[type, ...], what: str):
        if key not in overrides:
            return component
        if not isinstance(component, kinds):
            problems.append(f"'{key}' applies only to {what}; generator {name!r} uses {component.kind!r}")
            return component
        try:
            return replace(component, **{key: overrides[key]})
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
            return component

    step_rule = sub(gen.step_rule, "step_size", (GradientDescent, Greedy), "a step rule")
    changes["step_rule"] = sub(step_rule, "max_changes", (Greedy,), "the 'greedy' step rule")
    changes["convergence"] = sub(changes.get("convergence", gen.convergence), "tolerance", (FullSearch,), "'full' convergence")
    changes["space"] = sub(changes.get("space", gen.space), "init_noise", (FeatureSpace,), "the 'feature' space")

    terms = []
    for term in gen.terms:
        if term.name not in overrides:
            terms.append(term)
            continue
        value = overrides[term.name]
        if isinstance(value, Mapping):
            allowed = [f.name for f in fields(term)]
            bad = [k for k in value if k not in allowed]
            for k in bad:
                problems.append(
                    f"unknown parameter {k!r} of the {term.name!r} term.{suggest(str(k), allowed)} "
                    f"Valid parameters: {', '.join(allowed)}"
                )
            params = {k: v for k, v in value.items() if k in allowed}
        else:
            params = {"weight": value}
        try:
            terms.append(replace(term, **params))
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
            terms.append(term)
    terms.extend(_extra_terms(overrides.get("add_terms"), problems))
    changes["terms"] = tuple(terms)

    try:  # also run when other overrides failed, so that every problem is reported at once
        result = replace(gen, **changes)
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))
    if not problems:
        return result
    body = "; ".join(p.rstrip(".") for p in problems)
    body += "" if body.endswith("?") else "."
    raise ValueError(f"Invalid overrides for generator {name!r}: {body} Valid overrides: {', '.join(valid_keys)}.")


def _extra_terms(spec: Any, problems: list[str]) -> list:
    """Build the ``add_terms`` override: registered term names or import paths with fields."""
    if spec is None:
        return []
    if not isinstance(spec, (list, tuple)):
        problems.append(f"'add_terms' must be a list of mappings {{term: NAME, weight: W, ...}}. Got {spec!r} instead")
        return []
    out = []
    for item in spec:
        if not isinstance(item, Mapping) or "term" not in item:
            problems.append(f"each entry of 'add_terms' needs a 'term' key (a term name or import path). Got {item!r} instead")
            continue
        fields_ = {k: v for k, v in item.items() if k != "term"}
        try:
            cls = TERMS.get(item["term"])
        except KeyError as exc:
            problems.append(exc.args[0])
            continue
        if not (isinstance(cls, type) and issubclass(cls, Term)):
            problems.append(f"'add_terms': {item['term']!r} is not a Term subclass (see docs/guide.md, 'A new loss or penalty term')")
            continue
        try:
            out.append(cls(**fields_))
        except (TypeError, ValueError) as exc:
            problems.append(f"'add_terms': {exc}")
    return out


def _feature_generator(name: str, *terms, **settings) -> Preset:
    def preset() -> Generator:
        return Generator(name=name, terms=tuple(terms), **settings)

    return preset


# SPEC §4: weights are the study's (distance 0.1, diversity 1.0, mitigation penalties 5.0).
register("generic", _feature_generator("generic", Validity(), L2Distance(weight=0.1)))
register("wachter", _feature_generator("wachter", Validity(), MADDistance(weight=0.1)))
register(
    "dice",
    _feature_generator("dice", Validity(), L2Distance(weight=0.1), Diversity(weight=1.0)),
)
register(
    "greedy",
    _feature_generator("greedy", Validity(), step_rule=Greedy(step_size=0.1, max_changes=10)),
)
register(
    "revise",
    _feature_generator("revise", Validity(), L2Distance(weight=0.1), space=LatentSpace()),
)
register(
    "clue",
    _feature_generator("clue", PredictiveEntropy(), L2Distance(weight=0.1), space=LatentSpace()),
)
register(
    "claproar",
    _feature_generator(
        "claproar", Validity(), L2Distance(weight=0.1), ClassifierLoss(weight=5.0), convergence=FullSearch()
    ),
)
register(
    "gravitational",
    _feature_generator(
        "gravitational", Validity(), L2Distance(weight=0.1), Gravitational(weight=5.0), convergence=FullSearch()
    ),
)
