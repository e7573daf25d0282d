"""The DKL or the plain GP, whichever predicted the run's own measurements better before they were made.

Both models are fitted at every step. Each step's record holds the log density each gave the measured value in
the prediction it made before the measurement (``dkl_log_score``, ``gp_log_score``: a prequential score, as the
calibration monitor's ``log_score`` for the model in use); before each fit the run hands the recorded scores to the
model (:meth:`DKLOrGP.choose`), which uses the posterior of the one with the higher sum over the steps both scored.
The choice is made from the records alone, so a resumed or replayed run chooses as the live one did. With several
objectives no measured value scores a prediction (the scalarised target is not measured): the DKL throughout.

Why (issue 27, docs/performance.md): on the three real tasks the structural image does not show, neither model is
ahead everywhere (24 runs each: the C K line DKL 47 / plain GP 34 measurements to the top 1%, Zn minus Cu
50.5 / 56, C K / Si K 28.5 / 34) and each fails to get there within 55 measurements in 4-14 of 24 runs; the
choice made 30 / 41.5 / 34.5 and missed in 6 / 7 / 4. It costs both fits: 1.4-2 times the DKL's step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..registry import ParamSpec
from .base import FitReport, Posterior, register_model
from .dkl import DKLRegressor
from .gp import PlainGP

NAMES = ("the DKL", "the plain GP")


@register_model("dkl_or_gp", params=(
    ParamSpec("embed_dim", None, "", help="the DKL's embedding, 1-16 or 'auto' (as model 'dkl')"),
    ParamSpec("hidden", None, "", help="the DKL's hidden layer widths"),
    ParamSpec("pool", None, "", 1, 8, "the plain GP's blocks per patch side (as model 'gp')"),
    ParamSpec("threads", None, "", 1, 256, "torch threads (fixed: picks do not depend on the machine)"),
    ParamSpec("device", None, "", help="'auto' (a CUDA GPU when torch sees one), 'cpu', 'cuda' or 'cuda:N'"),
))
class DKLOrGP:
    """The DKL or the plain GP: the one whose earlier predictions of the measured values scored better."""

    device_param = True   # its ``device`` is both models' (model/compute.py)
    score_fields = ("dkl_log_score", "gp_log_score")   # the step record's fields, in the order of ``members``

    def __init__(self, input_dim: int, *, embed_dim: int | str = "auto", hidden=(64, 32), pool: int = 4,
                 threads: int = 1, seed: int = 0, device: str = "auto"):
        self.members = (DKLRegressor(input_dim, embed_dim=embed_dim, hidden=hidden, threads=threads, seed=seed,
                                     device=device),
                        PlainGP(input_dim, pool=pool, threads=threads, seed=seed, device=device))
        self.chosen, self.totals, self.n_scored = 0, np.zeros(2), 0
        self._said = 0   # the choice the last fit's events announced

    @classmethod
    def for_scan(cls, params: dict, n_positions: int) -> dict:
        """The DKL's ``embed_dim="auto"`` written out for the scan (:class:`.base.SizedByScan`)."""
        return DKLRegressor.for_scan(params, n_positions)

    def seek(self, fit_index: int) -> None:
        for m in self.members:
            m.seek(fit_index)

    def choose(self, scores) -> None:
        """Use the model whose recorded log scores (``scores``: (steps, 2), the columns of :attr:`score_fields`;
        NaN where a step has none) sum higher over the steps where both have one; the DKL until then and on a tie."""
        scores = np.asarray(scores, dtype=float).reshape(-1, 2)
        both = np.all(np.isfinite(scores), axis=1)
        self.totals, self.n_scored = scores[both].sum(axis=0), int(both.sum())
        self.chosen = int(self.totals[1] > self.totals[0])

    def fit(self, X, y, *, iterations: int, warm: bool) -> FitReport:
        reports = [m.fit(X, y, iterations=iterations, warm=warm) for m in self.members]
        out = reports[self.chosen]
        out.events = [f"{name}: {e}" for name, r in zip(NAMES, reports) for e in r.events]
        if self.chosen != self._said:
            out.events.append(f"{NAMES[self.chosen]} predicted the {self.n_scored} values measured so far better "
                              f"than {NAMES[1 - self.chosen]} before they were measured (log score "
                              f"{self.totals[self.chosen]:.1f} against {self.totals[1 - self.chosen]:.1f}): its "
                              "predictions are used from this step")
            self._said = self.chosen
        return out

    def posterior(self, X) -> Posterior:
        """The chosen model's posterior, with both models' own (``members``: what the step records score); the
        unused one is predicted only where the step measures (:meth:`.base.Posterior.members_at`), not everywhere."""
        used, unused = self.chosen, 1 - self.chosen
        post = self.members[used].posterior(X)
        own = [post, post]
        own[unused] = lambda idx, model=self.members[unused]: model.posterior(X[idx])
        return replace(post, members=tuple(zip(self.score_fields, own)))
