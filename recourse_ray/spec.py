"""Sweep files: parse, validate, and expand the grid into system specs with stable keys.

A sweep file (YAML) names a grid of datasets x models x generators x seeds and the
settings shared by all systems. ``load(path)`` validates everything before anything
runs and reports *every* problem in one ``SpecError``. Each (generator variant, dataset)
pair is resolved once, here: the variant's overrides merged with the dataset's
``search:`` block, built and validated into a :class:`~recourse_ray.generators.Generator`
whose ``to_dict()`` is the typed, serialisable description that system keys hash and
workers rebuild from (``Generator.from_dict``). ``SweepSpec.systems()`` expands the
grid into ``SystemSpec``s whose ``key`` is a hash of the fully resolved settings, so
any change to what a system computes gives it a new key and equal settings equal keys.

See ``docs/guide.md`` ("Sweep files") for the reference of every key.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from recourse_ray import data as data_mod
from recourse_ray import generators as gen_mod
from recourse_ray import metrics as metrics_mod
from recourse_ray import models as models_mod
from recourse_ray import protocols as protocols_mod
from recourse_ray._config import INT64_MAX, INT64_MIN, build_settings, is_int, is_real, settings_dict, short_repr
from recourse_ray._registry import import_object, is_import_path, suggest, user_error
from recourse_ray.constraints import Constraints
from recourse_ray.settings import EXECUTION_ONLY, SetupSettings, SimulationSettings
from recourse_ray._identity import identity_row

__all__ = ["SpecError", "SweepSpec", "SystemSpec", "load", "loads", "parse", "expand_grid"]

TOP_KEYS = (
    "name",
    "description",
    "seeds",
    "sweep_seed",
    "shared_setup",
    "grid",
    "simulation",
    "setup",
    "metrics",
    "generators",
    "models",
    "datasets",
    "timeout_s",
    "protocol",
)
GRID_AXES = ("dataset", "model", "generator")
# Keys of a dataset variant that are not options of its loader.
DATASET_SECTIONS = ("preset", "setup", "search")
# \Z, not $: "$" also matches before a final newline.
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
KEY_LENGTH = 16

# Limits (docs/reliability.md). A name becomes a folder name (255 bytes on most
# filesystems, with room for "dataset=" and the like).
MAX_NAME_CHARS = 100
MAX_SPEC_BYTES = 1 << 20          # a sweep file is a page of YAML, not a data file
MAX_DEPTH = 40                    # nesting of mappings and sequences
MAX_NODES = 100_000               # YAML nodes once aliases are expanded (alias bombs)
MAX_SEEDS = 10_000
MAX_SYSTEMS = 100_000
MAX_ROUNDS = 100_000
MAX_SETTING_INT = 10_000_000      # any other integer setting (epochs, batch sizes, samples, grids)
SYNTHETIC = ("overlapping", "linearly_separable", "circles", "moons", "blobs")


class SpecError(ValueError):
    """A sweep file has problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        # The same problem once, in order; each cut to a readable length (values are capped
        # where they are formatted, this is the last guard).
        self.problems = [p if len(p) <= 1000 else p[:997] + "..." for p in dict.fromkeys(problems)]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid sweep file {source}: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True, kw_only=True)
class SystemSpec:
    """One fully resolved recourse system of a sweep.

    Attributes:
        generator_config: the generator's resolved description (``Generator.to_dict()``
            of the variant's overrides merged with the dataset's ``search:`` block).
        needs_vae: whether the generator searches a VAE's latent space.
    """

    sweep: str
    dataset: str
    dataset_preset: str
    dataset_options: dict
    model: str
    model_preset: str
    model_params: dict
    generator: str
    generator_config: dict
    needs_vae: bool
    seed: int
    setup_seed: int
    sweep_seed: int
    simulation: SimulationSettings
    setup: SetupSettings
    metrics: Any  # recourse_ray.metrics.MetricSettings
    timeout_s: float | None = None
    cohort: tuple = ()
    key: str = ""

    def resolved(self) -> dict:
        """Everything that determines the system's output, as plain data.

        Under lockstep selection a system's output also depends on the other members of
        its cohort (their candidate sets are intersected), so they are part of it.
        """
        cohort = {"cohort": list(self.cohort)} if self.cohort else {}
        return cohort | {
            "dataset": {"name": self.dataset, "preset": self.dataset_preset, "options": self.dataset_options},
            "model": {"name": self.model, "preset": self.model_preset, "params": self.model_params},
            "generator": {"name": self.generator, "config": self.generator_config},
            "seed": self.seed,
            "setup_seed": self.setup_seed,
            "sweep_seed": self.sweep_seed,
            # Where the tensors live changes how fast, not what, a system computes: the
            # device stays out of the key, so results are shared across devices.
            "simulation": {k: v for k, v in settings_dict(self.simulation).items() if k not in EXECUTION_ONLY},
            "setup": settings_dict(self.setup),
            "metrics": settings_dict(self.metrics),
        }

    @property
    def data_key(self) -> str:
        """Key of the shared data split this system starts from."""
        return _hash(
            {"dataset": self.dataset_options | {"preset": self.dataset_preset}, "setup_seed": self.setup_seed,
             "sweep_seed": self.sweep_seed, "n_samples": self.setup.n_samples, "test_size": self.setup.test_size,
             "name": self.dataset}
        )

    @property
    def model_key(self) -> str:
        """Key of the shared pretrained classifier."""
        s = self.setup
        return _hash(
            {"data": self.data_key, "model": self.model, "preset": self.model_preset, "params": self.model_params,
             "epochs": s.pretrain_epochs, "batch": s.pretrain_batch_size, "lr": s.pretrain_lr}
        )

    @property
    def vae_key(self) -> str:
        """Key of the shared pretrained VAE."""
        s = self.setup
        shared = {"data": self.data_key, "latent": s.vae_latent_dim, "hidden": s.vae_hidden, "epochs": s.vae_epochs,
                  "batch": s.vae_batch_size, "kl_weight": s.vae_kl_weight}
        if (s.vae_objective, s.vae_decoder_weight_decay, s.vae_keep_optimizer) != ("scaled", None, False):
            shared |= {"objective": s.vae_objective, "decay": s.vae_decoder_weight_decay,
                       "keep_optimizer": s.vae_keep_optimizer}
        if s.vae_per_system:
            shared |= {"owner": list(self.vae_owner)}
        return _hash(shared)

    @property
    def vae_owner(self) -> tuple:
        """Who the system's VAE belongs to: () when shared, (model, generator, seed) when its own."""
        return (self.model, self.generator, self.seed) if self.setup.vae_per_system else ()

    def identity_columns(self) -> dict:
        """The identity columns every row of this system carries (``store.IDENTITY_COLUMNS``)."""
        return identity_row(sweep=self.sweep, system_key=self.key, dataset=self.dataset, model=self.model,
                            generator=self.generator, seed=self.seed)

    def create_generator(self) -> gen_mod.Generator:
        """The generator, rebuilt from its resolved description (what the key hashes)."""
        return gen_mod.Generator.from_dict(self.generator_config)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.generator}/seed={self.seed}"

    def input_files(self) -> dict[str, str]:
        """``{file: sha256}`` of every file the system reads: its data file and the user modules it names.

        Recorded in the system's manifest (``inputs``); a resume refuses when one changed
        since (``sweep._driver.plan``). Kept out of the key, so that moving a CSV does not
        change a system, while editing it is detected.
        """
        names = [self.dataset_preset, self.model_preset, *_import_paths(self.generator_config)]
        files = {str(f): None for f in _module_files(names)}
        data_file = _data_file(self.dataset_preset, self.dataset_options)
        if data_file is not None:
            files[str(data_file)] = None
        return {f: _file_sha256(f) for f in files}


def expand_grid(grid: Mapping[str, Any], seeds: Any) -> list[tuple[str, str, str, int]]:
    """The grid's (dataset, model, generator, seed) cells in the sweep's stable order."""
    return [
        (str(d), str(m), str(g), int(seed))
        for d, m, g, seed in itertools.product(grid["dataset"], grid["model"], grid["generator"], seeds)
    ]


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A validated sweep file.

    Attributes:
        generator_configs: ``{(generator, dataset): Generator.to_dict()}`` for every pair
            of the grid, resolved once by :func:`parse`.
    """

    name: str
    description: str = ""
    seeds: tuple[int, ...] = (0,)
    sweep_seed: int = 0
    shared_setup: bool = True
    grid: dict = field(default_factory=dict)
    simulation: SimulationSettings = SimulationSettings()
    setup: SetupSettings = SetupSettings()
    metrics: Any = None
    generators: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    timeout_s: float | None = None
    source: str = "<string>"
    protocol: protocols_mod.Resolved = field(default_factory=protocols_mod.Resolved)
    generator_configs: dict = field(default_factory=dict, repr=False, compare=False)
    latent: dict = field(default_factory=dict, repr=False, compare=False)

    def systems(self) -> list[SystemSpec]:
        """The grid expanded in a stable order (dataset, model, generator, seed)."""
        out = []
        lockstep = self.simulation.selection == "lockstep"
        for d, m, g, seed in expand_grid(self.grid, self.seeds):
            dvar = self.datasets.get(d, {"preset": d})
            mvar = self.models.get(m, {"preset": m})
            spec = SystemSpec(
                sweep=self.name,
                dataset=d,
                dataset_preset=dvar["preset"],
                dataset_options={k: v for k, v in dvar.items() if k not in DATASET_SECTIONS},
                model=m,
                model_preset=mvar["preset"],
                model_params=_model_params(mvar, self.protocol),
                generator=g,
                generator_config=self.generator_configs[(g, d)],
                needs_vae=self.latent[(g, d)],
                seed=seed,
                setup_seed=0 if self.shared_setup else seed,
                sweep_seed=self.sweep_seed,
                simulation=self.simulation,
                setup=replace(self.setup, **dvar.get("setup", {})),
                metrics=self.metrics,
                timeout_s=self.timeout_s,
                cohort=self._cohort(d) if lockstep else (),
            )
            out.append(replace(spec, key=_hash(spec.resolved())))
        return out

    def _cohort(self, dataset: str) -> tuple:
        """The (model, its parameters, generator, its description) of every member of a lockstep cohort."""
        members = []
        for m in self.grid["model"]:
            mvar = self.models.get(m, {"preset": m})
            for g in self.grid["generator"]:
                members.append(
                    (m, mvar["preset"], _model_params(mvar, self.protocol), g, self.generator_configs[(g, dataset)])
                )
        return tuple(members)

    def to_dict(self) -> dict:
        """The resolved spec as plain data (what ``sweep.yaml`` in the results holds)."""
        return {
            "name": self.name,
            "description": self.description,
            "seeds": list(self.seeds),
            "sweep_seed": self.sweep_seed,
            "shared_setup": self.shared_setup,
            "timeout_s": self.timeout_s,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "simulation": {k: v for k, v in settings_dict(self.simulation).items() if k not in EXECUTION_ONLY},
            "setup": settings_dict(self.setup),
            "metrics": settings_dict(self.metrics),
            "generators": self.generators,
            "models": self.models,
            "datasets": self.datasets,
        } | ({} if self.protocol.name == protocols_mod.DEFAULT else {"protocol": self.protocol.to_raw()})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _import_paths(obj: Any) -> list[str]:
    """Every "package.module:attribute" string inside a (JSON-like) description."""
    if isinstance(obj, str):
        return [obj] if is_import_path(obj) else []
    if isinstance(obj, Mapping):
        return [p for v in obj.values() for p in _import_paths(v)]
    if isinstance(obj, (list, tuple)):
        return [p for v in obj for p in _import_paths(v)]
    return []


def _module_files(paths: list[str]) -> list[Path]:
    """Source files of the (already imported) user modules that import paths name."""
    out = []
    for path in paths:
        if not is_import_path(path):
            continue
        module = sys.modules.get(path.partition(":")[0])
        file = getattr(module, "__file__", None)
        if file and Path(file).is_file():
            out.append(Path(file).resolve())
    return out


def _data_file(preset: str, options: Mapping) -> Path | None:
    """The file a dataset loader reads: a ``csv`` preset's path, a named dataset's file, or None."""
    from recourse_ray.data import tabular

    if preset == "csv" and isinstance(options.get("path"), str):
        return tabular.resolve_path(options["path"])
    if preset in tabular.FILES:
        return data_mod.get_data_dir() / tabular.FILES[preset]
    from recourse_ray.data import sources

    return sources.data_file(preset)  # the published synthetic sets (study_*), None for generated data


def _file_sha256(path: str) -> str | None:
    """SHA-256 of a file's content (None when it cannot be read); one read per version of a file."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return _sha256_of(path, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _type_name(v: object) -> str:
    return type(v).__name__


def _error_text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


# ---------------------------------------------------------------------- top-level values
def _valid_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME_CHARS and NAME_RE.match(name) is not None


def _seeds(raw: Any, problems: list[str]) -> tuple[int, ...]:
    expected = (f"'seeds' must be an int in the range [1, {MAX_SEEDS}] or a non-empty list of at most {MAX_SEEDS} "
                "ints in the range [0, 2**63 - 1]")
    if is_int(raw):
        if 1 <= raw <= MAX_SEEDS:
            return tuple(range(int(raw)))
        problems.append(f"{expected}. Got {short_repr(raw)} instead.")
    elif (isinstance(raw, list) and raw and len(raw) <= MAX_SEEDS
          and all(is_int(s) and 0 <= s <= INT64_MAX for s in raw)):
        if len(set(raw)) == len(raw):
            return tuple(int(s) for s in raw)
        problems.append(f"'seeds' lists a seed more than once: {short_repr(raw)}.")
    else:
        problems.append(f"{expected}. Got {short_repr(raw)} instead.")
    return (0,)


def _scalars(raw: dict, problems: list[str]) -> dict:
    """name, description, seeds, sweep_seed, shared_setup and timeout_s, checked."""
    out: dict[str, Any] = {}
    name = raw.get("name")
    if not _valid_name(name):
        problems.append(f"'name' must be a non-empty string of at most {MAX_NAME_CHARS} letters, digits, '_', '.', '-' "
                        f"(starting with a letter or digit). Got {short_repr(name)} instead.")
        name = "invalid"
    out["name"] = name
    out["seeds"] = _seeds(raw.get("seeds", 1), problems)
    sweep_seed = raw.get("sweep_seed", 0)
    if not (is_int(sweep_seed) and 0 <= sweep_seed <= INT64_MAX):
        problems.append(f"'sweep_seed' must be an int in the range [0, 2**63 - 1]. Got {short_repr(sweep_seed)} instead.")
        sweep_seed = 0
    out["sweep_seed"] = int(sweep_seed)
    shared_setup = raw.get("shared_setup", True)
    if not isinstance(shared_setup, bool):
        problems.append(f"'shared_setup' must be true or false. Got {short_repr(shared_setup)} instead.")
        shared_setup = True
    out["shared_setup"] = shared_setup
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None and not (is_real(timeout_s) and math.isfinite(timeout_s) and timeout_s > 0):
        problems.append(f"'timeout_s' must be a number > 0 (seconds per system) or null. Got {short_repr(timeout_s)} instead.")
        timeout_s = None
    out["timeout_s"] = timeout_s
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append("'description' must be a string.")
        description = ""
    out["description"] = description
    return out


def _over(protocol_section: Mapping[str, Any], raw: Any) -> Any:
    """A settings section of the sweep file over what the protocol sets (the file's values win)."""
    if not protocol_section:
        return raw
    if raw is None:
        return dict(protocol_section)
    if isinstance(raw, Mapping):
        return {**protocol_section, **raw}
    return raw  # not a mapping: build_settings reports it


def _settings(cls, raw: Any, section: str, problems: list[str], base=None):
    obj, found = build_settings(cls, raw, section, base)
    problems.extend(found)
    return obj


# ---------------------------------------------------------------------- variants
def _variants(raw: Any, section: str, registry_names: list[str], kind: str, problems: list[str], invalid: set) -> dict:
    """Named variants ``{name: {preset: P, ...}}`` over registered presets or import paths.

    Names of variants that could not be built are added to ``invalid`` (so the grid check
    does not report them a second time).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"'{section}' must be a mapping of variant name -> settings. Got {_type_name(raw)} instead.")
        return {}
    out = {}
    for name, body in raw.items():
        if not _valid_name(name):
            problems.append(f"Invalid {kind} variant name {short_repr(name)} in '{section}': use at most {MAX_NAME_CHARS} "
                            "letters, digits, '_', '.', '-'.")
            continue
        if body is None:
            body = {}
        if not isinstance(body, dict):
            problems.append(f"The {kind} variant '{name}' must be a mapping. Got {_type_name(body)} instead.")
            continue
        preset = body.get("preset", name)
        if is_import_path(preset):
            try:
                import_object(preset, kind)
            except KeyError as exc:
                problems.append(f"{kind.capitalize()} variant '{name}': {exc.args[0]}")
                invalid.add(name)
                continue
        elif not isinstance(preset, str) or preset not in registry_names:
            problems.append(
                f"Unknown {kind} preset {short_repr(preset)} for variant '{name}' in '{section}'.{suggest(str(preset), registry_names)} "
                f"Valid presets: {', '.join(registry_names)} (or an import path 'package.module:attribute')."
            )
            invalid.add(name)
            continue
        out[name] = {**body, "preset": preset}
    return out


def _model_params(variant: Mapping, protocol: protocols_mod.Resolved) -> dict:
    """A model variant's parameters over the protocol's (the variant's own win)."""
    own = {k: v for k, v in variant.items() if k != "preset"}
    return protocols_mod.deep_merge(protocol.model_params(variant["preset"]), own)


def _failure(preset: str, exc: BaseException) -> str:
    """What a factory or loader raised, as a message; user code is named with the exception's type."""
    if isinstance(exc, (KeyError, ValueError, TypeError, OSError)) and not is_import_path(preset):
        return _error_text(exc)
    if is_import_path(preset):
        return f"{preset!r} failed: {user_error(preset.partition(':')[0], exc)}"
    return f"{type(exc).__name__}: {short_repr(_error_text(exc), 300)}"


# Errors of user code (factories, loaders, components) are reported, never raised: any
# exception, and SystemExit too (a module calling sys.exit() must not end validation).
_USER_ERRORS = (Exception, SystemExit)


def _check_model(name: str, body: dict, protocol: protocols_mod.Resolved, problems: list[str]) -> None:
    try:
        models_mod.create(body["preset"], input_dim=2, seed=0, **_model_params(body, protocol))
    except _USER_ERRORS as exc:
        problems.append(f"Model '{name}': {_failure(body['preset'], exc)}")


def _check_dataset(name: str, body: dict, base_dir: Path, problems: list[str]) -> dict:
    body = dict(body)
    if "path" in body:
        path = Path(str(body["path"])).expanduser()
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        if path.is_dir():
            problems.append(f"Dataset '{name}': the CSV path {str(path)!r} is a directory, not a file.")
            return body
        if not path.exists():
            problems.append(f"Dataset '{name}': the CSV file {str(path)!r} does not exist.")
            return body
        body["path"] = str(path)
    if "constraints" in body:
        # Canonical form, so that equal constraints key equally; none at all leaves the
        # dataset's options (and so every system key) as they were without the block.
        built, errors = Constraints.parse(body["constraints"], f"datasets.{name}.constraints")
        problems.extend(f"Dataset '{name}': {e}" for e in errors)
        if built is None or built.is_empty:
            body.pop("constraints")
        else:
            body["constraints"] = built.to_dict()
    if "search" in body and not isinstance(body["search"], dict):
        problems.append(f"Dataset '{name}': 'search' must be a mapping of generator overrides.")
        body.pop("search")
    if "setup" in body:
        if not isinstance(body["setup"], dict):
            problems.append(f"Dataset '{name}': 'setup' must be a mapping of setup settings.")
        else:
            _settings(SetupSettings, body["setup"], f"datasets.{name}.setup", problems)
    return body


def _load_dataset_probe(name: str, body: dict, setup: SetupSettings, problems: list[str]) -> None:
    """Load each dataset once, with the sweep's ``setup.n_samples``, so that what a run needs fails here.

    Synthetic datasets are generated small (their size is free); every other loader is
    asked for the rows the run will ask for, so a CSV with fewer rows than
    ``setup.n_samples`` fails before the results folder exists.
    """
    options = {k: v for k, v in body.items() if k not in DATASET_SECTIONS}
    constraints = options.pop("constraints", None)
    if body["preset"] in SYNTHETIC:
        size = {"n_samples": 20}
    else:
        n_samples = replace(setup, **body.get("setup", {})).n_samples if isinstance(body.get("setup", {}), dict) else None
        size = {} if n_samples is None else {"n_samples": n_samples}
    try:
        dataset = data_mod.load(body["preset"], seed=0, **size, **options)
    except _USER_ERRORS as exc:
        problems.append(f"Dataset '{name}': {_failure(body['preset'], exc)}")
        return
    if constraints is not None:
        try:
            Constraints.from_dict(constraints).bind(dataset)
        except ValueError as exc:
            problems.append(f"Dataset '{name}': {exc}")


# ---------------------------------------------------------------------- grid
def _grid(raw: Any, known: dict[str, tuple[list[str], dict]], invalid: set, problems: list[str]) -> dict:
    grid: dict[str, tuple[str, ...]] = {}
    if not isinstance(raw, dict):
        problems.append("'grid' must be a mapping with lists 'dataset', 'model' and 'generator'.")
        return grid
    for key in raw:
        if key not in GRID_AXES:
            problems.append(f"Unknown grid axis {short_repr(key)}.{suggest(str(key), GRID_AXES)} Valid axes: {', '.join(GRID_AXES)}.")
    for axis in GRID_AXES:
        values = raw.get(axis)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            problems.append(f"'grid.{axis}' must be a non-empty list of names. Got {short_repr(values)} instead.")
            continue
        if len(set(map(str, values))) != len(values):
            problems.append(f"'grid.{axis}' lists a name more than once: {short_repr(values)}.")
        registry_names, variants = known[axis]
        valid = sorted(set(registry_names) | set(variants))
        for v in values:
            if isinstance(v, str) and v in invalid:
                continue  # its variant's own problem is already reported
            if not isinstance(v, str) or v not in valid:
                problems.append(
                    f"Unknown {axis} {short_repr(v)} in 'grid.{axis}'.{suggest(str(v), valid)} "
                    f"Valid names: {', '.join(valid)} (or define a variant under '{axis}s')."
                )
        grid[axis] = tuple(str(v) for v in values)
    return grid


def _resolve_generators(
    grid: dict, generators: dict, datasets: dict, protocol: protocols_mod.Resolved, invalid: set,
    problems: list[str],
) -> tuple[dict, dict]:
    """Build every (generator variant, dataset) pair's generator once.

    The variant's overrides win over the dataset's ``search:`` block, which wins over
    the protocol's overrides for the preset. A problem of the variant alone is reported
    once, under the variant; one that only the merge causes (a typo in a ``search:``
    block, a key that does not apply to that generator) names the dataset too.

    Returns:
        ({(g, d): Generator.to_dict()}, {(g, d): needs_vae}).
    """
    configs, latent = {}, {}
    for g in grid.get("generator", ()):
        if g in invalid:
            continue
        variant = generators.get(g, {"preset": g})
        own = protocols_mod.deep_merge(
            protocol.generator_overrides(variant["preset"]), {k: v for k, v in variant.items() if k != "preset"}
        )
        try:
            gen_mod.create(variant["preset"], **own)
        except _USER_ERRORS as exc:
            problems.append(f"Generator '{g}': {_failure(variant['preset'], exc)}")
            continue
        for d in grid.get("dataset", ()):
            search = datasets.get(d, {}).get("search", {})
            try:
                gen = gen_mod.create(variant["preset"], **protocols_mod.deep_merge(search, own))
            except _USER_ERRORS as exc:
                problems.append(f"Dataset '{d}': its 'search' block with generator '{g}': {_failure(variant['preset'], exc)}")
                continue
            config = gen.to_dict()
            if gen_mod.Generator.from_dict(config) != gen:
                problems.append(
                    f"Generator '{g}': its description does not rebuild it (a component whose to_dict/from_dict "
                    "do not round-trip); see docs/guide.md, 'A new step rule, space or convergence rule'."
                )
                continue
            configs[(g, d)] = config
            latent[(g, d)] = bool(gen.needs_vae)
    return configs, latent


def parse(raw: Any, *, source: str = "<string>", base_dir: str | Path = ".", check_data: bool = True) -> SweepSpec:
    """Validate a parsed YAML document and build a ``SweepSpec``.

    Raises:
        SpecError: listing every problem found.
    """
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise SpecError(source, [f"The sweep file must be a YAML mapping. Got {_type_name(raw)} instead."])
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"Unknown top-level key {short_repr(key)}.{suggest(str(key), TOP_KEYS)} Valid keys: {', '.join(TOP_KEYS)}.")
    _check_int_range(raw, "", problems)
    scalars = _scalars(raw, problems)
    protocol = protocols_mod.resolve(raw.get("protocol"), problems)
    simulation = _settings(SimulationSettings, _over(protocol.simulation, raw.get("simulation")), "simulation", problems)
    setup = _settings(SetupSettings, _over(protocol.setup, raw.get("setup")), "setup", problems)
    metrics = _settings(metrics_mod.MetricSettings, _over(protocol.metrics, raw.get("metrics")), "metrics", problems)

    invalid: set = set()
    generators = _variants(raw.get("generators"), "generators", gen_mod.names(), "generator", problems, invalid)
    models = _variants(raw.get("models"), "models", models_mod.names(), "model", problems, invalid)
    datasets = _variants(raw.get("datasets"), "datasets", data_mod.names(), "dataset", problems, invalid)
    datasets = {n: _check_dataset(n, b, Path(base_dir), problems) for n, b in datasets.items()}
    for n, b in models.items():
        _check_model(n, b, protocol, problems)
    known = {
        "dataset": (data_mod.names(), datasets),
        "model": (models_mod.names(), models),
        "generator": (gen_mod.names(), generators),
    }
    grid = _grid(raw.get("grid"), known, invalid, problems)
    _check_bounds({"simulation": simulation, "setup": setup, "metrics": metrics}, problems)
    n_systems = math.prod(len(grid.get(axis, ())) for axis in GRID_AXES) * len(scalars["seeds"])
    if n_systems > MAX_SYSTEMS:
        problems.append(f"The grid expands to {n_systems} systems, more than the limit of {MAX_SYSTEMS}; "
                        "split the sweep into several files.")
        grid = {}
    configs, latent = _resolve_generators(grid, generators, datasets, protocol, invalid, problems)

    if check_data and not problems:
        for d in grid.get("dataset", ()):
            _load_dataset_probe(d, datasets.get(d, {"preset": d}), setup, problems)
    if problems:
        raise SpecError(source, problems)
    return SweepSpec(
        **scalars,
        grid=grid,
        simulation=simulation,
        setup=setup,
        metrics=metrics,
        generators=generators,
        models=models,
        datasets=datasets,
        source=source,
        protocol=protocol,
        generator_configs=configs,
        latent=latent,
    )


def _check_int_range(obj: Any, where: str, problems: list[str]) -> None:
    """Every integer of the document fits a 64-bit int (what JSON readers, parquet and Arrow hold)."""
    if is_int(obj) and not INT64_MIN <= obj <= INT64_MAX:
        problems.append(f"The value {short_repr(obj)} at '{where or '.'}' is outside the 64-bit integer range "
                        "[-2**63, 2**63 - 1].")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_int_range(v, f"{where}.{k}" if where else str(k), problems)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_int_range(v, f"{where}[{i}]", problems)


def _check_bounds(sections: dict[str, Any], problems: list[str]) -> None:
    """Upper bounds of integer settings (the settings check their lower bounds themselves)."""
    for section, obj in sections.items():
        if obj is None:
            continue
        for name, value in settings_dict(obj).items():
            high = MAX_ROUNDS if (section, name) == ("simulation", "rounds") else MAX_SETTING_INT
            if is_int(value) and value > high:
                problems.append(f"In '{section}': The '{name}' parameter of {section} must be an int at most {high}. "
                                f"Got {short_repr(value)} instead.")


def _document_problem(text: str) -> str | None:
    """What makes a sweep file's text unsafe to build, before it is built: size, NUL bytes, nesting."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        return f"The sweep file is larger than {MAX_SPEC_BYTES // 1024} KiB; a sweep file is a page of settings."
    if "\x00" in text:
        return "The sweep file contains NUL bytes (is it a binary file?)."
    depth = deepest = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                deepest = max(deepest, depth)
                if deepest > MAX_DEPTH:
                    return f"The sweep file nests mappings or lists more than {MAX_DEPTH} levels deep."
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return None  # reported with its position by the loader
    return None


def _expanded_size(root) -> int | None:
    """Nodes of a composed YAML document once aliases are expanded; None for a recursive alias.

    Computed over the node graph (a shared node counted once per use), so a document of
    aliases of aliases (a "billion laughs") is measured without being expanded.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            active.discard(nid)
            sizes[nid] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        if nid in sizes:
            continue
        if nid in active:
            return None
        active.add(nid)
        stack.append((node, True))
        for c in children:
            if id(c) in active:
                return None
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes[id(root)]


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that records duplicate mapping keys (PyYAML keeps the last silently)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    self.duplicates.append(f"Duplicate key {key!r} at line {key_node.start_mark.line + 1}: each name may appear once.")
                seen.add(key)
            except TypeError:  # unhashable key: PyYAML reports it itself
                pass
        return super().construct_mapping(node, deep=deep)


def loads(text: str, *, source: str = "<string>", base_dir: str | Path = ".", check_data: bool = True) -> SweepSpec:
    """Parse sweep-file text."""
    problem = _document_problem(text)
    if problem:
        raise SpecError(source, [problem])
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raw = None
        else:
            size = _expanded_size(node)
            if size is None or size > MAX_NODES:
                what = "a recursive alias" if size is None else f"more than {MAX_NODES} values once its aliases are expanded"
                raise SpecError(source, [f"The sweep file holds {what} (a YAML alias bomb?); write the values out."])
            raw = loader.construct_document(node)
    except RecursionError:
        raise SpecError(source, [f"The sweep file nests mappings or lists more than {MAX_DEPTH} levels deep."]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [f"YAML syntax error{where}: {problem}."]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise SpecError(source, loader.duplicates)
    return parse(raw, source=source, base_dir=base_dir, check_data=check_data)


def load(path: str | Path, *, check_data: bool = True) -> SweepSpec:
    """Read and validate a sweep file.

    Raises:
        SpecError: listing every problem (including a missing or unreadable file).
    """
    path = Path(path)
    try:
        info = path.stat()  # stat, not open: opening a FIFO would wait for a writer
    except FileNotFoundError:
        raise SpecError(str(path), [f"The sweep file {str(path)!r} does not exist."]) from None
    except OSError as exc:
        raise SpecError(str(path), [f"The sweep file {str(path)!r} cannot be read: {exc.strerror or exc}."]) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(str(path), [f"The sweep file {str(path)!r} is a directory, not a file."])
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(str(path), [f"The sweep file {str(path)!r} is not a regular file (a device, FIFO or socket)."])
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(str(path), [f"The sweep file {str(path)!r} is larger than {MAX_SPEC_BYTES // 1024} KiB; "
                                    "a sweep file is a page of settings."])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"The sweep file {str(path)!r} is not UTF-8 text (byte {exc.start})."]) from None
    except OSError as exc:
        raise SpecError(str(path), [f"The sweep file {str(path)!r} cannot be read: {exc.strerror or exc}."]) from None
    return loads(text, source=str(path), base_dir=path.parent, check_data=check_data)
