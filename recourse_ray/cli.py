"""The ``recourse-ray`` command line: run | resume | status | report | compare | validate | datasets | generators | models.

Exit codes: 0 everything done, 1 some systems failed, 2 bad input (nothing was run and
nothing on disk was changed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is 2 as well; keep the message short
        self.print_usage(sys.stderr)
        print(f"recourse-ray: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _bad_input(message: str) -> int:
    print(f"recourse-ray: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray address: omit for an embedded local Ray; 'auto' or 'ray://host:port' to join a cluster")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    p.add_argument("--store-states", action="store_true", help="also store each system's final data, weights and (2-D) probability surfaces")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress on stderr (default: a live line on a terminal, a status line every 30 s "
                        "elsewhere, e.g. in `ray job logs --follow`); --no-progress: none")
    p.add_argument("--max-in-flight", type=int, default=None, help="system tasks submitted at once (default: 2 x cluster CPUs)")
    p.add_argument("--retry-failed", action="store_true", help="also rerun systems recorded as failed")
    p.add_argument("--force", action="store_true", help="accept a results directory recorded with a different sweep spec")
    p.add_argument("--py-modules", nargs="*", default=None, help="local packages/modules shipped to cluster workers (Ray runtime_env py_modules)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recourse-ray", description="Simulate the dynamics of algorithmic recourse as Ray sweeps.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a sweep file")
    p.add_argument("sweep", help="sweep file (YAML)")
    p.add_argument("--results", default="results", help="results root; the sweep writes to RESULTS/<sweep name> (default: results)")
    _add_run_options(p)

    p = sub.add_parser("resume", help="run what is missing in a results directory")
    p.add_argument("results_dir", help="a sweep's results directory (RESULTS/<sweep name>)")
    p.add_argument("--sweep", default=None, help="sweep file to resume with (default: the spec recorded in the directory)")
    _add_run_options(p)

    p = sub.add_parser("status", help="done / failed / missing systems of a results directory")
    p.add_argument("results_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("report", help="aggregate report (HTML, Markdown, figures, tables) of a results directory")
    p.add_argument("results_dir")
    p.add_argument("-o", "--out", default=None, help="output folder (default: reports/<sweep name>)")
    p.add_argument("--reference", default=None, metavar="CSV",
                   help="output file of the reference implementation: adds the section 'Against the reference implementation'")
    p.add_argument("--mapping", default=None, metavar="FILE", help="with --reference: reference names -> ours (YAML/JSON)")

    p = sub.add_parser("compare", help="compare a results directory with the reference implementation's output file")
    p.add_argument("results_dir", help="a sweep's results directory (RESULTS/<sweep name>)")
    p.add_argument("--reference", required=True, metavar="CSV", help="the reference implementation's output file")
    p.add_argument("--mapping", default=None, metavar="FILE", help="reference names -> ours (YAML/JSON; see docs/compare.md)")
    p.add_argument("--map-model", action="append", default=[], metavar="REF=OURS", help="map a reference model (repeatable; REF= leaves it out)")
    p.add_argument("--map-generator", action="append", default=[], metavar="REF=OURS", help="map a reference generator, e.g. Generic=generic_ref")
    p.add_argument("--map-metric", action="append", default=[], metavar="REF=OURS", help="map a reference metric, e.g. mmd/domain=domain_mmd")
    p.add_argument("--dataset", default=None, help="our dataset the reference ran on (default: the only one, or the file's name)")
    rounds = p.add_mutually_exclusive_group()
    rounds.add_argument("--round", type=int, default=None, help="compare this round (default: the final round both have)")
    rounds.add_argument("--all-rounds", action="store_true", help="compare every round both have")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="our metrics of the agreement rate (default: domain_mmd model_mmd model_mmd_grid disagreement)")
    p.add_argument("--ratio", type=float, default=1.5, help="a cell agrees when ours/reference is within x RATIO (default: 1.5)")
    p.add_argument("--abs", type=float, default=0.01, dest="abs_tolerance", metavar="ABS",
                   help="... or the means differ by at most ABS (default: 0.01)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: reports/<sweep name>/comparison)")

    p = sub.add_parser("validate", help="check a sweep file and print its grid")
    p.add_argument("sweep")
    p.add_argument("--py-modules", nargs="*", default=None, help="local packages/modules the sweep file names (as for run)")
    p.add_argument("--systems", action="store_true", help="list every system with its key")

    p = sub.add_parser("datasets", help="list, describe, fetch or import datasets (see docs/data.md)")
    p.add_argument("action", nargs="?", default="list", choices=["list", "info", "fetch", "import"],
                   help="list (default) | info NAME | fetch NAME (or 'study': the four published synthetic sets) | import NAME PATH")
    p.add_argument("name", nargs="?", help="a dataset name")
    p.add_argument("path", nargs="?", help="import: the local file (our CSV or the raw download)")
    p.add_argument("--force", action="store_true", help="fetch/import: accept a checksum mismatch (the file must still load) and replace a different existing file (kept as .bak)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $RECOURSE_RAY_DATA or ~/.cache/recourse_ray/data)")
    p.add_argument("--timeout", type=float, default=None, help="fetch: seconds to wait for the server (default: 20)")
    sub.add_parser("generators", help="list generators and their defaults")
    sub.add_parser("models", help="list classifiers and their defaults")
    p = sub.add_parser("protocols", help="list the named protocols and their mechanisms (docs/reference_mode.md)")
    p.add_argument("name", nargs="?", default=None, help="one protocol (default: all)")
    return parser


def _user_code(args) -> dict | None:
    """Make user components importable here, and shipped to the workers (Ray ``py_modules``).

    Only what ``--py-modules`` names becomes importable: each entry's parent folder goes
    at the *end* of ``sys.path``, after the package and its dependencies (Ray, pyarrow,
    torch, ...) are imported, so a ``ray.py`` lying next to the user's module can shadow
    nothing. The working directory is never added: a stray ``pyarrow.py`` there must not
    run. (``examples.sparsity_term:L1Sparsity`` resolves with ``--py-modules examples``.)
    """
    modules = getattr(args, "py_modules", None)
    if not modules:
        return None
    missing = [m for m in modules if not Path(m).exists()]
    if missing:
        raise FileNotFoundError(f"--py-modules: {', '.join(missing)} not found")
    import pyarrow  # noqa: F401 - the package's own imports come first (see above)
    import ray  # noqa: F401

    import recourse_ray.spec  # noqa: F401
    import recourse_ray.sweep  # noqa: F401

    paths = [Path(m).resolve() for m in modules]
    for p in paths:
        if str(p.parent) not in sys.path:
            sys.path.append(str(p.parent))
    return {"py_modules": [str(p) for p in paths]}


# run/resume options passed to run_sweep under the same name
_SWEEP_OPTIONS = ("address", "num_cpus", "retry_failed", "force", "store_states", "max_in_flight", "runtime_env")


def _run_option_problem(args) -> str | None:
    """The first problem of the run/resume options, None when there is none."""
    from recourse_ray._config import check_int

    owner = f"recourse-ray {args.command}"
    problems = [check_int(value, f"--{name.replace('_', '-')}", owner, low=1)
                for name in ("num_cpus", "max_in_flight") if (value := getattr(args, name)) is not None]
    return next((p for p in problems if p), None)


def _run(sweep, results_dir: str, args) -> int:
    from recourse_ray.spec import SpecError
    from recourse_ray.store import LockHeld, NotAResultsDirectory, StorageError
    from recourse_ray.sweep import ClusterError, SpecChanged, run_sweep

    problem = _run_option_problem(args)
    if problem:
        return _bad_input(problem)
    options = {name: getattr(args, name) for name in _SWEEP_OPTIONS}
    try:
        outcome = run_sweep(sweep, results_dir, progress=args.progress, **options)
    except (SpecChanged, NotAResultsDirectory, LockHeld, SpecError) as exc:
        return _bad_input(str(exc))
    except ClusterError as exc:  # before anything was written; an OSError, so first
        return _bad_input(str(exc))
    except StorageError as exc:  # unreachable storage before anything was written
        return _bad_input(f"cannot use the results directory {results_dir!r}: {exc}")
    except OSError as exc:  # the results root cannot even be created
        print(f"recourse-ray: error: cannot write to the results directory: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{outcome.results_dir}: {len(outcome.done)} systems run, {outcome.skipped} already done, "
        f"{len(outcome.failed)} failed, of {outcome.total} ({outcome.seconds:.1f} s)"
        + (" -- interrupted" if outcome.interrupted else "")
    )
    for key, first in outcome.failed.items():
        print(f"  failed {key}: {first}")
    if outcome.storage_error:
        print(f"recourse-ray: error: {outcome.storage_error}. Committed systems are intact; "
              "fix the problem and run `recourse-ray resume`.", file=sys.stderr)
    return outcome.exit_code


def _load_spec(path: str):
    from recourse_ray import spec as spec_mod

    return spec_mod.load(path)


def cmd_run(args) -> int:
    from recourse_ray.spec import SpecError
    from recourse_ray.store import ResultsStore

    try:
        args.runtime_env = _user_code(args)
    except FileNotFoundError as exc:
        return _bad_input(str(exc))
    from recourse_ray.store import NotAResultsDirectory

    try:
        sweep = _load_spec(args.sweep)
        results_dir = ResultsStore.for_sweep(args.results, sweep.name).uri
    except (SpecError, NotAResultsDirectory) as exc:
        return _bad_input(str(exc))
    return _run(sweep, results_dir, args)


def cmd_resume(args) -> int:
    from recourse_ray import spec as spec_mod
    from recourse_ray.store import NotAResultsDirectory, ResultsStore, StorageError

    try:
        args.runtime_env = _user_code(args)
    except FileNotFoundError as exc:
        return _bad_input(str(exc))
    try:
        store = ResultsStore(args.results_dir)
        store.check()
        text = store.read_spec()
    except (NotAResultsDirectory, StorageError) as exc:
        return _bad_input(str(exc))
    except UnicodeDecodeError:
        return _bad_input(f"the recorded spec {store.spec_uri!r} is not UTF-8 text.")
    try:
        if args.sweep:
            sweep = spec_mod.load(args.sweep)
        else:
            sweep = spec_mod.loads(text, source=store.spec_uri)
    except spec_mod.SpecError as exc:
        return _bad_input(str(exc))
    return _run(sweep, args.results_dir, args)


def status_summary(results_dir: str) -> dict:
    """Done / failed / missing systems of a results directory (used by ``status``)."""
    from recourse_ray import spec as spec_mod
    from recourse_ray.store import ResultsStore

    store = ResultsStore(results_dir)
    store.check()
    sweep = spec_mod.loads(store.read_spec(), source=store.spec_uri, check_data=False)
    systems = sweep.systems()
    good, corrupt = store.verified()
    done, failures = set(good), store.failures()
    expected = {s.key: s for s in systems}
    missing = [s.label for k, s in expected.items() if k not in done and k not in failures]
    return {
        "sweep": sweep.name,
        "results_dir": store.uri,
        "total": len(systems),
        "done": len(done & expected.keys()),
        "failed": len(set(failures) & expected.keys()),
        "missing": len(missing),
        "missing_systems": missing,
        "corrupt": [{"system": expected[k].label if k in expected else k, "key": k, "problem": why}
                    for k, why in sorted(corrupt.items())],
        "failures": [
            {"system": expected[k].label if k in expected else k, "key": k, "error": f.get("error", "")}
            for k, f in failures.items()
        ],
    }


def cmd_status(args) -> int:
    from recourse_ray.spec import SpecError
    from recourse_ray.store import NotAResultsDirectory, StorageError

    try:
        summary = status_summary(args.results_dir)
    except (NotAResultsDirectory, SpecError, StorageError) as exc:
        return _bad_input(str(exc))
    except UnicodeDecodeError:
        return _bad_input(f"the recorded spec in {args.results_dir!r} is not UTF-8 text.")
    if args.json:
        print(json.dumps(summary, indent=1))
        return EXIT_OK
    print(f"sweep {summary['sweep']} at {summary['results_dir']}")
    print(f"  {summary['done']} done, {summary['failed']} failed, {summary['missing']} missing, of {summary['total']}")
    for c in summary["corrupt"]:
        print(f"  CORRUPT {c['system']} [{c['key']}]: {c['problem']}; counted as missing, `resume` reruns it")
    for f in summary["failures"]:
        print(f"  FAILED {f['system']} [{f['key']}]: {f['error']}")
    for label in summary["missing_systems"][:20]:
        print(f"  missing {label}")
    if summary["missing"] > 20:
        print(f"  ... and {summary['missing'] - 20} more missing")
    return EXIT_OK


def _report_out_problem(out: Path, store) -> str | None:
    """Why the report cannot be written to ``out`` (checked before anything is drawn), or None."""
    if store.local and _inside(out, store.path):
        return f"-o {out} lies inside the results directory {store.uri}; the report is never written there."
    if out.exists() and not out.is_dir():
        return f"-o {out} exists and is not a folder."
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the report folder -o {out}: {exc.strerror or exc}."
    if not os.access(out, os.W_OK | os.X_OK):
        return f"the report folder -o {out} is not writable."
    return None


def cmd_report(args) -> int:
    from recourse_ray.store import NotAResultsDirectory, ResultsStore, StorageError

    try:
        store = ResultsStore(args.results_dir)
        store.check()
    except (NotAResultsDirectory, StorageError) as exc:
        return _bad_input(str(exc))
    if args.mapping and not args.reference:
        return _bad_input("--mapping needs --reference (the reference implementation's output file).")
    from recourse_ray.compare import ComparisonError
    from recourse_ray.report import build_report

    out = args.out or str(Path("reports") / store.sweep_name)
    existed = Path(out).exists()
    problem = _report_out_problem(Path(out), store)
    if problem:
        return _bad_input(problem)
    try:
        path = build_report(args.results_dir, out, reference=args.reference, mapping=args.mapping)
    except ComparisonError as exc:
        if not existed and Path(out).is_dir() and not any(Path(out).iterdir()):
            Path(out).rmdir()  # bad input leaves nothing behind, not even the folder it made
        return _bad_input(str(exc))
    except OSError as exc:
        print(f"recourse-ray: error: cannot write the report to {out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report written to {path}")
    return EXIT_OK


def _inside(path: Path, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    return path.resolve().is_relative_to(Path(folder).resolve())


def cmd_compare(args) -> int:
    from recourse_ray import compare as cmp
    from recourse_ray._config import check_int, check_real
    from recourse_ray.store import NotAResultsDirectory, ResultsStore

    store = ResultsStore(args.results_dir)
    try:
        store.check()
    except NotAResultsDirectory as exc:
        return _bad_input(str(exc))
    owner = "recourse-ray compare"
    problem = (check_real(args.ratio, "--ratio", owner, low=1, low_open=True, kind="a number")
               or check_real(args.abs_tolerance, "--abs", owner, low=0, kind="a number")
               or (check_int(args.round, "--round", owner, low=0) if args.round is not None else None))
    if problem:
        return _bad_input(problem)
    out = Path(args.out) if args.out else Path("reports") / store.sweep_name / "comparison"
    if store.local and _inside(out, store.path):
        return _bad_input(f"-o {out} lies inside the results directory {store.uri}; the comparison is never written there.")
    try:
        mapping = cmp.load_mapping(args.mapping) if args.mapping else cmp.ReferenceMapping()
        mapping = mapping.override(models=cmp.parse_assignments(args.map_model, "--map-model", owner),
                                   generators=cmp.parse_assignments(args.map_generator, "--map-generator", owner),
                                   metrics=cmp.parse_assignments(args.map_metric, "--map-metric", owner))
        reference = cmp.read_reference(args.reference, mapping)
        rounds = "all" if args.all_rounds else ("final" if args.round is None else args.round)
        comparison = cmp.compare(store, reference, mapping, rounds=rounds, dataset=args.dataset, metrics=args.metrics,
                                 ratio=args.ratio, abs_tolerance=args.abs_tolerance, reference_source=args.reference)
    except cmp.ComparisonError as exc:
        return _bad_input(str(exc))
    print(cmp.format_comparison(comparison))
    try:
        paths = cmp.write_comparison(comparison, out, title=f"{store.sweep_name}: comparison with the reference implementation")
    except OSError as exc:
        print(f"recourse-ray: error: cannot write the comparison to {out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"comparison written to {', '.join(str(p) for p in paths)}")
    return EXIT_OK


def cmd_validate(args) -> int:
    from recourse_ray.spec import SpecError

    try:
        _user_code(args)
    except FileNotFoundError as exc:
        return _bad_input(str(exc))
    try:
        sweep = _load_spec(args.sweep)
    except SpecError as exc:
        return _bad_input(str(exc))
    systems = sweep.systems()
    g = sweep.grid
    print(
        f"{args.sweep}: valid. {len(systems)} systems = {len(g['dataset'])} datasets x {len(g['model'])} models x "
        f"{len(g['generator'])} generators x {len(sweep.seeds)} seeds"
    )
    print(sweep.to_yaml())
    if args.systems:
        for s in systems:
            print(f"{s.key}  {s.label}")
    return EXIT_OK


def _show_dataset(item) -> None:
    """Print a ``sources.DatasetInfo`` (``datasets info``)."""
    if item.class_counts is not None:
        n0, n1 = item.class_counts
        if item.kind == "file":
            half = min(item.class_counts)
            print(f"{item.name}: {item.balanced_rows} rows, {item.n_features} features, classes 0/1 = {half}/{half}")
            print(f"before balancing: {item.rows} rows, classes 0/1 = {n0}/{n1} ({item.rows_in_file} rows in the file)")
        else:
            print(f"{item.name}: {item.rows} rows, {item.n_features} features, classes 0/1 = {n0}/{n1}")
    else:
        print(f"{item.name}: {'file not present' if not item.present else 'file does not load'}")
    if item.description:
        print(f"about: {item.description}")
    print(f"source: {item.source}")
    if item.kind == "file":
        status = {
            "ok": "present, checksum ok",
            "mismatch": f"present, checksum MISMATCH: SHA-256 {item.sha256}, expected {item.expected_sha256}",
            "absent": "absent",
        }[item.checksum]
        print(f"file: {item.path} ({status})")
    if item.feature_names:
        print("features: " + ", ".join(item.feature_names))


def _datasets_usage_problem(args) -> str | None:
    """What is wrong with the arguments of ``datasets ACTION``, None when nothing is."""
    from recourse_ray._config import check_real

    takes = {"list": 0, "info": 1, "fetch": 1, "import": 2}[args.action]
    given = [a for a in (args.name, args.path) if a is not None]
    if len(given) < takes:
        usage = {"info": "info NAME", "fetch": "fetch NAME", "import": "import NAME PATH"}[args.action]
        return f"datasets {args.action} needs {'a dataset NAME' if not given else 'a PATH to import'}: recourse-ray datasets {usage}."
    if len(given) > takes:
        return f"datasets {args.action} takes {takes} argument(s). Got {len(given)}: {' '.join(given)}."
    if args.timeout is not None:
        return check_real(args.timeout, "--timeout", "recourse-ray datasets", low=0, low_open=True, kind="a number")
    return None


def _dataset_info(args) -> int:
    from recourse_ray.data import sources

    item = sources.info(args.name, data_dir=args.data_dir)
    _show_dataset(item)
    if not item.present:
        return _bad_input(
            f"{item.path} not found. Get it with `recourse-ray datasets fetch {item.name}` "
            f"(or `recourse-ray datasets import {item.name} PATH`); see docs/data.md."
        )
    if item.error:
        return _bad_input(item.error)
    return EXIT_OK


def _dataset_file(args) -> int:
    """``datasets fetch`` / ``datasets import``: put the file in the data directory."""
    from recourse_ray.data import sources

    if args.action == "fetch":
        timeout = sources.DEFAULT_TIMEOUT if args.timeout is None else args.timeout
        # A group name (``study``) fetches each member in turn; the first failure stops it.
        for name in sources.GROUPS.get(args.name, (args.name,)):
            done = sources.fetch(name, data_dir=args.data_dir, force=args.force, timeout=timeout)
            print(done.summary())
    else:
        done = sources.import_file(args.name, args.path, data_dir=args.data_dir, force=args.force)
        print(done.summary())
    return EXIT_OK


def cmd_datasets(args) -> int:
    from recourse_ray import data
    from recourse_ray.data import sources

    problem = _datasets_usage_problem(args)
    if problem:
        return _bad_input(problem)
    if args.action == "list":
        for name in data.names():
            print(name)
        return EXIT_OK
    try:
        return _dataset_info(args) if args.action == "info" else _dataset_file(args)
    except sources.DownloadError as exc:
        print(f"recourse-ray: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyError, ValueError) as exc:
        return _bad_input(exc.args[0] if exc.args else str(exc))
    except OSError as exc:  # the data directory cannot be written
        print(f"recourse-ray: error: cannot write to the data directory: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_generators(args) -> int:
    from recourse_ray import generators

    for name in generators.names():
        print(f"{name}: {json.dumps(generators.create(name).to_dict(), default=str)}")
    return EXIT_OK


def cmd_protocols(args) -> int:
    from recourse_ray import protocols

    names = protocols.protocol_names()
    if args.name is not None and args.name not in names:
        print(f"recourse-ray: error: unknown protocol {args.name!r}. Valid protocols: {', '.join(names)}.",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    for name in [args.name] if args.name else names:
        rows = protocols.describe(name)
        print(f"{name}: {len(rows)} mechanism(s)" + ("" if rows else " (this project's semantics)"))
        for row in rows:
            print(f"  {row['mechanism']}{' [bug]' if row['bug'] else ''}: {row['summary']}")
    return EXIT_OK


def cmd_models(args) -> int:
    from recourse_ray import models

    for name in models.names():
        print(f"{name}: {json.dumps(models.defaults(name))}")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "status": cmd_status,
    "report": cmd_report,
    "compare": cmd_compare,
    "validate": cmd_validate,
    "datasets": cmd_datasets,
    "generators": cmd_generators,
    "protocols": cmd_protocols,
    "models": cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else (logging.INFO if args.verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("recourse-ray: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
