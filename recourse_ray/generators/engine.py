"""The batched counterfactual search engine shared by every generator (SPEC §4-5).

Round step 2 of the simulation ("Generate") calls :meth:`Generator.search` once per
round with all selected individuals. A :class:`Generator` is a composition:

- ``terms``: weighted loss terms (:mod:`recourse_ray.generators.terms`);
- ``space``: where the states live: :class:`FeatureSpace` (identity) or
  :class:`LatentSpace` (a VAE's latent codes, scored through ``vae.decode``);
- ``step_rule``: :class:`GradientDescent` or :class:`Greedy` (JSMA);
- ``convergence``: :class:`ThresholdConvergence` or :class:`FullSearch`;
- ``decision_threshold`` and ``max_iterations``.

All ``n x K`` states form ONE tensor ``(n, K, D)``. Each iteration runs one forward and
one backward pass over the individuals still searching (an index of the active rows,
no Python loop over individuals); converged individuals are frozen. Every individual's
objective depends only on its own states and its random draws come from its own seed, so
searching a batch gives the same result as searching each individual alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch

from recourse_ray._registry import Registry, suggest
from recourse_ray._rng import make_rng
from recourse_ray.generators.terms import TERMS, Term, safe_norm

__all__ = [
    "Generator",
    "SearchResult",
    "Problem",
    "Batch",
    "FeatureSpace",
    "LatentSpace",
    "GradientDescent",
    "Greedy",
    "ThresholdConvergence",
    "FullSearch",
    "SPACES",
    "STEP_RULES",
    "CONVERGENCE",
    "individual_seeds",
    "stream_rng",
]

logger = logging.getLogger(__name__)

RNG_NAMESPACE = "recourse_ray.generators"


def stream_rng(stream: str, seed: int) -> np.random.Generator:
    """The numpy Generator of one individual's random ``stream`` ("init", "gravitational", ...).

    Streams are keyed separately so that adding a term never changes another term's draws.
    """
    return make_rng(RNG_NAMESPACE, stream, int(seed))


def individual_seeds(seed: int, n: int) -> np.ndarray:
    """Per-individual seeds ``(n,)`` int64 derived from one int search seed."""
    return make_rng(RNG_NAMESPACE, "seeds", int(seed)).integers(0, 2**63 - 1, size=n, dtype=np.int64)


def _component_dict(component: Any) -> dict:
    return {"kind": component.kind, **{f.name: getattr(component, f.name) for f in fields(component)}}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------- problem and batch
@dataclass(frozen=True, kw_only=True, eq=False)
class Problem:
    """One validated search request (what terms and spaces may read in ``prepare``).

    Attributes:
        factuals: (n, d) float32 tensor.
        n_counterfactuals: K.
        seeds: (n,) int64 per-individual seeds.
        data_X, data_y: the current training data (numpy), or None.
        vae: the generative model for latent-space search, or None.
    """

    factuals: torch.Tensor
    n_counterfactuals: int
    seeds: np.ndarray
    data_X: np.ndarray | None = None
    data_y: np.ndarray | None = None
    vae: Any = None
    _rng_cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.factuals.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.factuals.shape[1])

    def rngs(self, stream: str) -> list[np.random.Generator]:
        """One fresh numpy Generator per individual for ``stream`` (see :func:`stream_rng`)."""
        if stream in self._rng_cache:
            raise RuntimeError(f"The random stream {stream!r} was already used in this search.")
        self._rng_cache[stream] = True
        return [stream_rng(stream, s) for s in self.seeds]


@dataclass(frozen=True, kw_only=True, eq=False)
class Batch:
    """What terms see at one iteration, for the ``m`` individuals still searching.

    Attributes:
        states: (m, K, D) search variables (features or latent codes), requiring grad.
        points: (m, K, d) the states mapped to feature space (``f(s)``).
        factuals: (m, d).
        logits: (m, K) search logit (mean of member logits for ensembles).
        proba: (m, K) target-class probability.
        member_logits: (M, m, K) logits of each ensemble member (M = 1 for single models).
    """

    states: torch.Tensor
    points: torch.Tensor
    factuals: torch.Tensor
    logits: torch.Tensor
    proba: torch.Tensor
    member_logits: torch.Tensor


def search_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device``, or None for None and CPU (the default, copy-free path)."""
    if device is None:
        return None
    dev = torch.device(device)
    return None if dev.type == "cpu" else dev


def on_device(component: Any, device: torch.device, what: str) -> Any:
    """A copy of a model or VAE whose weights live on ``device`` (the original is untouched)."""
    move = getattr(component, "on_device", None)
    if move is None:
        raise TypeError(f"The {what} {type(component).__name__} has no on_device method; it cannot search on {device}.")
    return move(device)


def model_outputs(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, d) -> (logits (N,), proba (N,), member logits (M, N)); one forward when the model exposes members."""
    member = getattr(model, "member_logits", None)
    if member is not None:
        ml = member(x)
        return ml.mean(dim=0), torch.sigmoid(ml).mean(dim=0), ml
    logits = model.logits(x)
    return logits, model.proba(x), logits.unsqueeze(0)


# ---------------------------------------------------------------------- search spaces
@dataclass(frozen=True, kw_only=True)
class FeatureSpace:
    """Search directly over features; ``f`` is the identity.

    Each individual's K states start at ``x + noise``, ``noise ~ N(0, init_noise^2)``,
    drawn as ``stream_rng("init", seed).normal(0, init_noise, (K, d))`` (float64, then
    cast to float32 and added to the float32 factual).
    """

    kind: ClassVar[str] = "feature"
    needs_vae: ClassVar[bool] = False
    init_noise: float = 0.1

    def __post_init__(self) -> None:
        if not (_is_real(self.init_noise) and math.isfinite(self.init_noise) and self.init_noise >= 0):
            raise ValueError(
                f"The 'init_noise' parameter of FeatureSpace must be a float in the range [0, inf). "
                f"Got {self.init_noise!r} instead."
            )

    def initial_states(self, problem: Problem) -> torch.Tensor:
        K, d = problem.n_counterfactuals, problem.n_features
        noise = np.stack([rng.normal(0.0, self.init_noise, size=(K, d)) for rng in problem.rngs("init")])
        return problem.factuals[:, None, :] + torch.from_numpy(noise.astype(np.float32)).to(problem.factuals.device)

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        return states


@dataclass(frozen=True, kw_only=True)
class LatentSpace:
    """Search over a VAE's latent codes (REVISE, Joshi et al. 2019; CLUE); ``f = vae.decode``.

    All K states start at the encoder mean of ``x`` (no noise, as the reference).
    """

    kind: ClassVar[str] = "latent"
    needs_vae: ClassVar[bool] = True

    def initial_states(self, problem: Problem) -> torch.Tensor:
        with torch.no_grad():
            mu = problem.vae.encode(problem.factuals)
        return mu[:, None, :].expand(-1, problem.n_counterfactuals, -1).clone()

    def decode(self, states: torch.Tensor, vae: Any) -> torch.Tensor:
        m, K, L = states.shape
        return vae.decode(states.reshape(m * K, L)).reshape(m, K, -1)


# ---------------------------------------------------------------------- step rules
@dataclass(frozen=True, kw_only=True)
class GradientDescent:
    """Plain gradient descent: ``s <- s - step_size * grad``."""

    kind: ClassVar[str] = "gradient_descent"
    step_size: float = 0.01

    def __post_init__(self) -> None:
        if not (_is_real(self.step_size) and math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(
                f"The 'step_size' parameter of GradientDescent must be a float in the range (0, inf). "
                f"Got {self.step_size!r} instead."
            )

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        return -self.step_size * grad, state


@dataclass(frozen=True, kw_only=True)
class Greedy:
    """JSMA-style greedy steps (Schut et al., AISTATS 2021).

    Each step moves only the most salient coordinate (largest ``|grad|``) of each state,
    by ``step_size`` against the sign of its gradient. A coordinate that has moved
    ``max_changes`` times is skipped until every coordinate of that state has, then the
    state's counts reset (the reference's ``JSMADescent``). Ties go to the first
    coordinate; a zero gradient moves nothing and counts nothing.
    """

    kind: ClassVar[str] = "greedy"
    step_size: float = 0.1
    max_changes: int = 10

    def __post_init__(self) -> None:
        if not (_is_real(self.step_size) and math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(
                f"The 'step_size' parameter of Greedy must be a float in the range (0, inf). "
                f"Got {self.step_size!r} instead."
            )
        if not (_is_int(self.max_changes) and self.max_changes >= 1):
            raise ValueError(
                f"The 'max_changes' parameter of Greedy must be an int in the range [1, inf). "
                f"Got {self.max_changes!r} instead."
            )

    def init(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"counts": torch.zeros(states.shape, dtype=torch.int32, device=states.device)}

    def step(self, grad: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        counts = state["counts"]
        saliency = grad.abs().masked_fill(counts >= self.max_changes, -1.0)
        chosen = saliency.argmax(dim=-1, keepdim=True)  # (m, K, 1)
        direction = -torch.sign(grad.gather(-1, chosen))
        delta = torch.zeros_like(grad).scatter_(-1, chosen, self.step_size * direction)
        moved = torch.zeros_like(counts).scatter_(-1, chosen, (direction != 0).to(counts.dtype))
        counts = counts + moved
        saturated = (counts >= self.max_changes).all(dim=-1, keepdim=True)
        return delta, {"counts": torch.where(saturated, torch.zeros_like(counts), counts)}


# ---------------------------------------------------------------------- convergence
@dataclass(frozen=True, kw_only=True)
class ThresholdConvergence:
    """An individual stops once all its K states reach ``p(y*) >= decision_threshold``."""

    kind: ClassVar[str] = "threshold"

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        return (proba >= decision_threshold).all(dim=1)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.zeros(delta.shape[0], dtype=torch.bool, device=delta.device)


@dataclass(frozen=True, kw_only=True)
class FullSearch:
    """Ignore the threshold; stop once every state's step is shorter than ``tolerance`` (L2)."""

    kind: ClassVar[str] = "full"
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if not (_is_real(self.tolerance) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(
                f"The 'tolerance' parameter of FullSearch must be a float in the range [0, inf). "
                f"Got {self.tolerance!r} instead."
            )

    def before_step(self, proba: torch.Tensor, decision_threshold: float) -> torch.Tensor:
        return torch.zeros(proba.shape[0], dtype=torch.bool)

    def after_step(self, delta: torch.Tensor) -> torch.Tensor:
        return (safe_norm(delta) < self.tolerance).all(dim=1)


SPACES: Registry[type] = Registry("search space")
SPACES.register("feature", FeatureSpace)
SPACES.register("latent", LatentSpace)
STEP_RULES: Registry[type] = Registry("step rule")
STEP_RULES.register("gradient_descent", GradientDescent)
STEP_RULES.register("greedy", Greedy)
CONVERGENCE: Registry[type] = Registry("convergence rule")
CONVERGENCE.register("threshold", ThresholdConvergence)
CONVERGENCE.register("full", FullSearch)


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
        finite: (n, K) bool, False where the counterfactual or its probability is NaN/inf
            (the simulation does not apply those).
        path: (n_steps + 1, n, K, d) float32 feature-space points after each engine
            iteration (index 0 = start), only when ``return_path=True``; frozen
            individuals repeat their last point.
    """

    counterfactuals: np.ndarray
    proba: np.ndarray
    valid: np.ndarray
    cost: np.ndarray
    iterations: np.ndarray
    finite: np.ndarray
    path: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.counterfactuals.shape[0])


# ---------------------------------------------------------------------- generator
@dataclass(frozen=True, kw_only=True)
class Generator:
    """A counterfactual generator: loss terms + search space + step rule + convergence rule.

    Attributes:
        terms: the weighted loss terms (distinct names).
        space: :class:`FeatureSpace` or :class:`LatentSpace`.
        step_rule: :class:`GradientDescent` or :class:`Greedy`.
        convergence: :class:`ThresholdConvergence` or :class:`FullSearch`.
        decision_threshold: ``gamma``: the target probability a counterfactual must
            reach to be valid (and, with threshold convergence, to stop), in (0, 1).
        max_iterations: ``T``, the most steps per individual (>= 0).
        name: a label (the preset's name for presets).
    """

    terms: tuple[Term, ...]
    space: FeatureSpace | LatentSpace = field(default_factory=FeatureSpace)
    step_rule: GradientDescent | Greedy = field(default_factory=GradientDescent)
    convergence: ThresholdConvergence | FullSearch = field(default_factory=ThresholdConvergence)
    decision_threshold: float = 0.5
    max_iterations: int = 100
    name: str = "custom"

    def __post_init__(self) -> None:
        terms = tuple(self.terms) if isinstance(self.terms, (list, tuple)) else self.terms
        problems = []
        if not isinstance(terms, tuple) or not all(isinstance(t, Term) for t in terms):
            problems.append(f"'terms' must be a sequence of Term instances; got {self.terms!r}")
        else:
            names = [t.name for t in terms]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"'terms' holds the term(s) {', '.join(map(repr, dupes))} more than once")
        if not isinstance(self.space, (FeatureSpace, LatentSpace)):
            problems.append(f"'space' must be FeatureSpace() or LatentSpace(); got {self.space!r}")
        if not isinstance(self.step_rule, (GradientDescent, Greedy)):
            problems.append(f"'step_rule' must be GradientDescent() or Greedy(); got {self.step_rule!r}")
        if not isinstance(self.convergence, (ThresholdConvergence, FullSearch)):
            problems.append(f"'convergence' must be ThresholdConvergence() or FullSearch(); got {self.convergence!r}")
        t = self.decision_threshold
        if not (_is_real(t) and 0.0 < t < 1.0):
            problems.append(f"the 'decision_threshold' parameter must be a float in the range (0, 1); got {t!r}")
        if not (_is_int(self.max_iterations) and self.max_iterations >= 0):
            problems.append(
                f"the 'max_iterations' parameter must be an int in the range [0, inf); got {self.max_iterations!r}"
            )
        if problems:
            raise ValueError(f"Invalid generator {self.name!r}: " + "; ".join(problems) + ".")
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "decision_threshold", float(t))
        object.__setattr__(self, "max_iterations", int(self.max_iterations))

    # ------------------------------------------------------------------ description
    @property
    def needs_vae(self) -> bool:
        """Whether :meth:`search` needs a ``vae`` (latent-space search)."""
        return self.space.needs_vae

    @property
    def needs_data(self) -> bool:
        """Whether :meth:`search` needs the current training ``data`` (MAD, Gravitational)."""
        return any(t.needs_data for t in self.terms)

    def term(self, name: str) -> Term:
        """The term called ``name``."""
        for t in self.terms:
            if t.name == name:
                return t
        have = [t.name for t in self.terms]
        raise KeyError(f"Generator {self.name!r} has no term {name!r}.{suggest(name, have)} Its terms: {', '.join(have)}.")

    def to_dict(self) -> dict:
        """The fully resolved settings as plain JSON-able values (stable; hash it to key results)."""
        return {
            "name": self.name,
            "terms": [{"kind": t.name, **t.params()} for t in self.terms],
            "space": _component_dict(self.space),
            "step_rule": _component_dict(self.step_rule),
            "convergence": _component_dict(self.convergence),
            "decision_threshold": self.decision_threshold,
            "max_iterations": self.max_iterations,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Generator":
        """Inverse of :meth:`to_dict`."""

        def build(registry: Registry, spec: dict):
            spec = dict(spec)
            return registry.get(spec.pop("kind"))(**spec)

        return cls(
            name=d.get("name", "custom"),
            terms=tuple(build(TERMS, t) for t in d["terms"]),
            space=build(SPACES, d["space"]),
            step_rule=build(STEP_RULES, d["step_rule"]),
            convergence=build(CONVERGENCE, d["convergence"]),
            decision_threshold=d["decision_threshold"],
            max_iterations=d["max_iterations"],
        )

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``generic: validity + 0.1*distance | feature | ...``."""
        terms = " + ".join(t.name if t.weight == 1.0 else f"{t.weight:g}*{t.name}" for t in self.terms)
        extra = [
            f"{f.name}={getattr(self.step_rule, f.name):g}" for f in fields(self.step_rule)
        ]
        conv = self.convergence.kind
        if isinstance(self.convergence, FullSearch):
            conv += f"(tol={self.convergence.tolerance:g})"
        return (
            f"{self.name}: {terms} | {self.space.kind} space | {self.step_rule.kind}({', '.join(extra)}) | "
            f"{conv} convergence, decision_threshold={self.decision_threshold:g}, max_iterations={self.max_iterations}"
        )

    def key(self) -> str:
        """A canonical JSON string of :meth:`to_dict` (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    # ------------------------------------------------------------------ search
    def _problem(self, model, factuals, n_counterfactuals, seeds, data, vae) -> Problem:
        problems = []
        d_model = getattr(model, "input_dim", None)
        X = np.asarray(factuals)
        if X.ndim != 2:
            problems.append(f"'factuals' must be a 2-D array (n_individuals, n_features); got shape {X.shape}")
        else:
            if d_model is not None and X.shape[1] != d_model:
                problems.append(f"'factuals' has {X.shape[1]} features but the model expects {d_model}")
            if not np.issubdtype(X.dtype, np.number) or (X.size and not np.isfinite(X.astype(np.float64)).all()):
                problems.append("'factuals' contains NaN, infinite or non-numeric values")
        if not (_is_int(n_counterfactuals) and n_counterfactuals >= 1):
            problems.append(f"the 'n_counterfactuals' parameter must be an int in the range [1, inf); got {n_counterfactuals!r}")
        n = X.shape[0] if X.ndim == 2 else 0
        seed_array = None
        if _is_int(seeds):
            seed_array = individual_seeds(int(seeds), n)
        elif isinstance(seeds, (Sequence, np.ndarray)) and not isinstance(seeds, str):
            if len(seeds) != n or not all(_is_int(s) for s in seeds):
                problems.append(f"'seeds' must be an int or a sequence of {n} ints (one per individual); got {seeds!r}")
            else:
                seed_array = np.asarray([int(s) for s in seeds], dtype=object)
        else:
            problems.append(f"'seeds' must be an int or a sequence of {n} ints (one per individual); got {seeds!r}")
        data_X = data_y = None
        if self.needs_data:
            need = ", ".join(repr(t.name) for t in self.terms if t.needs_data)
            if data is None:
                problems.append(f"the term(s) {need} need the current training data: pass data=(X, y)")
            else:
                if hasattr(data, "X") and hasattr(data, "y"):
                    data = (data.X, data.y)
                try:
                    data_X, data_y = (np.asarray(a) for a in data)
                except (TypeError, ValueError):
                    problems.append(f"'data' must be a pair (X, y) of arrays; got {type(data).__name__}")
                else:
                    data_X = data_X.astype(np.float32)
                    if data_X.ndim != 2 or (X.ndim == 2 and data_X.shape[1] != X.shape[1]) or data_X.shape[0] == 0:
                        problems.append(f"'data' X must have shape (n_rows >= 1, {X.shape[-1]}); got {data_X.shape}")
                    elif data_y.shape != (data_X.shape[0],):
                        problems.append(f"'data' y must have shape ({data_X.shape[0]},); got {data_y.shape}")
        if self.needs_vae:
            if vae is None:
                problems.append(f"generator {self.name!r} searches in latent space and needs a trained VAE: pass vae=...")
            elif X.ndim == 2 and getattr(vae, "input_dim", X.shape[1]) != X.shape[1]:
                problems.append(f"the VAE has input_dim {vae.input_dim} but 'factuals' has {X.shape[1]} features")
        if problems:
            raise ValueError(f"Invalid arguments to search with generator {self.name!r}: " + "; ".join(problems) + ".")
        return Problem(
            factuals=torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
            n_counterfactuals=int(n_counterfactuals),
            seeds=seed_array,
            data_X=data_X,
            data_y=data_y,
            vae=vae,
        )

    def _batch(self, model, vae, states: torch.Tensor, factuals: torch.Tensor) -> Batch:
        points = self.space.decode(states, vae)
        m, K, d = points.shape
        logits, proba, members = model_outputs(model, points.reshape(m * K, d))
        return Batch(
            states=states,
            points=points,
            factuals=factuals,
            logits=logits.reshape(m, K),
            proba=proba.reshape(m, K),
            member_logits=members.reshape(-1, m, K),
        )

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

        Returns:
            A :class:`SearchResult`.

        Raises:
            ValueError: for malformed factuals, seeds, data, a missing VAE or data.
        """
        dev = search_device(device)
        problem = self._problem(model, factuals, n_counterfactuals, seeds, data, vae)
        if dev is not None:
            model = on_device(model, dev, "model")
            if vae is not None:
                vae = on_device(vae, dev, "VAE")
            problem = replace(problem, factuals=problem.factuals.to(dev), vae=vae)
        n, K, d = problem.n, problem.n_counterfactuals, problem.n_features
        if n == 0:
            return SearchResult(
                counterfactuals=np.zeros((0, K, d), np.float32),
                proba=np.zeros((0, K), np.float32),
                valid=np.zeros((0, K), bool),
                cost=np.zeros((0, K), np.float32),
                iterations=np.zeros(0, np.int64),
                finite=np.zeros((0, K), bool),
                path=np.zeros((1, 0, K, d), np.float32) if return_path else None,
            )
        factuals_t = problem.factuals
        with torch.no_grad():
            states = self.space.initial_states(problem).detach().clone()
        aux = {t.name: t.prepare(problem) for t in self.terms}
        if dev is not None:
            aux = {
                name: {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in a.items()} if a else a
                for name, a in aux.items()
            }
        live_terms = [t for t in self.terms if t.weight != 0.0]
        rule_state = self.step_rule.init(states)
        active = torch.ones(n, dtype=torch.bool, device=states.device)
        iterations = torch.zeros(n, dtype=torch.int64, device=states.device)
        path = [self._points(states, vae)] if return_path else None

        n_active = n
        for _ in range(self.max_iterations):
            if n_active == 0:
                break
            # While everyone is searching (the common case) skip the gather/scatter.
            idx = None if n_active == n else torch.nonzero(active).squeeze(1)

            def rows(t: torch.Tensor) -> torch.Tensor:
                return t if idx is None else t[idx]

            s = rows(states).detach().requires_grad_(True)
            batch = self._batch(model, vae, s, rows(factuals_t))
            loss = None
            for t in live_terms:
                term_aux = {k: rows(v) for k, v in aux[t.name].items()} if aux[t.name] else aux[t.name]
                part = t.weight * t.value(batch, term_aux).sum()
                loss = part if loss is None else loss + part
            grad = None
            if loss is not None and loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, s, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(s)
            with torch.no_grad():
                stopped = self.convergence.before_step(batch.proba, self.decision_threshold)
                moving = ~stopped
                delta, new_rule_state = self.step_rule.step(grad, {k: rows(v) for k, v in rule_state.items()})
                delta = delta * moving[:, None, None].to(delta.dtype)
                stopped = stopped | (self.convergence.after_step(delta) & moving)
                if idx is None:
                    states.add_(delta)
                    iterations.add_(moving.to(torch.int64))
                    for k, v in new_rule_state.items():
                        rule_state[k] = torch.where(moving[:, None, None], v, rule_state[k])
                    active.masked_fill_(stopped, False)
                else:
                    states[idx] += delta
                    iterations[idx] += moving.to(torch.int64)
                    for k, v in new_rule_state.items():
                        rule_state[k][idx] = torch.where(moving[:, None, None], v, rule_state[k][idx])
                    active[idx[stopped]] = False
                n_active = int(active.sum())
            if return_path:
                path.append(self._points(states, vae))

        with torch.no_grad():
            points = self.space.decode(states, vae)
            _, proba, _ = model_outputs(model, points.reshape(n * K, d))
            proba = proba.reshape(n, K)
            cost = safe_norm(points - factuals_t[:, None, :])
        points_np = points.cpu().numpy().astype(np.float32, copy=True)
        proba_np = proba.cpu().numpy().astype(np.float32, copy=True)
        finite = np.isfinite(points_np).all(axis=-1) & np.isfinite(proba_np)
        return SearchResult(
            counterfactuals=points_np,
            proba=proba_np,
            valid=proba_np >= self.decision_threshold,
            cost=cost.cpu().numpy().astype(np.float32, copy=True),
            iterations=iterations.cpu().numpy().copy(),
            finite=finite,
            path=np.stack(path) if return_path else None,
        )

    def _points(self, states: torch.Tensor, vae: Any) -> np.ndarray:
        with torch.no_grad():
            return self.space.decode(states, vae).cpu().numpy().astype(np.float32, copy=True)
