#!/usr/bin/env python3
"""`python tools/make_synthetic_video.py` runs `ssd-make-video` (the code is in datasets/synthetic_video.py)."""

import sys

from ssd_datasets.synthetic_video import main

if __name__ == "__main__":
    sys.exit(main())
