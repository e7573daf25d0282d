"""``python -m napari_hae``: the ``napari-hae`` command."""

import sys

from .cli import main

sys.exit(main())
