"""Benchmark AnySync against restic and borg: `python bench/run.py --quick|--full`.

See bench/README.md for what is measured and how. Exit status 0 only if every step of
every tool ran and every restore returned the source's bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
