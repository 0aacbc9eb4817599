"""The study's generators as named presets over the engine's pieces (SPEC §4 table).

A preset is an alias for one composition, like optax's ``adamw = chain(...)``:
``create("gravitational")`` is ``generic``'s terms plus a ``gravitational`` term with
full-search convergence. Sweep files name a preset and override settings by keyword:

- ``decision_threshold`` (float in (0, 1)), ``max_iterations`` (int >= 0), ``name`` (the label),
  ``skip_valid_factuals`` (bool, the reference's first stopping check; see ``Generator``);
- ``space``, ``step_rule``, ``convergence``: a component, as a registered name or import
  path (``"latent"``, ``"full"``, ``"mypkg.steps:Momentum"``) or a mapping
  ``{"kind": NAME_OR_PATH, **fields}``;
- the override keys declared by the components the generator uses (by default their
  fields): today ``init_noise`` (feature space), ``step_size`` (gradient step or greedy
  ``eps``), ``max_changes`` (greedy), ``tolerance`` (full search), and a user
  component's own fields; a key of a component the generator does not use is an error
  that says which component it belongs to;
- a term's name (one of the preset's terms): a number sets its weight
  (``dice``'s ``diversity=2.0``); a mapping sets any of its fields
  (``gravitational={"weight": 5.0, "n_points": 20}``);
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

from recourse_ray._config import short_repr
from recourse_ray._registry import Registry, suggest
from recourse_ray.generators._components import (
    build_component,
    component_kind,
    override_keys,
    unknown_field_message,
)
from recourse_ray.generators.convergence import FullSearch
from recourse_ray.generators.engine import COMPONENT_ROLES, ComponentRole, Generator, generator_problems
from recourse_ray.generators.spaces import LatentSpace
from recourse_ray.generators.steps import Greedy
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

__all__ = ["PRESETS", "OVERRIDES", "register", "create", "names", "valid_overrides"]

Preset = Callable[[], Generator]
PRESETS: Registry[Preset] = Registry("generator")

#: The generator-level override keys; the components' own keys and the term names come on
#: top, per generator (see :func:`valid_overrides`).
OVERRIDES = (
    "decision_threshold",
    "max_iterations",
    "name",
    "add_terms",
    "space",
    "step_rule",
    "convergence",
    "skip_valid_factuals",
)

# The overrides that are fields of the Generator itself, passed on as they are.
_SETTINGS = ("decision_threshold", "max_iterations", "name", "skip_valid_factuals")


def register(name: str, preset: Preset | Generator | None = None) -> Any:
    """Register a preset ``() -> Generator`` (or a Generator) under ``name``; a decorator when ``preset`` is omitted."""
    return PRESETS.register(name, preset)


def names() -> list[str]:
    """Names of all registered generator presets, sorted."""
    return PRESETS.names()


def valid_overrides(generator: Generator) -> list[str]:
    """Every override key ``create`` accepts for a preset that builds ``generator``.

    Returns:
        The generator-level keys (:data:`OVERRIDES`), then the override keys of its space,
        step rule and convergence rule, then its term names.
    """
    return _valid_keys(generator.terms, {r.attr: getattr(generator, r.attr) for r in COMPONENT_ROLES})


def create(name: str, /, **overrides: Any) -> Generator:
    """Build the preset ``name`` with ``overrides`` applied (see the module docstring).

    ``name`` is positional-only, so that ``name`` is also an override (the label).

    Examples:
        ``create("generic", decision_threshold=0.9)``, ``create("gravitational", space="latent")``,
        ``create("dice", diversity=2.0)``, ``create("greedy", step_size=0.05, max_changes=5)``,
        ``create("generic", step_rule={"kind": "examples.momentum_step:Momentum", "beta": 0.5})``.

    Raises:
        KeyError: unknown preset name (with the valid names and the closest match).
        ValueError: unknown override keys or invalid values (all problems listed).
    """
    gen = _preset(name)
    component_problems: list[str] = []
    components = _components(gen, overrides, component_problems)
    valid = _valid_keys(gen.terms, components)
    problems = _key_problems(name, overrides, valid, components) + component_problems
    terms = _reweighted_terms(gen.terms, overrides, problems) + _extra_terms(overrides.get("add_terms"), problems)
    settings = {
        "terms": tuple(terms),
        **components,
        **{key: overrides.get(key, getattr(gen, key)) for key in _SETTINGS},
    }
    # Checked even when other overrides failed, so that every problem is reported at once.
    problems += generator_problems(**settings)
    if not problems:
        return replace(gen, **settings)
    body = "; ".join(p.rstrip(".") for p in problems)
    body += "" if body.endswith("?") else "."
    raise ValueError(f"Invalid overrides for generator {name!r}: {body} Valid overrides: {', '.join(valid)}.")


def _preset(name: str) -> Generator:
    """The generator a preset name (or an import path ``"package.module:factory"``) stands for."""
    entry = PRESETS.get(name)
    gen = entry if isinstance(entry, Generator) else entry()
    if not isinstance(gen, Generator):
        raise TypeError(
            f"The generator {name!r} must be a Generator or a function returning one. Got {type(gen).__name__} instead."
        )
    return gen


def _components(gen: Generator, overrides: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The space, step rule and convergence rule after the overrides, by field name.

    A component override (``step_rule="greedy"``) replaces the preset's component first;
    the flat keys it declares (``step_size``) then apply to the component in use.
    """
    taken = _taken_keys(gen.terms)
    out = {}
    for role in COMPONENT_ROLES:
        component = getattr(gen, role.attr)
        if role.attr in overrides:
            built, errors = build_component(role.registry, overrides[role.attr], role.attr)
            problems += errors
            component = component if built is None else built
        keys = {k: overrides[k] for k in override_keys(component) if k in overrides and k not in taken}
        if keys:
            try:
                component = replace(component, **keys)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
        out[role.attr] = component
    return out


def _taken_keys(terms: tuple[Term, ...]) -> set[str]:
    """Flat keys that never reach a component: the generator's own keys and its term names.

    A component field of such a name is set in the component's mapping instead
    (``convergence={"kind": ..., "distance": 1.0}``); the flat key means the term.
    """
    return set(OVERRIDES) | {t.name for t in terms}


def _valid_keys(terms: tuple[Term, ...], components: Mapping[str, Any]) -> list[str]:
    taken = _taken_keys(terms)
    keys = list(OVERRIDES)
    for role in COMPONENT_ROLES:
        keys += [k for k in override_keys(components[role.attr]) if k not in keys and k not in taken]
    return keys + [t.name for t in terms if t.name not in keys]


def _key_problems(
    name: str, overrides: Mapping[str, Any], valid: list[str], components: Mapping[str, Any]
) -> list[str]:
    """One message per override key that applies to nothing in this generator."""
    known = _registered_keys()
    problems = []
    for key in overrides:
        if key in valid:
            continue
        if key in known:
            role, kinds = known[key]
            used = _kind_label(role.registry, components[role.attr])
            problems.append(
                f"{key!r} applies only to {role.phrase.format(' or '.join(map(repr, kinds)))}; "
                f"generator {name!r} uses {used!r}"
            )
        else:
            problems.append(f"unknown override {short_repr(key)}.{suggest(str(key), valid + list(known))}")
    return problems


def _registered_keys() -> dict[str, tuple[ComponentRole, list[str]]]:
    """Each override key of a registered component -> (its role, the registered kinds declaring it)."""
    out: dict[str, tuple[ComponentRole, list[str]]] = {}
    for role in COMPONENT_ROLES:
        for kind, cls in role.registry.items():
            for key in override_keys(cls):
                if key not in OVERRIDES and (key not in out or out[key][0] is role):
                    out.setdefault(key, (role, []))[1].append(kind)
    return out


def _kind_label(registry: Registry, component: Any) -> str:
    try:
        return component_kind(registry, component)
    except ValueError:  # a class no other process could import; its name still says what it is
        return type(component).__qualname__


def _reweighted_terms(terms: tuple[Term, ...], overrides: Mapping[str, Any], problems: list[str]) -> list[Term]:
    """The preset's terms with term-name overrides applied (a number: the weight; a mapping: fields)."""
    out = []
    for term in terms:
        if term.name not in overrides:
            out.append(term)
            continue
        value = overrides[term.name]
        if isinstance(value, Mapping):
            allowed = [f.name for f in fields(term)]
            what = f"the {term.name!r} term"
            problems += [unknown_field_message(k, what, allowed) for k in value if k not in allowed]
            params = {k: v for k, v in value.items() if k in allowed}
        else:
            params = {"weight": value}
        try:
            out.append(replace(term, **params))
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
            out.append(term)
    return out


def _extra_terms(spec: Any, problems: list[str]) -> list[Term]:
    """Build the ``add_terms`` override: registered term names or import paths with fields."""
    if spec is None:
        return []
    if not isinstance(spec, (list, tuple)):
        problems.append(
            f"'add_terms' must be a list of mappings {{term: NAME, weight: W, ...}}. Got {short_repr(spec)} instead"
        )
        return []
    out = []
    for item in spec:
        if not isinstance(item, Mapping) or "term" not in item:
            problems.append(
                f"each entry of 'add_terms' needs a 'term' key (a term name or import path). Got {short_repr(item)} instead"
            )
            continue
        try:
            cls = TERMS.get(item["term"])
        except KeyError as exc:
            problems.append(exc.args[0])
            continue
        if not (isinstance(cls, type) and issubclass(cls, Term)):
            problems.append(
                f"'add_terms': {item['term']!r} is not a Term subclass (see docs/guide.md, 'A new loss or penalty term')"
            )
            continue
        description = {"kind": item["term"], **{k: v for k, v in item.items() if k != "term"}}
        term, errors = build_component(TERMS, description, "add_terms")
        problems += errors
        if term is not None:
            out.append(term)
    return out


def _feature_generator(name: str, *terms: Term, **settings: Any) -> Preset:
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
# Latent-space presets start every state at its own sample of q(z|x), as the reference's
# search did (SPEC §0); ``space="latent"`` alone keeps the encoder mean.
register(
    "revise",
    _feature_generator("revise", Validity(), L2Distance(weight=0.1), space=LatentSpace(start="sample")),
)
register(
    "clue",
    _feature_generator("clue", PredictiveEntropy(), L2Distance(weight=0.1), space=LatentSpace(start="sample")),
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
