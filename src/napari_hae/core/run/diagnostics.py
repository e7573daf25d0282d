"""Diagnostics the loop records at every step: is the run stuck?

One window rule (:func:`window_verdict`) serves the loop (recorded per step), the dock's warning and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STUCK_WINDOW = 10   # policy steps judged together


@dataclass
class StuckReport:
    """Verdict of :func:`detect_stuck`, with the numbers behind it and what to do."""

    stuck: bool
    reason: str
    spread_px: float = float("nan")
    latent_spread: float = float("nan")
    uncertainty_drop: float = float("nan")
    suggestions: list = field(default_factory=list)


SUGGESTIONS = [
    "make the policy more exploratory (raise EI's xi or UCB's beta)",
    "switch to maximum uncertainty (mu) for a few steps",
    "increase the patch size, so the model sees more context",
    "draw an 'avoid' object over the region the run keeps returning to",
]


def stuck_verdict(picks, std_means, scan_shape, radius: float | None = None, latent: np.ndarray | None = None,
                  latent_radius: float | None = None, stall: float = 0.05, best=None, z_scores=None) -> StuckReport:
    """Is the run stuck? Over the last k policy steps (``picks`` (k, 2), per-step mean uncertainty ``std_means``,
    best value so far ``best``, calibration ``z_scores`` of the measurements):

    the best value did not improve **and** fewer than half of the measurements fell within their predicted 2-sigma
    interval: the model keeps being wrong where it looks, so what it believes is best is not. The search that
    stopped improving is the symptom; the calibration says the model, not the sample, is why. A run that stalls
    at the true maximum with a model whose intervals hold is converged, not stuck (on the sample the spatial rule
    below called 8 of 10 such runs stuck; this rule 3 of 10, and it flags the README demo run that stalled at 40%).

    Without ``best`` (callers that have no step record) the spatial rule: the picks stay within ``radius`` pixels
    of their centroid (default 5% of the larger scan side, at least 2 px; or within ``latent_radius`` of one point
    of the rVAE latent plane ``latent``) while the mean uncertainty fell by less than ``stall``.
    """
    picks = np.asarray(picks, dtype=float).reshape(-1, 2)
    std = np.asarray(std_means, dtype=float)
    k = len(picks)
    ny, nx = scan_shape
    radius = max(2.0, 0.05 * max(ny, nx)) if radius is None else float(radius)
    spread = float(np.max(np.hypot(*(picks - picks.mean(0)).T)))
    compact = spread <= radius
    lat_spread = float("nan")
    if latent is not None:
        lat = np.asarray(latent)
        z = lat[(picks[:, 0] * nx + picks[:, 1]).astype(int)]
        lr = 0.1 * float(np.max(np.ptp(lat, axis=0))) if latent_radius is None else float(latent_radius)
        lat_spread = float(np.max(np.linalg.norm(z - z.mean(0), axis=1)))
        compact = compact or lat_spread <= lr
    drop = float(1.0 - std[-1] / std[0]) if std[0] > 0 else 0.0
    stalled = drop < stall
    zs = np.asarray([] if z_scores is None else z_scores, dtype=float)
    zs = zs[np.isfinite(zs)]
    missing = len(zs) >= k // 2 and float(np.mean(np.abs(zs) <= 2)) < 0.5
    b = None if best is None else np.asarray(best, dtype=float)
    b = None if b is None or not np.all(np.isfinite(b)) else b   # not recorded: judge by the spatial rule
    flat = b is None or (len(b) > 1 and b[-1] == b[0])
    where = (f"stay within {spread:.1f} px" if spread <= radius else
             f"stay in one latent cluster (spread {lat_spread:.2g})")
    if b is None and compact and stalled:
        return StuckReport(True, f"the last {k} picks {where} while the mean uncertainty fell only "
                                 f"{100 * drop:.1f}%", spread, lat_spread, drop, list(SUGGESTIONS))
    if b is not None and flat and missing:
        also = f"; the picks {where}" if compact and stalled else ""
        return StuckReport(True, f"the best value has not improved in the last {k} steps while only "
                                 f"{100 * np.mean(np.abs(zs) <= 2):.0f}% of those measurements fell within the "
                                 f"predicted 2-sigma interval: the model is confidently wrong where it looks{also}",
                           spread, lat_spread, drop, list(SUGGESTIONS))
    why = ("the best value is still improving" if not flat else
           "the model's intervals hold what is measured" if b is not None else
           "picks spread out" if not compact else f"uncertainty still falling ({100 * drop:.1f}% in {k} steps)")
    return StuckReport(False, why, spread, lat_spread, drop)


def window_verdict(steps: dict, scan_shape, k: int = STUCK_WINDOW, **kw) -> StuckReport | None:
    """:func:`stuck_verdict` on the last ``k`` policy steps of ``steps`` (a trace's step columns: ``position``,
    ``std_mean``, and where recorded ``best_so_far``, ``z_score`` and ``spread_factor``: the misses are judged in
    the model's own standard deviations, as drawn before any widening); None while fewer than ``k`` steps exist."""
    if len(steps["position"]) < k:
        return None
    best = list(steps["best_so_far"])[-k:] if len(steps.get("best_so_far") or []) >= k else None
    z = list(model_z_scores(steps))[-k:]
    return stuck_verdict(list(steps["position"])[-k:], list(steps["std_mean"])[-k:], scan_shape, best=best,
                         z_scores=z, **kw)


# -- calibration: does the model's uncertainty cover what is then measured? -------------------------------------
CALIBRATION_WINDOW = 10   # policy steps judged together
CALIBRATION_SUGGESTIONS = [
    "make the policy more exploratory (raise UCB's beta or EI's xi, or a few steps of mu)",
    "change the patch size: the model is then retrained from fresh weights on every point (its embedding may "
    "have collapsed), and a larger patch gives it more context",
]


@dataclass
class CalibrationReport:
    """Coverage of the last measurements by the intervals predicted for them, before they were measured."""

    n: int
    coverage_1sigma: float
    coverage_2sigma: float
    mean_log_score: float
    overconfident: bool
    reason: str
    suggestions: list = field(default_factory=list)


SPREAD_WINDOW = 30      # policy steps whose misses set the run's predictive spread
SPREAD_AT_LEAST = 10    # finite z-scores before the spread is widened at all


def model_z_scores(steps: dict) -> np.ndarray:
    """The recorded z-scores in the model's own standard deviations (each times the spread factor it was drawn
    with, which is >= 1; a step from before the recalibration, or a hand-made record without one: 1)."""
    z = np.asarray(steps.get("z_score", ()), dtype=float)
    factor = np.asarray(steps.get("spread_factor", ()), dtype=float)
    if factor.shape != z.shape:
        return z                                                   # not recorded: drawn as the model said
    return z * np.where(np.isfinite(factor) & (factor >= 1.0), factor, 1.0)   # NaN: a step from before it


def spread_factor(z_scores, factors, window: int = SPREAD_WINDOW) -> float:
    """How much wider than the model says the run draws its predictive spread: the 68th percentile of how far the
    last ``window`` measurements fell from their predictions, in the model's own standard deviations (each recorded
    |z| times the ``factors`` it was predicted with), where that is above 1; else 1. Never narrower: the measured
    points are the policy's choices, where the model is usually at its best, not a sample of the map. 1 while
    fewer than ``SPREAD_AT_LEAST`` z-scores are finite (several objectives have none).

    The rule is split conformal prediction on the run's own sequence (as adaptive conformal inference, Gibbs and
    Candes 2021): a model whose last measurements missed their 68% intervals more often than 32% of the time gets
    intervals wide enough to have covered 68% of them. On the targets the image does not show the DKL's intervals
    were that narrow: its 1-sigma coverage of the map 0.38-0.56 (issue 27, ``docs/performance.md``)."""
    z = np.abs(model_z_scores({"z_score": z_scores, "spread_factor": factors}))
    z = z[np.isfinite(z)][-int(window):]
    if len(z) < SPREAD_AT_LEAST:
        return 1.0
    return max(1.0, float(np.quantile(z, 0.6827)))


def spread_event(before: float, now: float) -> str:
    """The event when the run starts, or stops, drawing its intervals wider than the model's (else "");
    ``before``: the factor of the step before (NaN: none, or a step from before the recalibration)."""
    before = float(before) if np.isfinite(before) else 1.0
    if now > 1.0 >= before:
        return ("the model's last measurements fell outside its 68% intervals more often than a calibrated "
                f"model's would: the run draws its intervals {now:.2f}x wider than the model's from here "
                "(recorded per step as spread_factor; --no-recalibrate turns it off)")
    if now <= 1.0 < before:
        return "the model's intervals hold what is measured again: the run draws them as the model says"
    return ""


def calibration_verdict(z_scores, log_scores=None, k: int = CALIBRATION_WINDOW) -> CalibrationReport | None:
    """Judge the last ``k`` finite z-scores (measured minus predicted, in predicted standard deviations). A
    calibrated model covers about 68% within 1 sigma and 95% within 2; the run is flagged overconfident when fewer
    than half of the last ``k`` fall within 2 sigma (for a calibrated model that happens with probability < 1e-4 at
    k = 10). None while fewer than ``k`` finite scores exist."""
    z = np.asarray(z_scores, dtype=float)
    z = z[np.isfinite(z)][-k:]
    if len(z) < k:
        return None
    ls = np.asarray(log_scores if log_scores is not None else [], dtype=float)
    ls = ls[np.isfinite(ls)][-k:]
    c1, c2 = float(np.mean(np.abs(z) <= 1)), float(np.mean(np.abs(z) <= 2))
    over = c2 < 0.5
    reason = (f"only {100 * c2:.0f}% of the last {k} measurements fell within the predicted 2-sigma interval "
              f"(a calibrated model: 95%); typical miss {np.median(np.abs(z)):.1f} sigma") if over else \
        f"{100 * c1:.0f}% within 1 sigma, {100 * c2:.0f}% within 2 sigma over the last {k} measurements"
    return CalibrationReport(len(z), c1, c2, float(ls.mean()) if len(ls) else float("nan"), over, reason,
                             list(CALIBRATION_SUGGESTIONS) if over else [])


def step_flags(steps: dict, position, std_mean: float, best_so_far: float, scan_shape,
               window: int = STUCK_WINDOW) -> tuple[dict, str]:
    """The diagnostics a step records before it measures: ``stuck`` (:func:`stuck_verdict` over the window, this
    step's pick and best value included)
    and ``overconfident`` (the calibration of the steps before), as 0/1; and the event text when overconfidence
    starts (empty otherwise). ``steps``: the trace's step columns."""
    verdict = window_verdict({"position": steps["position"] + [position], "std_mean": steps["std_mean"] + [std_mean],
                              "best_so_far": steps["best_so_far"] + [best_so_far], "z_score": steps["z_score"],
                              "spread_factor": steps["spread_factor"]},
                             scan_shape, window)
    cal = calibration_verdict(model_z_scores(steps), steps["log_score"])   # the model's own, not the widened
    over = bool(cal and cal.overconfident)
    starts = over and not (steps["overconfident"] and steps["overconfident"][-1] == 1.0)
    warning = f"model overconfident: {cal.reason}. Consider: {'; '.join(cal.suggestions)}" if starts else ""
    return {"stuck": float(bool(verdict and verdict.stuck)), "overconfident": float(over)}, warning

