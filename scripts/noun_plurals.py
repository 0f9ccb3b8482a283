"""Write dreamtext/data/noun_plurals.txt: inflect's plural of every noun of the shipped nouns.txt.

    python scripts/noun_plurals.py            # rewrite the table after editing nouns.txt
    python scripts/noun_plurals.py --check    # exit 1 if the table is not what inflect gives

The sentence search tries each noun singular and plural. Importing inflect costs ~4 s of CPU
(typeguard instruments it as it loads), so ``dreamtext.describe.plural`` reads the default nouns'
plurals from this table and imports inflect only for nouns of a user's own list that it lacks.
tests/test_describe.py checks that the table is what this script writes.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from dreamtext.describe import PLURALS_FILE, inflect_plural, read_vocabulary

HEADER = (
    "# The plural of each noun of nouns.txt, as inflect gives it: noun<TAB>plural, one a line.\n"
    "# Written by scripts/noun_plurals.py; run it again after editing nouns.txt.\n"
)


def table_text() -> str:
    """The table's text for the nouns.txt shipped now."""
    nouns = read_vocabulary(None, "nouns.txt")
    return HEADER + "".join(f"{noun}\t{inflect_plural(noun)}\n" for noun in nouns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    path = Path(str(resources.files("dreamtext").joinpath("data", PLURALS_FILE)))
    text = table_text()
    if args.check:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
        print(f"{path}: {'up to date' if same else 'differs from inflect; run without --check'}")
        return 0 if same else 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({text.count(chr(10)) - HEADER.count(chr(10))} nouns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
