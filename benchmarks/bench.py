#!/usr/bin/env python
"""Run the benchmarks (`make bench`, `make bench-quick`); the harness is the package beside this
file, one module per group (see benchmarks/README.md).

    .venv/bin/python benchmarks/bench.py              # full run, ~10-15 minutes on 2 cores
    .venv/bin/python benchmarks/bench.py --quick      # smoke test, well under 90 s
    .venv/bin/python benchmarks/bench.py --only train,sample --models lstm --hidden 256
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # the harness package, and this checkout's charrnn
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
