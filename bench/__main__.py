"""`make bench`: run every benchmark module in bench/ (or those named on the command line).

Each module has `main(argv) -> None` and prints its figures beside its baseline."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    names = sys.argv[1:] or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "common"
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== bench/{name}.py ===", flush=True)
        module.main([])


if __name__ == "__main__":
    main()
