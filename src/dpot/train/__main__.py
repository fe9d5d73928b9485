"""``python -m dpot.train`` / ``accelerate launch -m dpot.train --config_path=...`` (same as ``dpot train``)."""

import sys

from dpot.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
