"""Compare two result folders of the same run, byte for byte, with the timings masked.

Issue 18's check that a refactoring changed no output: formats.json (without ``timings``),
report.md (without its "N s in total" figure), formats.csv and search_log.jsonl (without each
evaluation's ``seconds``) must be identical. Prints one line per file; exit 1 when any differs.

    python scripts/compare_result_folders.py BEFORE AFTER
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

FILES = ("formats.json", "report.md", "formats.csv", "search_log.jsonl")


def masked(name: str, text: str) -> str:
    """``text`` with the fields that measure time replaced by a fixed mark."""
    if name == "formats.json":
        data = json.loads(text)
        data["timings"] = "<timings>"
        return json.dumps(data, indent=2) + "\n"
    if name == "report.md":
        return re.sub(r"evaluations, [0-9.]+ s in total", "evaluations, <seconds> s in total", text)
    if name == "search_log.jsonl":
        return re.sub(r'"seconds": [0-9.e-]+', '"seconds": 0', text)
    return text


def differences(before: Path, after: Path) -> dict[str, list[str]]:
    """Per file, the unified diff of the masked texts (empty: identical)."""
    out = {}
    for name in FILES:
        a, b = (masked(name, (folder / name).read_text()) for folder in (before, after))
        out[name] = list(difflib.unified_diff(a.splitlines(), b.splitlines(), "before", "after", lineterm=""))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    found = differences(args.before, args.after)
    for name, diff in found.items():
        print(f"{name}: {'identical' if not diff else f'{len(diff)} diff lines'}")
        for line in diff[:20]:
            print("  " + line)
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
