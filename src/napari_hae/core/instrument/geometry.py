"""Where a scan pixel is on the instrument: the calibrated scan geometry and its mappings.

napari-hae positions are scan pixels (row y, column x) of the structural image, whose pixel (0, 0) covers
[0, 1) x [0, 1) and whose centre is at (0.5, 0.5). Instruments want other coordinates:

- fractions of the current scan frame, (y, x) in [0, 1], the frame's top-left corner at (0, 0) (Nion Swift's
  ``set_probe_position``; AutoScript's beam position is the same with [x, y] order);
- lengths from the frame's centre in the frame's own axes (nm), which the scan rotation turns into the stage's.

A probe sent to pixel (y, x) goes to the pixel's centre: fraction ((y + 0.5) / ny, (x + 0.5) / nx).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import HAEInputError


@dataclass(frozen=True)
class ScanGeometry:
    """A scan of ``shape`` (ny, nx) pixels of ``pixel_size`` ``units`` each, rotated by ``rotation_deg``
    (counter-clockwise, the scan's x axis from the stage's)."""

    shape: tuple[int, int]
    pixel_size: float = 1.0
    units: str = "px"
    rotation_deg: float = 0.0

    def __post_init__(self):
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise HAEInputError(f"A scan of shape {self.shape} has no pixels.", "give (rows, columns) >= 1.")
        if not (math.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise HAEInputError(f"The pixel size {self.pixel_size:g} {self.units} is not a positive length.",
                                "give the instrument's calibrated pixel size (field of view / pixels).")

    @property
    def field_of_view(self) -> tuple[float, float]:
        """(height, width) of the scanned field in ``units``."""
        return self.shape[0] * self.pixel_size, self.shape[1] * self.pixel_size

    def to_fraction(self, y: float, x: float) -> tuple[float, float]:
        """The centre of pixel (y, x) as fractions (fy, fx) of the scan frame (fractional pixels between centres)."""
        ny, nx = self.shape
        if not (0 <= y <= ny - 1 and 0 <= x <= nx - 1):
            raise HAEInputError(f"Probe position ({y}, {x}) is outside the scan field {ny} x {nx}.",
                                f"use 0 <= y < {ny} and 0 <= x < {nx}.")
        return (y + 0.5) / ny, (x + 0.5) / nx

    def from_fraction(self, fy: float, fx: float) -> tuple[int, int]:
        """The pixel whose area holds the frame fraction (fy, fx)."""
        ny, nx = self.shape
        return min(ny - 1, max(0, int(math.floor(fy * ny)))), min(nx - 1, max(0, int(math.floor(fx * nx))))

    def to_length(self, y: int, x: int) -> tuple[float, float]:
        """The centre of pixel (y, x) from the frame's centre, in ``units``, along the stage's axes (the scan
        rotation applied)."""
        fy, fx = self.to_fraction(y, x)
        h, w = self.field_of_view
        dy, dx = (fy - 0.5) * h, (fx - 0.5) * w
        c, s = math.cos(math.radians(self.rotation_deg)), math.sin(math.radians(self.rotation_deg))
        return s * dx + c * dy, c * dx - s * dy

    def describe(self) -> dict:
        """What a trace records (``dataset``): the keys the rest of napari-hae reads (pixel_size, pixel_units)."""
        d = asdict(self)
        return {"scan_shape": list(d.pop("shape")), "pixel_size": float(d.pop("pixel_size")),
                "pixel_units": d.pop("units"), **d}
