"""``python -m reports FILE... [--out DIR]``: rebuild the leaderboard from result files.

Accepts the merged ``results/results.jsonl`` of a run, the per-worker shards under
``results/out/<run>/``, or the files of several split runs; nothing is recomputed.

``python -m reports --compare OLD NEW [--fail-on-regression]``: what changed between two runs
(each a ``results.jsonl``, a run folder, or a key under ``results/history``; see
:mod:`reports.history`). Exit status 0, or 1 with ``--fail-on-regression`` when a measure got
significantly worse, or 2 when the runs cannot be compared.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import reports


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Rebuild leaderboard.md, results.csv and plots from benchmark result files "
        "(JSON lines written by `pytest benchmarks`). Shards of a split run are merged.",
    )
    parser.add_argument("files", nargs="*", type=pathlib.Path, help="result files (.jsonl)")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                        help="compare two runs (results.jsonl files, run folders, or keys under "
                        "--history) instead of writing a leaderboard")
    parser.add_argument("--history", type=pathlib.Path,
                        default=pathlib.Path(reports.DEFAULT_OUTPUT_DIR) / "history",
                        help="where run keys are looked up (default: ./results/history)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="with --compare: exit 1 when a measure got significantly worse")
    parser.add_argument("--allow-different", action="store_true",
                        help="with --compare: compare runs of different benchmark definitions "
                        "on what they share (refused by default)")
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(reports.DEFAULT_OUTPUT_DIR),
                        help=f"output directory (default: ./{reports.DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--merged", type=pathlib.Path, default=None,
                        help="also write the merged records to this JSON-lines file")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="merge files of different runs (mode, threshold grid, record format); "
                        "refused by default")
    args = parser.parse_args(argv)
    if args.compare:
        if args.files:
            parser.error("--compare takes two runs and no result files")
        return _compare(args)
    if not args.files:
        parser.error("give result files to rebuild a leaderboard from, or --compare OLD NEW")
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"result file not found: {', '.join(missing)}")
    try:
        records = reports.read_records(args.files, allow_mixed=args.allow_mixed)
    except ValueError as error:  # MixedRunsError, undecodable file: the message names the file
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in reports.skipped_lines(records):
        print(f"skipped {line}", file=sys.stderr)
    if not any(r["kind"] in reports.RESULT_KINDS for r in records):
        print(f"no benchmark case in {len(args.files)} file(s); nothing written", file=sys.stderr)
        return 1
    if args.merged is not None:
        reports.write_records(args.merged, records)
    paths = reports.write_reports(records, args.out, plots=not args.no_plots)
    print(f"leaderboard: {paths['leaderboard']}")
    print(f"results:     {paths['results']}")
    for path in paths["plots"]:
        print(f"plot:        {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from reports import history

    try:
        old, new = (history.resolve_run(spec, history=args.history) for spec in args.compare)
        comparison = history.compare(history.read_run(old), history.read_run(new),
                                     allow_different=args.allow_different)
    except (OSError, ValueError) as error:  # not found, unreadable, different definitions
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(history.comparison_text(comparison, old=str(old), new=str(new)))
    return 1 if args.fail_on_regression and comparison.regressions else 0


if __name__ == "__main__":
    sys.exit(main())
