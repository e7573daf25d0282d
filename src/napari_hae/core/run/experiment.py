"""The automated experiment loop: seeds, then measure -> scalarize -> train -> predict -> acquire, until the budget.

Interventions (scalarizer, policy, patch size, objects of interest) may be applied between any two steps; each is
recorded in the trace with the step it precedes. Usable from a notebook::

    exp = Experiment(SimulatedMicroscope(load_sample("nanoparticles")), ExperimentSettings(budget=50))
    exp.run()
    exp.trace.save("trace.h5")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.patches import PatchGrid, flat_index, positions_of, step_lengths
from ..errors import HAEInputError, ModelFitError
from ..instrument.guard import AcquisitionGuard
from ..instrument.microscope import Microscope
from ..model.base import MODELS, make_model
from ..policy import AcquisitionContext, AcquisitionFunction, policy_from_dict, select
from ..record.journal import bytes_needed, check_free_space
from ..record.trace import Trace
from ..targets.objective import Objective
from ..targets.scalarizers import Scalarizer
from . import interventions as iv
from . import memory, picking
from .diagnostics import STUCK_WINDOW, step_flags
from .settings import ExperimentSettings, PolicySpec, ScalarizerSpec

log = logging.getLogger(__name__)

__all__ = ["Experiment", "ExperimentSettings", "StepResult"]


@dataclass
class StepResult:
    """What one policy step did (also what the napari worker yields)."""

    step: int
    position: tuple[int, int]
    kind: str
    value: float
    record: dict
    mean: np.ndarray       # (ny, nx) predicted mean, scalarizer units
    std: np.ndarray        # (ny, nx) predicted std, scalarizer units
    acq: np.ndarray        # (ny, nx) acquisition scores (-inf where not available)


def _registered_model(input_dim: int, s: ExperimentSettings):
    """The model the settings name, from the model registry (recorded in the trace with the settings)."""
    return make_model(s.model.to_dict(), input_dim, seed=s.random_seed)


class Experiment:
    """One hAE run on a :class:`~napari_hae.core.instrument.microscope.Microscope`.

    The settings are the single source of truth: the objective, the policy, the patches and the model are derived
    from them (:meth:`_derive`), and every intervention changes the settings first.
    """

    def __init__(self, microscope: Microscope, settings: ExperimentSettings | dict | None = None,
                 scalarizer: Scalarizer | None = None, dataset_info: dict | None = None,
                 model_factory: Callable[[int, ExperimentSettings], object] | None = None,
                 journal=None):
        """``scalarizer`` may be an unregistered :meth:`Scalarizer.from_callable` (not restorable from a trace).
        ``model_factory(input_dim, settings)`` overrides the registered model named by ``settings.model`` (for
        benchmarks and tests; it is not recorded). ``journal``: a file path; every measurement is then on disk
        (flushed) before the next step starts (see :meth:`resume`)."""
        self.microscope = microscope
        self.model_factory = model_factory or _registered_model
        if isinstance(settings, dict):
            settings = ExperimentSettings.from_dict(settings)
        self.settings = s = settings if settings is not None else ExperimentSettings()
        if model_factory is None:   # the registered model's parameters recorded in full, defaults included
            s.model.params = MODELS.with_defaults(s.model.name, s.model.params)
        self.scan_shape = tuple(int(v) for v in microscope.scan_shape)
        self.n_positions = self.scan_shape[0] * self.scan_shape[1]
        energy = microscope.energy
        self.energies = None if energy is None else energy.values
        self.signal_shape = tuple(microscope.signal_shape)
        self._custom_scalarizer = scalarizer
        if scalarizer is not None:
            s.scalarizer = ScalarizerSpec(**scalarizer.to_dict())
        self.structural = np.asarray(microscope.structural_image(), dtype=np.float64)
        if self.structural.shape != self.scan_shape:
            raise HAEInputError(f"The microscope's structural image {self.structural.shape} does not match its "
                                f"scan shape {self.scan_shape}.", "acquire the image on the scan grid.")
        self.grid_positions = positions_of(np.arange(self.n_positions), self.scan_shape)
        self.measured = np.zeros(self.n_positions, dtype=bool)
        self.avoid = np.zeros(self.n_positions, dtype=bool)
        self.visit: list[np.ndarray] = []        # flat masks of unsatisfied "visit" objects
        self.model = None
        self._needs_reset = True
        self._patch_size = None
        for kind in ("scalarizer", "policy", "patch_size"):
            self._derive(kind)
        picking.check_budget(s, self.n_positions)
        self._weights: np.ndarray | None = None
        self.rng = np.random.default_rng(s.random_seed)
        self.stuck_window = STUCK_WINDOW
        self.follow: list | None = None   # positions to measure instead of the policy's picks (counterfactuals)
        info = {"energy": None if energy is None else energy.to_dict(), **(dataset_info or {})}   # replays need it
        self.trace = Trace(structural=self.structural.copy(), settings=s.to_dict(), dataset=info)
        if journal is not None:
            check_free_space(Path(journal).parent, bytes_needed(s, self.signal_shape, self.n_positions),
                             "" if not s.record_maps else ", or do not store per-step maps (--no-maps)")
            self.trace.attach_journal(journal)
        self.guard = AcquisitionGuard(microscope, s.acquire_retries, s.acquire_timeout, s.acquire_retry_wait,
                                      on_event=lambda msg: self.trace.add_event(self.step_index, msg),
                                      dwell=s.dwell, blank=s.blank_between, energy=energy)
        self.started, self._seeds = False, None

    # -- what is derived from the settings ----------------------------------------------------------------
    def _derive(self, kind: str) -> None:
        """Rebuild what depends on the settings of ``kind`` ("scalarizer", "policy" or "patch_size"; nothing is
        derived from the others, e.g. "budget" or "object")."""
        s = self.settings
        if kind == "scalarizer":
            primary = self._custom_scalarizer
            if primary is None or primary.to_dict() != s.scalarizer.to_dict():
                primary = Scalarizer.from_dict(s.scalarizer.to_dict())
                self._custom_scalarizer = None
            others = [Scalarizer.from_dict(o.to_dict()) for o in (s.objectives or [])]
            objective = Objective([primary, *others], s.goal)
            objective.validate(self.energies, self.signal_shape)
            self.objective = objective
            self._needs_reset = True   # a new target: the old embedding is not a good start
        elif kind == "policy":
            self.policy: AcquisitionFunction = policy_from_dict(s.policy.to_dict())
            if self.policy.to_dict() != s.policy.to_dict():   # record the defaults it filled in
                s.policy = PolicySpec(**self.policy.to_dict())
        elif kind == "patch_size":
            iv.ChangePatchSize(s.patch_size).check(self)
            if s.patch_size != self._patch_size:
                self._patch_size = int(s.patch_size)
                self.patches = PatchGrid(self.structural, self._patch_size)   # not held: a view on the image
                # built now, not at the first fit: a model its settings cannot build is a settings error
                self.model = self.model_factory(self.patches.shape[1], s)
                self._needs_reset = True

    @property
    def scalarizer(self) -> Scalarizer:
        return self.objective.primary

    @property
    def objectives(self) -> list[Scalarizer]:
        """The further objectives of a multi-objective run (empty otherwise)."""
        return self.objective.scalarizers[1:]

    @property
    def patch_size(self) -> int:
        return self._patch_size

    @property
    def step_index(self) -> int:
        return self.trace.n_steps

    @property
    def done(self) -> bool:
        return self.started and self.step_index >= self.settings.budget

    def _target(self, spectra: np.ndarray) -> np.ndarray:
        """The model's training target, larger is better."""
        if self.objective.multi:   # a random convex combination of the standardized objectives, new every step
            Y = self.objective.signed(self.objective.values(spectra, self.energies, errors="nan"))
            with np.errstate(invalid="ignore"):
                sd = np.nanstd(Y, 0)
                Z = (Y - np.nanmean(Y, 0)) / np.where(sd > 0, sd, 1.0)
            self._weights = self.rng.dirichlet(np.ones(Z.shape[1]))
            return Z @ self._weights
        return self.objective.signed(self.objective.value(spectra, self.energies, errors="nan"))

    def objective_values(self, spectra: np.ndarray | None = None) -> np.ndarray:
        """(n, k) values of every objective (the scalarizer first) for ``spectra`` (default: all measured), signed
        so that larger is better."""
        spectra = self.trace.spectra_array() if spectra is None else spectra
        return self.objective.signed(self.objective.values(spectra, self.energies))

    def pareto_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions (m, 2) and objective values (m, k, in scalarizer units) of the non-dominated measured points."""
        Y = self.objective.values(self.trace.spectra_array(), self.energies)
        keep = self.objective.pareto(Y)
        return self.trace.positions_array()[keep], Y[keep]

    def _acquire(self, flat: int, kind: str, step: int) -> dict:
        """Acquire at ``flat`` and scalarize; the point as ``Trace.add_point``'s arguments (not yet recorded).
        A scalarizer that fails or gives a non-finite value for this spectrum does not lose it: the value is NaN,
        the point is kept (and left out of training), and the trace says why."""
        y, x = (int(c) for c in self.grid_positions[flat])
        spectrum = self.guard(y, x, self.signal_shape)
        self.measured[flat] = True
        why = None
        try:
            value = float(np.asarray(self.scalarizer(spectrum[None], self.energies), dtype=np.float64)[0])
            if not np.isfinite(value):
                why = f"the scalarizer gave {value}"
        except Exception as exc:   # a user function may raise anything; the spectrum must survive it
            value, why = float("nan"), f"the scalarizer raised {type(exc).__name__}: {exc}"
        if why is not None:
            value = float("nan")
            self.trace.add_event(step if step >= 0 else self.step_index,
                                 f"point ({y}, {x}): {why}; the spectrum is kept, its value is NaN and it is left "
                                 "out of training")
        return {"position": (y, x), "spectrum": spectrum, "value": value, "kind": kind, "step": step,
                "dwell": self.guard.dwell}

    def _measure(self, flat: int, kind: str, step: int) -> float:
        point = self._acquire(flat, kind, step)
        self.trace.add_point(**point)
        return point["value"]

    # -- seeds --------------------------------------------------------------------------------------------
    def seed_indices(self) -> np.ndarray:
        """Flat indices of the seed positions for the configured seed mode."""
        return picking.seed_indices(self.settings, self.scan_shape, self.rng, self.avoid)

    def start(self) -> None:
        """Measure the seed positions (once; drawn once: a start that faulted goes on with the same seeds)."""
        if self.started:
            return
        self._seeds = self.seed_indices() if self._seeds is None else self._seeds
        self.guard.prefetch([self.grid_positions[f] for f in self._seeds if not self.measured[f]], self.signal_shape)
        for flat in self._seeds:
            if not self.measured[flat]:   # after a resume, seeds measured before the crash are kept
                self._measure(int(flat), "seed", -1)
        self.started = True
        self.trace.set_rng_state(self.rng.bit_generator.state)

    # -- interventions ------------------------------------------------------------------------------------
    def intervene(self, change: iv.Intervention) -> None:
        """Apply ``change`` before the next step and record it in the trace (checked first: a refused change
        leaves the run as it was)."""
        change.check(self)
        old = change.current(self)
        change.apply(self)
        new = change.recorded(self)
        self.trace.add_intervention(self.step_index, change.kind, old, new)
        log.info("intervention before step %d: %s %s -> %s", self.step_index, change.kind, old, new)

    def set_scalarizer(self, scalarizer: Scalarizer | dict) -> None:
        """Change the physics target; earlier spectra are re-scalarized for training."""
        self.intervene(iv.ChangeScalarizer(scalarizer))

    def set_policy(self, name: str, **params) -> None:
        """Change the acquisition function or its parameter (xi, beta, ...)."""
        self.intervene(iv.ChangePolicy({"name": name, "params": params}))

    def set_patch_size(self, patch_size: int) -> None:
        """Change the patch size: patches are re-extracted and the model retrained from scratch on all points."""
        self.intervene(iv.ChangePatchSize(patch_size))

    def set_budget(self, budget: int) -> None:
        """Extend (or shorten, not below the steps taken) the run."""
        self.intervene(iv.ChangeBudget(budget))

    def add_object(self, mask: np.ndarray, mode: str, label: str = "") -> None:
        """Add an object of interest: ``mode="visit"`` forces the next pick inside it until it has been measured;
        ``mode="avoid"`` never measures inside it. ``mask`` is a (ny, nx) bool array."""
        self.intervene(iv.AddObject(mask, mode, label))

    def _apply_object(self, mask: np.ndarray, mode: str) -> None:
        """What an object does to picking: "avoid" excludes its positions for good; "visit" forces a pick inside
        it until one of its positions is measured."""
        flat = np.asarray(mask, dtype=bool).ravel()
        if mode == "avoid":
            self.avoid |= flat
        elif not (flat & self.measured).any():
            self.visit.append(flat.copy())

    # -- one step -----------------------------------------------------------------------------------------
    def _fit(self) -> tuple[np.ndarray, float, float]:
        """Fit on every measured point under the current objective; returns (targets, final loss, seconds)."""
        s = self.settings
        order = flat_index(self.trace.positions_array(), self.scan_shape)
        y = self._target(self.trace.spectra_array())
        usable = np.isfinite(y)   # a spectrum the scalarizer could not value is kept, but not trained on
        if not usable.any():
            raise ModelFitError(f"None of the {len(y)} measured spectra has a finite value under "
                                f"{self.scalarizer.label()}; nothing was lost.",
                                "check the scalarizer (its band and background) against a measured spectrum, "
                                "then change it (an intervention) and resume.")
        y, order = y[usable], order[usable]
        X = self.patches[order]
        t0 = time.perf_counter()
        if self.model is None:
            self.model = self.model_factory(self.patches.shape[1], s)
        warm = not self._needs_reset
        try:
            rep = self.model.fit(X, y, iterations=s.fit_iterations if warm else s.fit_iterations_first, warm=warm)
        except (RuntimeError, ValueError) as exc:
            self._needs_reset = True   # start the next attempt from fresh weights
            self.trace.add_event(self.step_index, f"model fit failed: {exc}")
            raise ModelFitError(
                f"The model could not be fitted at step {self.step_index} ({exc}). Nothing was lost: the "
                f"trace holds all {self.trace.n_points} measured points.",
                "resume to retry from fresh weights; if it fails again, change the scalarizer (are its values "
                "finite and varied?) or the patch size.") from exc
        self._needs_reset = False
        for ev in rep.events:
            self.trace.add_event(self.step_index, ev)
        return y, rep.final_loss, time.perf_counter() - t0

    def step(self) -> StepResult:
        """Run one policy step: train, predict everywhere, pick, measure. Returns what happened."""
        if not self.started:
            self.start()
        if self.done:
            raise RuntimeError(f"The budget of {self.settings.budget} steps is spent.")
        t_step = time.perf_counter()
        k = self.step_index
        measured_y, loss, fit_time = self._fit()
        t0 = time.perf_counter()
        post = self.model.posterior(self.patches)
        predict_time = time.perf_counter() - t0
        # maps in scalarizer units; in multi-objective mode, in units of this step's scalarised (z-score) target
        sign = 1.0 if self.objective.multi else self.objective.sign
        mean, std = post.in_units()
        mean = sign * mean
        self.visit = [v for v in self.visit if not (v & self.measured).any()]
        pick_mask, kind = picking.pick_mask(self.measured, self.avoid, self.visit)
        ctx = AcquisitionContext(best=float(post.standardize(measured_y.max())), rng=self.rng,
                                 available=pick_mask, step=k, budget=self.settings.budget,
                                 current=self.trace.positions[-1] if self.trace.positions else None,
                                 positions=self.grid_positions, measured=self.trace.positions_array())
        scores = np.asarray(self.policy(post, ctx), dtype=np.float64)
        choice = select(scores, pick_mask, self.rng)
        if self.follow is not None:   # counterfactual: the recorded trajectory, whatever this model prefers
            choice = int(flat_index(np.asarray(self.follow[k]), self.scan_shape)[0])
        acq = np.where(pick_mask, scores, -np.inf)
        position, ties = tuple(int(c) for c in self.grid_positions[choice]), np.sum(pick_mask & (acq == acq[choice]))
        record = {
            "position": position,
            "policy": self.policy.label(),
            "scalarizer": self.scalarizer.label(),
            "acq_value": float(scores[choice]), "acq_ties": float(ties),
            "next_std": float(std[choice]), "next_mean": float(mean[choice]),
            "std_mean": float(std.mean()), "std_std": float(std.std()),
            **{f"std_q{q}": float(v) for q, v in zip((10, 50, 90), np.quantile(std, (0.1, 0.5, 0.9)))},
            "mean_max": float(mean.max()),
            "best_so_far": float(sign * measured_y.max()),
            "loss": float(loss),
            "fit_time": fit_time,
            "predict_time": predict_time,
            "patch_size": self.patch_size,
            "objective_weight": float(self._weights[0]) if self.objective.multi else float("nan"),
            "travel_px": (self.trace.steps["travel_px"][-1] if k else 0.0)
            + float(step_lengths([self.trace.positions[-1], position])[0]),
        }
        flags, warning = step_flags(self.trace.steps, position, record["std_mean"], record["best_so_far"],
                                    self.scan_shape, self.stuck_window)
        record.update(flags)
        if warning:
            self.trace.add_event(k, warning)
        if (grid := getattr(self.model, "last_grid", None)) is not None:   # the grid predictor's measured error
            record["grid_mean_err"], record["grid_std_err"] = grid.mean_units, grid.std_units
        point = self._acquire(choice, kind, k)
        # what the model had predicted for this measurement (latent std and noise), and where the value fell in it
        cal = post.measurement(choice, np.nan if self.objective.multi else sign * point["value"], sign=sign)
        record.update(cal, z_score=sign * cal["z_score"],   # z > 0: above the prediction
                      pred_std=np.nan if self.objective.multi else cal["pred_std"])
        record["blanked_s"] = self.guard.last_blanked_s
        record["step_time"] = time.perf_counter() - t_step
        maps = {"mean": mean.reshape(self.scan_shape), "std": std.reshape(self.scan_shape),
                "acq": acq.reshape(self.scan_shape)}
        # one record: the spectrum, the decision and the random state are on disk together or not at all
        s = self.settings   # maps every k steps (and the last); the newest are kept in memory in any case
        self.trace.add_step(record, maps if s.stores_maps(k, self.n_positions) else None, point=point,
                            rng=self.rng.bit_generator.state, latest=maps if s.record_maps else None)
        memory.after_step(k + 1)   # the free heap back to the OS every few steps (glibc keeps it otherwise)
        return StepResult(k, position, kind, point["value"], record, **maps)

    def iter_steps(self, n: int | None = None) -> Iterator[StepResult]:
        """Generator over up to ``n`` steps (default: until the budget); interventions may happen between yields."""
        count = 0
        while not self.done and (n is None or count < n):
            yield self.step()
            count += 1

    # -- resuming -----------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, trace: Trace | str, microscope: Microscope, journal=None, append_journal: bool = False,
               model_factory=None, budget: int | None = None, device: str | None = None) -> Experiment:
        """Continue a run from its trace, with the settings, model and interventions it had.

        ``trace``: a :class:`Trace` or a path (HDF5 trace, journal, or run folder). Measured points are kept, the
        recorded interventions re-applied, the model retrained on all points, the random generator continued.
        ``journal``: where to journal on (``append_journal``: continue this run's intact journal there); ``budget``
        may extend the run; ``device`` moves the model (another machine's). See :mod:`napari_hae.core.run.resuming`.
        """
        from .resuming import resume

        return resume(cls, trace, microscope, journal, append_journal, model_factory, budget, device)

    def close(self) -> None:
        """Release the acquisition thread and close the journal (the trace stays usable in memory)."""
        self.guard.close()
        self.trace.close_journal()

    def run(self, n: int | None = None, callback: Callable[[StepResult], None] | None = None) -> Trace:
        """Run to the budget (or ``n`` steps), calling ``callback`` after each step. Returns the trace."""
        for res in self.iter_steps(n):
            if callback is not None:
                callback(res)
        return self.trace
