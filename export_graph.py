#!/usr/bin/env python3
"""`python export_graph.py` runs `ssd-export` (the code is in ssd/cli/export.py)."""

import sys

from ssd.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
