"""The batched counterfactual search engine shared by every generator (SPEC §4-5).

Round step 2 of the simulation ("Generate") calls :meth:`Generator.search` once per
round with all selected individuals. A :class:`Generator` is a composition:

- ``terms``: weighted loss terms (:mod:`recourse_ray.generators.terms`);
- ``space``: a :class:`~recourse_ray.generators.spaces.SearchSpace`, where the states
  live (features, or a VAE's latent codes scored through ``vae.decode``);
- ``step_rule``: a :class:`~recourse_ray.generators.steps.StepRule` (gradient descent, greedy, ...);
- ``convergence``: a :class:`~recourse_ray.generators.convergence.ConvergenceRule`;
- ``decision_threshold`` and ``max_iterations``.

The three components are checked by protocol, so any class with the protocol's methods
(registered, or named by import path) takes part; :meth:`Generator.to_dict` describes a
built generator in plain JSON and :meth:`Generator.from_dict` rebuilds it, in any process.

All ``n x K`` states form ONE tensor ``(n, K, D)``. Each iteration runs one forward and
one backward pass over the individuals still searching (an index of the active rows,
no Python loop over individuals); converged individuals are frozen. Every individual's
objective depends only on its own states and its random draws come from its own seed, so
searching a batch gives the same result as searching each individual alone.

``skip_valid_factuals`` reproduces the reference's first stopping check (AlgorithmicRecourseDynamics.jl
on CounterfactualExplanations.jl 0.1.x): it looks at the factual, not at the starting
states, and the reference checks convergence after each step where we check before it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from recourse_ray._config import check_int, check_real, is_int, param_message, short_repr
from recourse_ray._registry import Registry, suggest
from recourse_ray.generators._components import build_component, component_dict, protocol_problems
from recourse_ray.generators._device import on_device, search_device
from recourse_ray.generators._norm import safe_norm
from recourse_ray.generators._streams import individual_seeds
from recourse_ray.generators.convergence import CONVERGENCE, ConvergenceRule, ThresholdConvergence
from recourse_ray.generators.problem import Batch, Problem, model_outputs
from recourse_ray.generators.spaces import SPACES, FeatureSpace, SearchSpace
from recourse_ray.generators.steps import STEP_RULES, GradientDescent, StepRule
from recourse_ray.generators.terms import TERMS, L2Distance, Term, Validity

__all__ = ["Generator", "SearchResult", "COMPONENT_ROLES", "ComponentRole"]

logger = logging.getLogger(__name__)


class ComponentRole(NamedTuple):
    """One pluggable component of a :class:`Generator`: its field, registry and protocol.

    ``phrase`` names the role's variants in messages: ``phrase.format("'greedy'")`` is
    ``"the 'greedy' step rule"``.
    """

    attr: str
    registry: Registry
    protocol: type
    phrase: str


COMPONENT_ROLES: tuple[ComponentRole, ...] = (
    ComponentRole("space", SPACES, SearchSpace, "the {} space"),
    ComponentRole("step_rule", STEP_RULES, StepRule, "the {} step rule"),
    ComponentRole("convergence", CONVERGENCE, ConvergenceRule, "{} convergence"),
)

# The keys of a description (to_dict); "name" may be left out of one written by hand.
_DESCRIPTION_KEYS = ("name", "terms", "space", "step_rule", "convergence", "decision_threshold", "max_iterations")
# Settings added later: described only when set, so that existing descriptions stay the same.
_OPTIONAL_KEYS = ("skip_valid_factuals",)


def generator_problems(
    *,
    terms: Any,
    space: Any,
    step_rule: Any,
    convergence: Any,
    decision_threshold: Any,
    max_iterations: Any,
    name: Any,
    skip_valid_factuals: Any = False,
) -> list[str]:
    """Every reason the given settings do not make a :class:`Generator` (empty when they do).

    ``presets.create`` calls it on the overridden settings so that their problems join
    the override problems in one message, instead of surfacing as a second exception.
    """
    problems = []
    if not isinstance(terms, tuple) or not all(isinstance(t, Term) for t in terms):
        problems.append(param_message("terms", "Generator", "a sequence of Term instances", terms))
    else:
        names = [t.name for t in terms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"'terms' holds the term(s) {', '.join(map(repr, dupes))} more than once")
    components = {"space": space, "step_rule": step_rule, "convergence": convergence}
    for role in COMPONENT_ROLES:
        problems.extend(protocol_problems(components[role.attr], role.protocol, role.attr, "Generator"))
    checks = [
        check_real(decision_threshold, "decision_threshold", "Generator", 0, 1, low_open=True, high_open=True),
        check_int(max_iterations, "max_iterations", "Generator", 0),
        None if isinstance(name, str) else param_message("name", "Generator", "a string", name),
        None
        if isinstance(skip_valid_factuals, (bool, np.bool_))
        else param_message("skip_valid_factuals", "Generator", "a bool", skip_valid_factuals),
    ]
    problems.extend(msg for msg in checks if msg)
    return problems


# ---------------------------------------------------------------------- result
@dataclass(frozen=True, kw_only=True, eq=False)
class SearchResult:
    """Outcome of one batched search (SPEC §5).

    Attributes:
        counterfactuals: (n, K, d) float32, in feature space (decoded for latent search).
        proba: (n, K) float32 target-class probability under the model.
        valid: (n, K) bool, ``proba >= decision_threshold``.
        cost: (n, K) float32 L2 distance to the factual.
        iterations: (n,) int64 search steps taken by each individual.
        finite: (n, K) bool, False where the counterfactual or its probability is NaN/inf.
        path: (steps + 1, n, K, d) float32 points after every iteration, when requested.
    """

    counterfactuals: np.ndarray
    proba: np.ndarray
    valid: np.ndarray
    cost: np.ndarray
    iterations: np.ndarray
    finite: np.ndarray
    path: np.ndarray | None = None


def _empty_result(n_counterfactuals: int, n_features: int, with_path: bool) -> SearchResult:
    K, d = n_counterfactuals, n_features
    return SearchResult(
        counterfactuals=np.zeros((0, K, d), np.float32),
        proba=np.zeros((0, K), np.float32),
        valid=np.zeros((0, K), bool),
        cost=np.zeros((0, K), np.float32),
        iterations=np.zeros(0, np.int64),
        finite=np.zeros((0, K), bool),
        path=np.zeros((1, 0, K, d), np.float32) if with_path else None,
    )


@dataclass(eq=False)
class _Search:
    """The mutable state of one running search, over all n individuals.

    Attributes:
        space: the search space of this search (the generator's, bound to the problem
            when it has ``bind``).
        states: (n, K, D) search variables, updated in place.
        aux: per term name, its ``prepare`` tensors (one row per individual).
        rule_state: the step rule's state tensors (one row per individual).
        active: (n,) bool, individuals still searching.
        iterations: (n,) int64 steps taken.
        path: feature-space points after every iteration, when requested.
        n_active: ``active.sum()``, kept as an int to skip the gather while all search.
        feasibility: the constraints' :class:`~recourse_ray.constraints.Feasibility`, or None.
        aligned: whether the space's states are an increasing elementwise map of the points
            (it has ``from_features``): then the states themselves are projected after every
            step and the gradient is masked; otherwise (latent) the decoded points are.
    """

    space: Any
    states: torch.Tensor
    aux: dict[str, dict]
    rule_state: dict[str, torch.Tensor]
    active: torch.Tensor
    iterations: torch.Tensor
    path: list[np.ndarray] | None
    n_active: int
    feasibility: Any = None
    aligned: bool = False


@dataclass(eq=False)
class _Active:
    """The rows of the individuals still searching, kept together between iterations.

    Until somebody stops, the tensors are the search's own (``rows`` is None: all n rows,
    updated in place); from the first stop on they are compact copies of the active rows,
    in their original order, and ``rows`` maps them to the search's rows. States and step
    counts are written to the search when rows are dropped and at the end; the aux and
    step-rule rows of a dropped individual are not needed again.

    Attributes:
        run: the search. states: (m, K, D) states of the active rows. factuals: (m, d).
        aux: per term name, its ``prepare`` tensors for these rows.
        rule_state: the step rule's state for these rows.
        rows: (m,) int64 indices into the search's rows, or None for all of them.
    """

    run: _Search
    states: torch.Tensor
    factuals: torch.Tensor
    aux: dict[str, dict]
    rule_state: dict[str, torch.Tensor]
    rows: torch.Tensor | None = None

    @classmethod
    def start(cls, run: _Search, factuals: torch.Tensor) -> _Active:
        """The active rows of ``run`` (all of them, unless some were frozen before the first step)."""
        active = cls(run=run, states=run.states, factuals=factuals, aux=run.aux, rule_state=run.rule_state)
        if run.n_active < run.states.shape[0]:
            active._keep(run.active, torch.nonzero(run.active).squeeze(1))
        return active

    @property
    def n(self) -> int:
        """m, the number of active rows."""
        return int(self.states.shape[0])

    def _keep(self, keep: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep the rows where ``keep`` (m,) bool is True; ``rows``: their indices in the search."""
        self.states = self.states[keep]
        self.factuals = self.factuals[keep]
        self.aux = {name: {k: v[keep] for k, v in a.items()} if a else a for name, a in self.aux.items()}
        self.rule_state = {k: v[keep] for k, v in self.rule_state.items()}
        self.rows = rows

    def _all_rows(self) -> torch.Tensor:
        return self.rows if self.rows is not None else torch.arange(self.n, device=self.states.device)

    def write_back(self) -> None:
        """Copy the active rows' states into the search's (nothing to do before the first stop)."""
        if self.rows is not None:
            self.run.states[self.rows] = self.states

    def drop(self, stopped: torch.Tensor, taken: torch.Tensor) -> None:
        """Drop the rows where ``stopped`` (m,) bool is True; ``taken`` (m,) int64: their step counts."""
        rows = self._all_rows()
        gone = rows[stopped]
        self.run.states[gone] = self.states[stopped]
        self.run.iterations[gone] = taken[stopped]
        self.run.active[gone] = False
        keep = ~stopped
        self._keep(keep, rows[keep])
        self.run.n_active = self.n

    def finish(self, steps: int) -> None:
        """Write the final states of the rows still active, which took ``steps`` steps each."""
        self.write_back()
        self.run.iterations[self._all_rows()] = steps


# The built-in feed-forward classifier (models/_feedforward.py), recognised by its class
# alone (generators import nothing from models, docs/architecture.md): its forward pass
# is known, so its gradient can be written out (_FeedForwardGradient).
_FEEDFORWARD = ("recourse_ray.models._feedforward", "FeedForwardClassifier")


@dataclass(eq=False)
class _FeedForwardGradient:
    """The generic objective's gradient through the built-in ReLU network, without autograd.

    For the ``FeedForwardClassifier`` searched in feature space on the CPU, with live terms
    among ``Validity`` (``reduction="sum"``) and ``L2Distance`` (``joint=False``), the
    gradient of ``w_v sum softplus(-z) + w_d sum ||s - x||_2`` is written out as the
    backward pass autograd runs for it: the same ATen kernels in the same order on tensors
    of the same layout (``softplus_backward``; per layer ``bmm`` with the weight view and
    ``threshold_backward``; the sum over expanded members; ``grad * (d / ||d||)`` of the
    norm), so the gradient and the probabilities equal the autograd path's bit for bit
    (``tests/test_fast_evaluation.py`` checks every built-in network), while no graph is
    recorded or walked: less than half the cost of an iteration at the study's sizes.

    Attributes:
        layers: the model's ``layers()``: views ``W (M, out, in)``, ``b (M, out)`` of its weights.
        n_members: M.
        validity: the weight of the validity term, or None without one.
        distance: the weight of the distance term, or None without one.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    n_members: int
    validity: float | None
    distance: float | None

    @classmethod
    def build(cls, model: Any, space: Any, live_terms: list[Term], states: torch.Tensor) -> _FeedForwardGradient | None:
        """The fast gradient for this search, or None where only autograd applies."""
        if (type(model).__module__, type(model).__qualname__) != _FEEDFORWARD or type(space) is not FeatureSpace:
            return None
        weights: dict[str, float] = {}
        for term in live_terms:
            if type(term) is Validity and term.reduction == "sum":
                key = "validity"
            elif type(term) is L2Distance and not term.joint:
                key = "distance"
            else:
                return None
            weights[key] = term.weight
        layers = model.layers()
        if not weights or states.device.type != "cpu" or any(w.device != states.device for w, _ in layers):
            return None
        return cls(layers, int(model.n_members), weights.get("validity"), weights.get("distance"))

    def __call__(self, states: torch.Tensor, factuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient (m, K, d), probabilities (m, K)) at ``states`` (m, K, d); call under no_grad."""
        m, K, d = states.shape
        M = self.n_members
        # Forward, as FeedForwardClassifier._forward and model_outputs compute it.
        h = states.reshape(m * K, d).unsqueeze(0).expand(M, -1, -1)
        activations = []
        last = len(self.layers) - 1
        for i, (W, b) in enumerate(self.layers):
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
            if i < last:
                h = torch.relu(h)
                activations.append(h)
        member_logits = h.squeeze(-1)
        if M == 1:
            logits, proba = member_logits[0], torch.sigmoid(member_logits[0])
        else:
            logits, proba = member_logits.mean(dim=0), torch.sigmoid(member_logits).mean(dim=0)
        one = torch.ones((), dtype=states.dtype, device=states.device)
        grad = None
        if self.validity is not None:
            # d/dz of w sum softplus(-z): softplus' backward at -z, negated; then the mean over members.
            weight = one if self.validity == 1.0 else one * self.validity
            upstream = torch.ops.aten.softplus_backward(weight.expand(m, K), -logits.reshape(m, K), 1, 20)
            g = (-upstream).reshape(m * K).unsqueeze(0)
            if M > 1:
                g = g.expand(M, m * K) / M
            g = g.unsqueeze(-1)
            for i in range(last, -1, -1):
                g = g.bmm(self.layers[i][0])
                if i > 0:
                    g = torch.ops.aten.threshold_backward(g, activations[i - 1], 0)
            if M > 1:
                g = g.sum(0, keepdim=True)
            grad = g.squeeze(0).reshape(m, K, d)
        if self.distance is not None:
            diff = states - factuals[:, None, :]
            norm = safe_norm(diff).unsqueeze(-1)
            weight = one if self.distance == 1.0 else one * self.distance
            g = weight.expand(m, K).unsqueeze(-1) * (diff / norm).masked_fill_(norm == 0, 0)
            grad = g if grad is None else g + grad
        return grad, proba.reshape(m, K)


# ---------------------------------------------------------------------- generator
@dataclass(frozen=True, kw_only=True)
class Generator:
    """A counterfactual generator: loss terms + search space + step rule + convergence rule.

    Attributes:
        terms: the weighted loss terms (distinct names), summed in this order.
        space: a :class:`~recourse_ray.generators.spaces.SearchSpace` (default :class:`FeatureSpace`).
        step_rule: a :class:`~recourse_ray.generators.steps.StepRule` (default :class:`GradientDescent`).
        convergence: a :class:`~recourse_ray.generators.convergence.ConvergenceRule`
            (default :class:`ThresholdConvergence`).
        decision_threshold: ``gamma``: the target probability a counterfactual must
            reach to be valid (and, with threshold convergence, to stop), in (0, 1).
        max_iterations: ``T``, the most steps per individual (>= 0).
        name: a label (the preset's name for presets).
        skip_valid_factuals: the reference's first stopping check. An individual whose
            factual already has ``p(y*) >= decision_threshold`` under the model is returned
            as it starts (its starting states, 0 iterations); the others take at least one
            step, whatever their starting states, because the reference checks convergence
            after each step and first looks at the factual. From the second step on, our
            check before each step and the reference's after each step stop at the same
            iteration. Default False: the convergence rule alone decides, from the start.
    """

    terms: tuple[Term, ...]
    space: SearchSpace = field(default_factory=FeatureSpace)
    step_rule: StepRule = field(default_factory=GradientDescent)
    convergence: ConvergenceRule = field(default_factory=ThresholdConvergence)
    decision_threshold: float = 0.5
    max_iterations: int = 100
    name: str = "custom"
    skip_valid_factuals: bool = False

    def __post_init__(self) -> None:
        terms = tuple(self.terms) if isinstance(self.terms, (list, tuple)) else self.terms
        problems = generator_problems(
            terms=terms,
            space=self.space,
            step_rule=self.step_rule,
            convergence=self.convergence,
            decision_threshold=self.decision_threshold,
            max_iterations=self.max_iterations,
            name=self.name,
            skip_valid_factuals=self.skip_valid_factuals,
        )
        if problems:
            body = "; ".join(p.rstrip(".") for p in problems)
            raise ValueError(f"Invalid generator {short_repr(self.name)}: {body}.")
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "decision_threshold", float(self.decision_threshold))
        object.__setattr__(self, "max_iterations", int(self.max_iterations))
        object.__setattr__(self, "skip_valid_factuals", bool(self.skip_valid_factuals))

    # ------------------------------------------------------------------ description
    @property
    def needs_vae(self) -> bool:
        """Whether :meth:`search` needs a ``vae`` (latent-space search)."""
        return bool(self.space.needs_vae)

    @property
    def needs_data(self) -> bool:
        """Whether :meth:`search` needs the current training ``data`` (MAD, Gravitational, standardized space)."""
        return bool(getattr(self.space, "needs_data", False)) or any(t.needs_data for t in self.terms)

    def term(self, name: str) -> Term:
        """The term called ``name``.

        Raises:
            KeyError: if the generator has no such term (with its terms and the closest match).
        """
        for t in self.terms:
            if t.name == name:
                return t
        have = [t.name for t in self.terms]
        raise KeyError(f"Generator {self.name!r} has no term {name!r}.{suggest(name, have)} Its terms: {', '.join(have)}.")

    def to_dict(self) -> dict[str, Any]:
        """The canonical description of this generator, in plain JSON values.

        Every component is ``{"kind": KIND, **fields}`` (fields in sorted order), where
        ``KIND`` is its registered name or, for a class registered nowhere, its import
        path ``"package.module:Class"``; terms keep their order (the order of summation).
        Equal settings give equal descriptions (an int given for a float field is a
        float), so its canonical JSON can key results, and :meth:`from_dict` rebuilds an
        equal generator in any process that can import the components. A later setting
        (``skip_valid_factuals``) and a component's added options appear only when set.
        For ``create("generic")``::

            {"name": "generic",
             "terms": [{"kind": "validity", "weight": 1.0}, {"kind": "distance", "weight": 0.1}],
             "space": {"kind": "feature", "init_noise": 0.1},
             "step_rule": {"kind": "gradient_descent", "step_size": 0.01},
             "convergence": {"kind": "threshold"},
             "decision_threshold": 0.5, "max_iterations": 100}

        Raises:
            ValueError: if a component's class cannot be named in another process (defined
                in a function or in ``__main__`` and registered nowhere).
        """
        description = {
            "name": self.name,
            "terms": [component_dict(TERMS, t) for t in self.terms],
            **{role.attr: component_dict(role.registry, getattr(self, role.attr)) for role in COMPONENT_ROLES},
            "decision_threshold": self.decision_threshold,
            "max_iterations": self.max_iterations,
        }
        if self.skip_valid_factuals:
            description["skip_valid_factuals"] = True
        return description

    @classmethod
    def from_dict(cls, description: Mapping[str, Any]) -> Generator:
        """Rebuild a generator from :meth:`to_dict`'s description.

        Args:
            description: a mapping with the keys of :meth:`to_dict` (``name`` and
                ``skip_valid_factuals`` may be omitted); kinds are registered names or import paths.

        Raises:
            TypeError: if ``description`` is not a mapping.
            ValueError: listing every unknown or missing key, unknown kind, bad import
                path, unknown field and invalid value at once.
        """
        if not isinstance(description, Mapping):
            raise TypeError(param_message("description", "Generator.from_dict", "a mapping", description))
        known = _DESCRIPTION_KEYS + _OPTIONAL_KEYS
        problems = [
            f"unknown key {short_repr(k)}.{suggest(str(k), known)}" for k in description if k not in known
        ]
        problems += [f"missing key {k!r}" for k in _DESCRIPTION_KEYS[1:] if k not in description]
        raw_terms = description.get("terms", [])
        if not isinstance(raw_terms, (list, tuple)):
            problems.append(param_message("terms", "Generator.from_dict", "a list of term descriptions", raw_terms))
            raw_terms = []
        terms = []
        for i, spec in enumerate(raw_terms):
            term, errs = build_component(TERMS, spec, f"terms[{i}]")
            problems += errs
            terms.append(term)
        components = {}
        for role in COMPONENT_ROLES:
            if role.attr in description:
                components[role.attr], errs = build_component(role.registry, description[role.attr], role.attr)
                problems += errs
        if problems:
            raise ValueError("Invalid generator description: " + "; ".join(p.rstrip(".") for p in problems) + ".")
        return cls(
            name=description.get("name", "custom"),
            terms=tuple(terms),
            decision_threshold=description["decision_threshold"],
            max_iterations=description["max_iterations"],
            **{k: description[k] for k in _OPTIONAL_KEYS if k in description},
            **components,
        )

    # ------------------------------------------------------------------ search
    def search(
        self,
        model: Any,
        factuals: np.ndarray,
        *,
        n_counterfactuals: int = 5,
        seeds: int | Sequence[int],
        data: tuple[np.ndarray, np.ndarray] | Any | None = None,
        vae: Any = None,
        return_path: bool = False,
        device: str | torch.device | None = None,
        constraints: Any = None,
    ) -> SearchResult:
        """Search ``n_counterfactuals`` counterfactuals for every factual, all at once.

        Args:
            model: a classifier with differentiable ``logits``/``proba`` (or ``member_logits``).
            factuals: (n, d) features of the individuals (float32).
            n_counterfactuals: K, states per individual.
            seeds: one int (per-individual seeds are derived from it by position), or n
                ints, one per individual: an individual's result then depends only on its
                own factual and seed, whatever else is in the batch.
            data: the current training data ``(X (N, d), y (N,))`` (or a Dataset), needed by
                ``mad_distance`` and ``gravitational``.
            vae: the trained VAE, needed for latent-space search.
            return_path: also return the feature-space points after every iteration.
            device: torch device to search on (None or ``"cpu"``: the default CPU path).
                On another device the search runs on copies of the model and VAE moved
                there (the objects passed in are not changed); results are numpy on CPU.
            constraints: actionability constraints (docs/constraints.md): a
                :class:`~recourse_ray.constraints.Feasibility` (``Constraints.bind(dataset)``),
                or a :class:`~recourse_ray.constraints.Constraints` when ``data`` is the
                Dataset to bind it to; None: none. Every returned counterfactual is then
                feasible: the search projects its points after every step, and
                ``proba``, ``valid`` and ``cost`` are those of the projected points.

        Returns:
            A :class:`SearchResult`.

        Raises:
            ValueError: for malformed factuals, seeds, data, a missing VAE or data,
                constraints of another width or factuals that violate them.
        """
        dev = search_device(device)
        problem = self._problem(model, factuals, n_counterfactuals, seeds, data, vae, constraints)
        if dev is not None:
            model = on_device(model, dev, "model")
            if vae is not None:
                vae = on_device(vae, dev, "VAE")
            problem = replace(problem, factuals=problem.factuals.to(dev), vae=vae)
        if problem.n == 0:
            return _empty_result(problem.n_counterfactuals, problem.n_features, return_path)
        run = self._start(problem, vae, dev, return_path)
        if self.skip_valid_factuals:
            self._freeze_valid_factuals(run, model, problem, vae)
        self._descend(run, model, vae, problem.factuals)
        return self._result(run, model, vae, problem)

    # -------------------------------------------------------------- search: arguments
    def _problem(
        self, model: Any, factuals: Any, n_counterfactuals: Any, seeds: Any, data: Any, vae: Any, constraints: Any = None
    ) -> Problem:
        """Validate the arguments of :meth:`search`, reporting every problem at once."""
        X = np.asarray(factuals)
        problems = _factual_problems(X, getattr(model, "input_dim", None))
        msg = check_int(n_counterfactuals, "n_counterfactuals", "Generator.search", 1)
        if msg:
            problems.append(msg)
        seed_array, seed_problems = _seed_array(seeds, X.shape[0] if X.ndim == 2 else 0)
        problems += seed_problems
        data_X = data_y = None
        if self.needs_data:
            data_X, data_y, data_problems = self._data(data, X)
            problems += data_problems
        if self.needs_vae:
            problems += self._vae_problems(vae, X)
        feasibility = None
        if constraints is not None:
            feasibility, constraint_problems = _feasibility(constraints, data, X)
            problems += constraint_problems
        if problems:
            body = "; ".join(p.rstrip(".") for p in problems)
            raise ValueError(f"Invalid arguments to search with generator {self.name!r}: {body}.")
        return Problem(
            factuals=torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
            n_counterfactuals=int(n_counterfactuals),
            seeds=seed_array,
            data_X=data_X,
            data_y=data_y,
            vae=vae,
            max_iterations=self.max_iterations,
            constraints=feasibility,
        )

    def _data(self, data: Any, X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        """The training data as (X float32 (N, d), y (N,)), for the terms that read it."""
        if data is None:
            terms = [repr(t.name) for t in self.terms if t.needs_data]
            who = [f"the term(s) {', '.join(terms)}"] if terms else []
            if getattr(self.space, "needs_data", False):
                who.insert(0, f"the search space {type(self.space).__name__}")
            return None, None, [f"{' and '.join(who)} need the current training data: pass data=(X, y)"]
        if hasattr(data, "X") and hasattr(data, "y"):
            data = (data.X, data.y)
        try:
            data_X, data_y = (np.asarray(a) for a in data)
        except (TypeError, ValueError):
            return None, None, [param_message("data", "Generator.search", "a pair (X, y) of arrays", data)]
        data_X = data_X.astype(np.float32)
        if data_X.ndim != 2 or (X.ndim == 2 and data_X.shape[1] != X.shape[1]) or data_X.shape[0] == 0:
            return data_X, data_y, [f"'data' X must have shape (n_rows >= 1, {X.shape[-1]}); got {data_X.shape}"]
        if data_y.shape != (data_X.shape[0],):
            return data_X, data_y, [f"'data' y must have shape ({data_X.shape[0]},); got {data_y.shape}"]
        return data_X, data_y, []

    def _vae_problems(self, vae: Any, X: np.ndarray) -> list[str]:
        if vae is None:
            return [f"generator {self.name!r} searches in latent space and needs a trained VAE: pass vae=..."]
        if X.ndim == 2 and getattr(vae, "input_dim", X.shape[1]) != X.shape[1]:
            return [f"the VAE has input_dim {vae.input_dim} but 'factuals' has {X.shape[1]} features"]
        return []

    # -------------------------------------------------------------- search: the loop
    def _start(self, problem: Problem, vae: Any, dev: torch.device | None, return_path: bool) -> _Search:
        """Initial states, the terms' per-search constants and the step rule's state."""
        bind = getattr(self.space, "bind", None)
        space = bind(problem) if callable(bind) else self.space
        with torch.no_grad():
            states = space.initial_states(problem).detach().clone()
        feasibility = problem.constraints
        aligned = callable(getattr(space, "from_features", None))
        if feasibility is not None and aligned:
            with torch.no_grad():
                states = _project_states(space, states, problem.factuals, feasibility)
        # Every term prepares, weight 0 included: its random stream is drawn either way.
        aux = {t.name: t.prepare(problem) for t in self.terms}
        if dev is not None:
            aux = {
                name: {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in a.items()} if a else a
                for name, a in aux.items()
            }
        n = problem.n
        rule_state = self.step_rule.init(states)
        prepare = getattr(self.step_rule, "prepare", None)
        if callable(prepare):
            rule_state = {**rule_state, **{k: v.to(states.device) for k, v in prepare(problem).items()}}
        return _Search(
            space=space,
            states=states,
            aux=aux,
            rule_state=rule_state,
            active=torch.ones(n, dtype=torch.bool, device=states.device),
            iterations=torch.zeros(n, dtype=torch.int64, device=states.device),
            path=[self._points(space, states, vae, feasibility, problem.factuals)] if return_path else None,
            n_active=n,
            feasibility=feasibility,
            aligned=aligned,
        )

    def _freeze_valid_factuals(self, run: _Search, model: Any, problem: Problem, vae: Any) -> None:
        """Stop, before any step, the individuals whose factual already reaches the threshold.

        A bound space with ``start_valid_factuals(problem, states, valid)`` (the latent
        space's ``unencoded_valid_factuals``) may give those individuals other starting
        states; they are what the search returns for them.
        """
        with torch.no_grad():
            _, proba, _ = model_outputs(model, problem.factuals)
        valid = proba.reshape(-1) >= self.decision_threshold
        run.active &= ~valid
        run.n_active = int(run.active.sum())
        restart = getattr(run.space, "start_valid_factuals", None)
        if callable(restart):
            with torch.no_grad():
                run.states = restart(problem, run.states, valid).detach().clone()
            if run.path is not None:
                run.path[0] = self._points(run.space, run.states, vae, run.feasibility, problem.factuals)

    def _descend(self, run: _Search, model: Any, vae: Any, factuals: torch.Tensor) -> None:
        """Up to ``max_iterations`` steps of every active individual, in place in ``run``.

        The rows of the individuals still searching are kept together (:class:`_Active`), so
        an iteration in which nobody stops gathers and scatters nothing; the rows of those
        who stop are written back and dropped once. Every iteration sees the rows it would
        see gathered afresh (the same rows in the same order), so the arithmetic is that of
        gathering them at every step.
        """
        live_terms = [t for t in self.terms if t.weight != 0.0]
        # The threshold rule never stops anyone after a step: skip asking it (and its
        # tensor of False). Its exact class only: a subclass may decide otherwise.
        ask_after = type(self.convergence) is not ThresholdConvergence
        fast = _FeedForwardGradient.build(model, run.space, live_terms, run.states)
        active = _Active.start(run, factuals)
        steps = 0
        for t in range(self.max_iterations):
            if active.n == 0:
                break
            if fast is None:
                s = active.states.detach().requires_grad_(True)
                batch = self._batch(run.space, model, vae, s, active.factuals, t,
                                    project=None if run.aligned else run.feasibility)
                grad, proba = self._gradient(live_terms, batch, active.aux), batch.proba
            with torch.no_grad():
                if fast is not None:
                    grad, proba = fast(active.states, active.factuals)
                if run.feasibility is not None and run.aligned:
                    # Projected gradient: a coordinate that may not move in the step's direction does not.
                    points = run.space.decode(active.states, vae)
                    grad = grad.masked_fill(run.feasibility.blocked(points, active.factuals, grad), 0.0)
                # skip_valid_factuals: the factual took the place of the starting states' check.
                check_before = not (self.skip_valid_factuals and t == 0)
                self._step(active, grad, proba, check_before, ask_after, t)
            steps = t + 1
            if run.path is not None:
                active.write_back()
                run.path.append(self._points(run.space, run.states, vae, run.feasibility, factuals))
        active.finish(steps)

    def _batch(
        self, space: Any, model: Any, vae: Any, states: torch.Tensor, factuals: torch.Tensor, iteration: int = 0,
        project: Any = None,
    ) -> Batch:
        """Decode the states and run the model once: what the terms see.

        ``project``: a Feasibility the decoded points are projected onto (a space whose
        states are not points, e.g. latent codes: the terms and the model see feasible points).
        """
        points = space.decode(states, vae)
        if project is not None:
            points = project.project(points, factuals)
        m, K, d = points.shape
        logits, proba, members = model_outputs(model, points.reshape(m * K, d))
        return Batch(
            states=states,
            points=points,
            factuals=factuals,
            logits=logits.reshape(m, K),
            proba=proba.reshape(m, K),
            member_logits=members.reshape(-1, m, K),
            iteration=iteration,
        )

    @staticmethod
    def _gradient(live_terms: list[Term], batch: Batch, aux: dict[str, dict]) -> torch.Tensor:
        """d(sum of weighted terms)/d(states), (m, K, D); zeros when nothing depends on the states.

        ``aux``: per term, its ``prepare`` tensors for the batch's rows.
        """
        loss = None
        for t in live_terms:
            total = t.value(batch, aux[t.name]).sum()
            # A weight of 1 is left out: x * 1 == x, and the graph is one node shorter.
            part = total if t.weight == 1.0 else t.weight * total
            loss = part if loss is None else loss + part
        grad = None
        if loss is not None and loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, batch.states, allow_unused=True)
        return torch.zeros_like(batch.states) if grad is None else grad

    def _step(
        self, active: _Active, grad: torch.Tensor, proba: torch.Tensor, check_before: bool, ask_after: bool, t: int
    ) -> None:
        """Ask the convergence rule who stops, step the others, and drop the stopped (iteration ``t``)."""
        stopped = self.convergence.before_step(proba, self.decision_threshold) if check_before else None
        delta, new_rule_state = self.step_rule.step(grad, active.rule_state)
        on_step = getattr(self.convergence, "stop_on_step", None)
        if check_before and on_step is not None:
            # Stop instead of taking the proposed step (FullSearch: valid and every step short).
            # Under constraints the step that counts is the one the projection lets through
            # (a one-hot entry pushed up and reset each step has not moved).
            run = active.run
            taken = delta
            if run.feasibility is not None and run.aligned:
                taken = _project_states(run.space, active.states + delta, active.factuals, run.feasibility) - active.states
            instead = on_step(proba, taken, self.decision_threshold)
            stopped = instead if stopped is None else stopped | instead
        # One check per iteration; while nobody stops (most iterations) no mask is applied.
        moving = None if stopped is None or not bool(stopped.any()) else ~stopped
        if moving is not None:
            delta = delta * moving[:, None, None].to(delta.dtype)
            stopped_before = stopped
        else:
            stopped_before = None
        if ask_after:
            after = self.convergence.after_step(delta)
            if moving is not None:
                after = after & moving
            stopped = after if stopped_before is None else stopped_before | after
        else:
            stopped = stopped_before
        active.states.add_(delta)
        if active.run.feasibility is not None and active.run.aligned:
            # In place: until somebody stops, the active states are the search's own tensor.
            active.states.copy_(_project_states(active.run.space, active.states, active.factuals, active.run.feasibility))
        for k, v in new_rule_state.items():
            active.rule_state[k] = v if moving is None else torch.where(moving[:, None, None], v, active.rule_state[k])
        if stopped is not None and bool(stopped.any()):
            # Stopped before the step: t steps taken; after it: t + 1.
            taken = torch.full(stopped.shape, t + 1, dtype=torch.int64, device=stopped.device)
            if stopped_before is not None:
                taken.masked_fill_(stopped_before, t)
            active.drop(stopped, taken)

    def _result(self, run: _Search, model: Any, vae: Any, problem: Problem) -> SearchResult:
        """Decode the final states and score them under the model, as numpy on the CPU."""
        n, K, d = problem.n, problem.n_counterfactuals, problem.n_features
        with torch.no_grad():
            points = run.space.decode(run.states, vae)
            if run.feasibility is not None:
                # What is reported is the projected point (integer columns rounded too).
                points = run.feasibility.project(points, problem.factuals, final=True)
            _, proba, _ = model_outputs(model, points.reshape(n * K, d))
            proba = proba.reshape(n, K)
            cost = safe_norm(points - problem.factuals[:, None, :])
        points_np = points.cpu().numpy().astype(np.float32, copy=True)
        proba_np = proba.cpu().numpy().astype(np.float32, copy=True)
        finite = np.isfinite(points_np).all(axis=-1) & np.isfinite(proba_np)
        return SearchResult(
            counterfactuals=points_np,
            proba=proba_np,
            valid=proba_np >= self.decision_threshold,
            cost=cost.cpu().numpy().astype(np.float32, copy=True),
            iterations=run.iterations.cpu().numpy().copy(),
            finite=finite,
            path=np.stack(run.path) if run.path is not None else None,
        )

    @staticmethod
    def _points(
        space: Any, states: torch.Tensor, vae: Any, feasibility: Any = None, factuals: torch.Tensor | None = None
    ) -> np.ndarray:
        with torch.no_grad():
            points = space.decode(states, vae)
            if feasibility is not None:
                points = feasibility.project(points, factuals)
            return points.cpu().numpy().astype(np.float32, copy=True)


def _project_states(space: Any, states: torch.Tensor, factuals: torch.Tensor, feasibility: Any) -> torch.Tensor:
    """States whose points are feasible, in the search's own space: ``g(P(f(s)))``.

    ``f`` is the space's ``decode``, ``g`` its ``from_features`` (the identity in feature
    space, ``(x - mu) / sigma`` in the standardized space), ``P`` the projection.
    """
    with torch.no_grad():
        return space.from_features(feasibility.project(space.decode(states, None), factuals))


def _feasibility(constraints: Any, data: Any, X: np.ndarray) -> tuple[Any, list[str]]:
    """The search's Feasibility (None when nothing applies) and the problems of the argument."""
    from recourse_ray.constraints import Constraints, Feasibility

    if isinstance(constraints, Constraints):
        if not hasattr(data, "feature_names"):
            return None, ["'constraints' given as Constraints need data=<the Dataset> to bind them to its columns "
                          "(or pass constraints.bind(dataset))"]
        try:
            constraints = constraints.bind(data, check_data=False)
        except ValueError as exc:
            return None, [str(exc)]
        if constraints is None:
            return None, []
    if not isinstance(constraints, Feasibility):
        return None, [param_message("constraints", "Generator.search", "a Feasibility, a Constraints or None",
                                    constraints)]
    if X.ndim == 2 and constraints.n_features != X.shape[1]:
        return None, [f"the constraints cover {constraints.n_features} features but 'factuals' has {X.shape[1]}"]
    if X.ndim == 2 and X.size and np.isfinite(X).all():
        bad = constraints.violations(X, X)
        if bad.any():
            return None, [f"{int(bad.sum())} of {X.shape[0]} factuals violate the constraints (rows "
                          f"{', '.join(map(str, np.flatnonzero(bad)[:10]))}); a factual must be feasible"]
    return constraints, []


def _factual_problems(X: np.ndarray, d_model: int | None) -> list[str]:
    """What is wrong with the factuals ``X`` (expected (n, d_model), finite)."""
    if X.ndim != 2:
        return [f"'factuals' must be a 2-D array (n_individuals, n_features); got shape {X.shape}"]
    problems = []
    if d_model is not None and X.shape[1] != d_model:
        problems.append(f"'factuals' has {X.shape[1]} features but the model expects {d_model}")
    if not np.issubdtype(X.dtype, np.number) or (X.size and not np.isfinite(X.astype(np.float64)).all()):
        problems.append("'factuals' contains NaN, infinite or non-numeric values")
    return problems


def _seed_array(seeds: Any, n: int) -> tuple[np.ndarray | None, list[str]]:
    """The (n,) per-individual seeds from one int or from n ints."""
    if is_int(seeds):
        return individual_seeds(int(seeds), n), []
    if isinstance(seeds, (Sequence, np.ndarray)) and not isinstance(seeds, str):
        if len(seeds) == n and all(is_int(s) for s in seeds):
            # Python ints (object array): a seed beyond int64 is still its own stream.
            return np.asarray([int(s) for s in seeds], dtype=object), []
    expected = f"an int or a sequence of {n} ints (one per individual)"
    return None, [param_message("seeds", "Generator.search", expected, seeds)]

