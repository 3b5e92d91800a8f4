#!/usr/bin/env python3
"""`python tools/serve.py` runs `ssd-serve` (the code is in ssd/cli/serve.py)."""

import sys

from ssd.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
