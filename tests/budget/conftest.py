"""The latency-model tests reuse the export tests' tiny models of every family and method."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "export"))
