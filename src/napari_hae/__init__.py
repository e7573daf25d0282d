"""napari-hae: human-in-the-loop automated experiments for STEM spectroscopy."""

import os

# OpenMP threads that finish a parallel region sleep at once instead of spinning (~200 ms by default): on a shared
# 2-core machine, spinning threads of the training worker took the CPU from the GUI thread and from each other
# (issue 15: 9.7-24.8 s to the first policy point vs 4.0-4.5 s with one thread). Read when torch loads its OpenMP
# runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
