"""napari-hae: human-in-the-loop automated experiments for STEM spectroscopy."""

__version__ = "0.1.0"
