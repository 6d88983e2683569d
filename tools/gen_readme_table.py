"""Rewrites README.md's experiment table from the experiment registry.

    python tools/gen_readme_table.py            # rewrite the table in README.md
    python tools/gen_readme_table.py --check    # exit 1 if it is out of date

The table is generated (like BUILD), so adding an experiment module under configs/ is the
one file a contributor edits; this refreshes the README, and a test keeps the two equal.
"""

import argparse
import os
import sys

from tf_sgd_regimes import experiments

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


def render(text: str) -> str:
    """`text` with the experiment table (header line to the last '|' line) regenerated."""
    table = experiments.markdown_table()
    header = table.split("\n", 1)[0]
    lines = text.split("\n")
    if header not in lines:
        raise SystemExit(f"{README} has no experiment table (a line {header!r}); add one "
                         "under '## Experiments' and run this again")
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[:start] + table.split("\n") + lines[end:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with open(README) as f:
        text = f.read()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md's experiment table is stale; run: python tools/gen_readme_table.py")
            return 1
        return 0
    if new != text:
        with open(README, "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
