"""Small pieces the command-line scripts share."""

from __future__ import annotations

import logging
import os


def configure_logging(verbose: bool = False) -> None:
    """INFO to stderr (DEBUG with verbose); TensorFlow's C++ start-up chatter silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)
