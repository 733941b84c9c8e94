"""``python -m reports FILE... [--out DIR]``: rebuild the leaderboard from result files.

Accepts the merged ``results/results.jsonl`` of a run, the per-worker shards under
``results/out/<run>/``, or the files of several split runs; nothing is recomputed.
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
    parser.add_argument("files", nargs="+", type=pathlib.Path, help="result files (.jsonl)")
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


if __name__ == "__main__":
    sys.exit(main())
