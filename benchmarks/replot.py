"""Redraw a benchmark's plots from its results.json with the current plotting code (no score is recomputed: the
figures read the file's numbers only).

    python benchmarks/replot.py benchmarks/results                       # every plot results.json lists
    python benchmarks/replot.py benchmarks/results accuracy_vs_storage.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from samcl.bench.plots import save_figure
from samcl.bench.render import accuracy_vs_storage, write_plots


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a benchmark's output folder (results.json and its plots)")
    parser.add_argument("only", nargs="?", choices=["accuracy_vs_storage.png"], help="redraw this plot alone")
    args = parser.parse_args(argv)
    try:
        report = json.loads((args.folder / "results.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"replot.py: {args.folder / 'results.json'}: not readable ({exc})", file=sys.stderr)
        return 2
    if args.only:
        fig, _ = accuracy_vs_storage(report)
        written = [save_figure(fig, args.folder, args.only)]
    else:
        written = write_plots(args.folder, report)
    print(f"redrew {', '.join(written)} in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
