"""The numbers of a run: summary (goal-aware, through the run's Objective) and stored monitors."""

from __future__ import annotations

import numpy as np

from ..data.patches import travel_distance
from ..record.trace import Trace
from ..run.diagnostics import STUCK_WINDOW, model_z_scores, window_verdict
from ..targets.objective import Objective
from .metrics import steps_to_top


def dose_ledger(trace: Trace) -> dict:
    """The beam time a run spent (the recorded per-point ``beam_on_s``; ``trace``: a Trace, or the RunView the dock
    has) against scanning every position of the grid with the same beam time per point (the run's median), and
    electrons where the probe current is known (``dataset["probe_current_a"]``). Points recorded without a beam
    time (older traces, replayed data) are counted as unknown, not as zero. Structural images acquired during the
    run (drift checks) are counted apart: ``structural_images`` and their ``structural_images_beam_on_s``."""
    beam = np.asarray(trace.beam_on, dtype=np.float64)
    known = beam[np.isfinite(beam)]
    n_positions = int(np.prod(trace.dataset.get("scan_shape") or trace.structural.shape))
    out = {"points_with_beam_time": int(len(known)), "points_without_beam_time": int(len(beam) - len(known)),
           "beam_on_s": float(known.sum()) if len(known) else None,
           "median_beam_on_per_point_s": float(np.median(known)) if len(known) else None,
           "full_grid_positions": n_positions}
    images = [e["beam_on_s"] for e in getattr(trace, "events", ()) if e.get("beam_on_s") is not None]
    if images:
        out.update(structural_images=len(images), structural_images_beam_on_s=float(np.sum(images)))
    if len(known):
        grid = n_positions * float(np.median(known))
        out["full_grid_beam_on_s"] = grid
        out["fraction_of_full_grid"] = float(known.sum() / grid) if grid > 0 else None
        current = trace.dataset.get("probe_current_a")
        if current:
            out["electrons"] = float(known.sum() * float(current) / 1.602176634e-19)
    return out


def calibration(trace: Trace) -> dict | None:
    """How many measured values fell within the intervals predicted for them (the calibration monitor over the
    whole run), and where the run drew its spread wider than the model's, the model's own coverage; None without
    a z-score."""
    z = trace.step_array("z_score") if trace.n_steps else np.zeros(0)
    z = z[np.isfinite(z)]
    if not len(z):
        return None
    out = {"n": int(len(z)), "coverage_1sigma": float(np.mean(np.abs(z) <= 1)),
           "coverage_2sigma": float(np.mean(np.abs(z) <= 2)),
           "mean_log_score": float(np.nanmean(trace.step_array("log_score"))),
           "overconfident_steps": int(np.nansum(trace.step_array("overconfident")))}
    factor = trace.step_array("spread_factor")
    if np.nanmax(factor, initial=1.0) > 1.0:   # the run drew the spread wider than the model's (its misses)
        own = model_z_scores(trace.steps)
        own = own[np.isfinite(own)]
        out.update(spread_factor_max=float(np.nanmax(factor)), model_coverage_1sigma=float(np.mean(np.abs(own) <= 1)),
                   model_coverage_2sigma=float(np.mean(np.abs(own) <= 2)))
    return out


def summarize(trace: Trace, truth: np.ndarray | None = None, wall_time: float | None = None) -> dict:
    """Numbers a microscopist wants at the end of a run. ``truth``: the scalarizer of every pre-acquired spectrum
    (scalarizer units); "best" and "top 1%" follow the run's goal (max or min)."""
    objective = Objective.from_settings(trace.settings)
    pos = trace.positions_array()
    ibest = objective.best_index(trace.values)
    pixel = float(trace.dataset.get("pixel_size", 1.0))
    travel = travel_distance(pos)
    st = trace.step_array("step_time")
    out = {
        "points_measured": trace.n_points,
        "policy_steps": trace.n_steps,
        "seeds": int(sum(k == "seed" for k in trace.kinds)),
        "goal": objective.goal,
        "best_value": objective.best(trace.values),
        "best_position": [int(c) for c in pos[ibest]] if ibest is not None else None,
        "travel_distance_px": float(travel[-1]) if len(travel) else 0.0,
        "travel_distance_units": float(travel[-1] * pixel) if len(travel) else 0.0,
        "pixel_units": trace.dataset.get("pixel_units", "px"),
        "median_step_time_s": float(np.median(st)) if len(st) else None,
        "interventions": len(trace.interventions),
        "stuck_steps": int(np.nansum(trace.step_array("stuck"))) if trace.n_steps else 0,
        "dose": dose_ledger(trace),
    }
    if (cal := calibration(trace)) is not None:   # the calibration monitor over the whole run
        out["calibration"] = cal
    if "stuck_latent" in trace.monitors:
        out["stuck_steps_latent"] = int(np.sum(trace.monitors["stuck_latent"]))
    if wall_time is not None:
        out["wall_time_s"] = float(wall_time)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        undefined = ~np.isfinite(truth)
        if undefined.any():   # said, never a silent NaN: the figures below are over the positions with a value
            out["truth_undefined_positions"] = int(undefined.sum())
            out["truth_note"] = (f"the scalarizer gives no value at {int(undefined.sum())} of {truth.size} "
                                 "positions (e.g. a power-law background that cannot be fitted to a low-count "
                                 "spectrum); the ground-truth figures are over the others")
        # larger is better: "top" means best under the goal; a position without a value is never in the top
        signed = np.where(undefined, -np.inf, objective.signed(truth))
        out["truth_best"] = objective.best(truth)
        out["best_fraction_of_truth_best"], out["best_fraction_counted_as"] = objective.fraction_of_best(
            out["best_value"], truth)
        out["steps_to_top1pct"] = steps_to_top(pos, trace.kinds, signed, 0.01)
        # the policy's own first hit, and whether a seed was there first (a seed hit is luck, not search)
        out["policy_steps_to_top1pct"] = steps_to_top(pos, trace.kinds, signed, 0.01, seeds_count=False)
        out["seed_in_top1pct"] = out["steps_to_top1pct"] == 0
        out["steps_to_top5pct"] = steps_to_top(pos, trace.kinds, signed, 0.05)
    return out


def compute_monitors(trace: Trace, truth: np.ndarray | None = None, complete: np.ndarray | None = None,
                     feature_space=None) -> dict:
    """Monitors worth keeping with the trace (stored in ``trace.monitors`` and its HDF5 file): model error per
    stored map against truth / complete / final model, and the trajectory's rVAE latent coordinates."""
    from .monitors import model_errors

    mon = {}
    err = model_errors(trace, truth, complete)
    mon["error_step"] = err["step"]
    for k in ("vs_truth", "vs_complete", "vs_final"):
        mon[f"error_{k}"] = err[k]
    if complete is not None:
        mon["complete_mean"] = np.asarray(complete, dtype=np.float32)
    if feature_space is not None and trace.n_points:
        mon["latent_all"] = feature_space.latent.astype(np.float32)
        mon["latent_points"] = feature_space.of_positions(trace.positions_array(), trace.structural.shape)
        mon["stuck_latent"] = stuck_flags(trace, latent=feature_space.latent)
    trace.monitors.update(mon)
    return mon


def stuck_flags(trace: Trace, k: int = STUCK_WINDOW, **kw) -> np.ndarray:
    """The stuck-run verdict after every policy step (0/1), e.g. re-judged with the rVAE latent plane."""
    cols = ("position", "std_mean", "best_so_far", "z_score", "spread_factor")
    verdicts = (window_verdict({c: list(trace.steps.get(c) or [])[: i + 1] for c in cols}, trace.structural.shape, k,
                               **kw) for i in range(trace.n_steps))
    return np.array([float(v is not None and v.stuck) for v in verdicts])
