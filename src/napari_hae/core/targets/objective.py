"""The objective of a run: which scalarizer(s), and which way is better. The goal's sign lives here and only here.

Everything that ranks values (the model's training target, the best value so far, the summary's best value and
steps to the top 1%, the sweep table, the Pareto set) asks the :class:`Objective`; values are *stored* in the
scalarizer's own units and *signed* (larger is better) only for ranking.
"""

from __future__ import annotations

import numpy as np

from ..errors import HAEInputError
from . import noise
from .scalarizers import Scalarizer

GOALS = ("max", "min")


def pareto_mask(values) -> np.ndarray:
    """Bool mask of the non-dominated rows of ``values`` (n, k), every objective maximised: row i is kept unless
    another row is >= in every objective and > in at least one."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError("values must be (n, k)")
    keep = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        dominated = np.all(v >= v[i], axis=1) & np.any(v > v[i], axis=1)
        keep[i] = not dominated.any()
    return keep


class Objective:
    """``scalarizers[0]`` is the primary target; further ones make a multi-objective run. ``goal`` is "max" or
    "min" for all of them."""

    def __init__(self, scalarizers: list[Scalarizer], goal: str = "max"):
        if goal not in GOALS:
            raise HAEInputError(f"goal={goal!r} is not 'max' or 'min'.", "use goal='max' or goal='min'.")
        if not scalarizers:
            raise HAEInputError("An objective needs at least one scalarizer.", "give a scalarizer.")
        self.scalarizers = list(scalarizers)
        self.goal = goal

    @classmethod
    def from_dicts(cls, primary: dict, others: list[dict] | None = None, goal: str = "max") -> Objective:
        return cls([Scalarizer.from_dict(d) for d in [primary, *(others or [])]], goal)

    @classmethod
    def from_settings(cls, settings: dict) -> Objective:
        """From recorded settings (a trace's ``settings``): scalarizer, objectives and goal."""
        return cls.from_dicts(settings["scalarizer"], settings.get("objectives"), settings.get("goal", "max"))

    # -- what it is ------------------------------------------------------------------------------------------
    @property
    def primary(self) -> Scalarizer:
        return self.scalarizers[0]

    @property
    def multi(self) -> bool:
        return len(self.scalarizers) > 1

    @property
    def sign(self) -> float:
        return -1.0 if self.goal == "min" else 1.0

    def labels(self) -> list[str]:
        return [s.label() for s in self.scalarizers]

    def validate(self, energy, signal_shape) -> None:
        for s in self.scalarizers:
            s.validate(energy, signal_shape)

    # -- values ---------------------------------------------------------------------------------------------
    def value(self, spectra, energy, errors: str = "raise") -> np.ndarray:
        """The primary scalarizer, in its own units (``errors``: see :meth:`Scalarizer.__call__`)."""
        return self.primary(spectra, energy, errors=errors)

    def values(self, spectra, energy, errors: str = "raise") -> np.ndarray:
        """(n, k) every scalarizer, in their own units."""
        return np.stack([s(spectra, energy, errors=errors) for s in self.scalarizers], axis=-1)

    def signed(self, values) -> np.ndarray:
        """Values turned so that larger is better."""
        return self.sign * np.asarray(values, dtype=np.float64)

    # -- what the model is trained on, and its predictions read back --------------------------------------------
    def training_target(self, spectra, energy, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The model's target for ``spectra`` (larger is better; NaN where a scalarizer gives no value) and the
        weight of the primary objective. One objective: its signed value (weight 1). Several: a random convex
        combination (Dirichlet weights drawn from ``rng``, new every call) of their standardized signed values."""
        if not self.multi:
            return self.signed(self.value(spectra, energy, errors="nan")), 1.0
        Y = self.signed(self.values(spectra, energy, errors="nan"))
        with np.errstate(invalid="ignore"):
            sd = np.nanstd(Y, 0)
            Z = (Y - np.nanmean(Y, 0)) / np.where(sd > 0, sd, 1.0)
        weights = rng.dirichlet(np.ones(Z.shape[1]))
        return Z @ weights, float(weights[0])

    def counting_variance(self, spectra, energy, first_index: int = 0) -> np.ndarray | None:
        """The counting variance of each spectrum's model target (:mod:`.noise`: Poisson redraws; the goal's sign
        does not change it), ``spectra`` being the run's from its ``first_index``-th; None where it is not defined:
        spectra that are not counts, or several objectives (their scalarised target is drawn anew every step)."""
        if self.multi or not noise.are_counts(spectra):
            return None
        return noise.counting_variance(lambda s: self.value(s, energy, errors="nan"), spectra, first_index)

    @property
    def target_sign(self) -> float:
        """What turns the model's target back into the maps' units: the goal's sign for one objective (scalarizer
        units); 1 for several (the maps are in units of the step's scalarised z-score target)."""
        return 1.0 if self.multi else self.sign

    def in_units(self, target) -> np.ndarray | float:
        """A value (or map) of the model's target in the maps' units (see :attr:`target_sign`)."""
        out = self.target_sign * np.asarray(target, dtype=np.float64)
        return float(out) if out.ndim == 0 else out

    def calibration(self, post, i: int, value: float) -> dict:
        """Where the measured ``value`` (scalarizer units) fell in what ``post`` predicted at candidate ``i``: the
        predictive std, its 95% interval (scalarizer units) and the z and log scores (z > 0: above the prediction).
        In multi-objective mode the scalarised target has no measured counterpart: those are NaN."""
        sign = self.target_sign
        measured = np.nan if self.multi else sign * value
        cal = post.measurement(i, measured, sign=sign)
        cal["z_score"] = sign * cal["z_score"]
        for field, member in post.members:   # a model choosing between others: what each predicted
            cal[field] = member.measurement(i, measured, sign=sign)["log_score"]
        if self.multi:
            cal["pred_std"] = np.nan
        return cal

    def best(self, values) -> float | None:
        """The best of ``values`` (scalarizer units) under the goal, NaNs (no value) left out; None for none."""
        i = self.best_index(values)
        return None if i is None else float(np.asarray(values, dtype=np.float64).ravel()[i])

    def best_index(self, values) -> int | None:
        """Where the best of ``values`` is (NaNs left out); None when no value is finite."""
        v = self.signed(np.asarray(values, dtype=np.float64).ravel())
        v = np.where(np.isnan(v), -np.inf, v)
        return None if v.size == 0 or np.all(v == -np.inf) else int(np.argmax(v))

    def fraction_of_best(self, best: float | None, truth) -> tuple[float | None, str]:
        """How close ``best`` came to the best of ``truth`` (every position's value), and how that is counted:
        "ratio" where every value is > 0 (best / truth max for "max", truth min / best for "min": 1 = found it), else
        "range", the share of the way from the worst value to the best (a ratio of negative values said 107%)."""
        t = np.asarray(truth, dtype=np.float64)
        t = t[np.isfinite(t)]
        if best is None or not np.isfinite(best) or t.size == 0:
            return None, "none"
        if np.all(t > 0) and best > 0:
            top = float(self.sign * np.max(self.signed(t)))
            return (float(best / top) if self.goal == "max" else float(top / best)), "ratio"
        signed, b = self.signed(t), float(self.sign * best)
        lo, hi = float(signed.min()), float(signed.max())
        return (1.0 if hi == lo else float((b - lo) / (hi - lo))), "range"

    def pareto(self, values) -> np.ndarray:
        """Mask of the non-dominated rows of ``values`` (n, k), scalarizer units, under the goal."""
        return pareto_mask(self.signed(values))
