"""`make bench`: run every benchmark module in bench/ (or those named on the command line,
followed by options for them: `python -m bench engine --contacts 100000`).

Each module has `main(argv) -> None` and prints its figures beside its baseline."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    split = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:split], args[split:]
    names = names or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "common"
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== bench/{name}.py ===", flush=True)
        module.main(options)


if __name__ == "__main__":
    main()
