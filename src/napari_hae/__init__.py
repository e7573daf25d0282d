"""napari-hae: human-in-the-loop automated experiments for STEM spectroscopy.

Importing it changes nothing in the host process (napari's, a notebook's): no environment variable, no warning
filter. The ``napari-hae`` command sets what it needs for its own process (:func:`napari_hae.cli.main`).
"""

__version__ = "0.1.0"
