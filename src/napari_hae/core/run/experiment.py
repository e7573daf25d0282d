"""The automated experiment loop: seeds, then *decide -> measure -> record* every step, until the budget.

A run is its records (:mod:`.state`): the experiment writes records (points, steps, interventions, objects, the
random state) through its trace, which journals each before applying it, and the run's :class:`RunState` changes
only by applying them. What is derived from the state (the objective, the policy, the patches and the model) is
rebuilt when an intervention record changes the settings it is derived from. A step is three parts with
immutable results (:mod:`.results`): :meth:`Experiment.decide` (fit, predict, pick), :meth:`Experiment.measure`
(the instrument), :meth:`Experiment.record` (the records, and so the state). Usable from a notebook::

    exp = Experiment(SimulatedMicroscope(load_sample("nanoparticles")), ExperimentSettings(budget=50))
    exp.run()
    exp.trace.save("trace.h5")
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..data.patches import PatchGrid, flat_index, positions_of, step_lengths
from ..errors import HAEInputError, ModelFitError
from ..instrument.capabilities import ReplaysData
from ..instrument.guard import AcquisitionGuard
from ..instrument.microscope import Microscope
from ..instrument.registration import tracking
from ..model.base import MODELS, ChoosesByRecord, KnowsNoise, Seekable, make_model, params_for_scan
from ..policy import AcquisitionContext, AcquisitionFunction, policy_from_dict, select
from ..policy.wrappers import penalize_pending
from ..record.journal import bytes_needed, check_free_space
from ..record.trace import Trace
from ..targets.objective import Objective
from ..targets.scalarizers import Scalarizer
from . import interventions as iv
from . import memory, picking, resuming
from .diagnostics import STUCK_WINDOW, spread_event, spread_factor, step_flags
from .results import Decision, Measurement, RunView, StepResult, frozen_array, frozen_mapping
from .settings import ExperimentSettings, PolicySpec, ScalarizerSpec
from .state import RunState

log = logging.getLogger(__name__)

__all__ = ["Decision", "Experiment", "ExperimentSettings", "Measurement", "RunView", "StepResult"]

_DERIVED = {"scalarizer": "objective", "policy": "policy", "patch_size": "patches"}   # intervention -> derived
# the shortest dwell (s) a live run pipelines by default: at 0.05 s on nion-usim it gained 5% of the time and the
# beam was on 1.45x the dwell (the fit beside the acquisition delays the blank); at 0.2 s 20% and 1.02x
PIPELINE_DWELL = 0.1


def _registered_model(input_dim: int, s: ExperimentSettings):
    """The model the settings name, from the model registry (recorded in the trace with the settings)."""
    return make_model(s.model.to_dict(), input_dim, seed=s.random_seed)


def resolved_settings(settings: ExperimentSettings | dict | None, scalarizer: Scalarizer | None,
                      registered_model: bool, n_positions: int | None = None) -> ExperimentSettings:
    """A copy of ``settings`` with what the run fills in written out (the model's and the policy's defaults, those
    of the model's defaults that depend on a scan of ``n_positions``, a custom scalarizer's spec): what the run
    records. The caller's settings are never changed."""
    if isinstance(settings, dict):
        settings = ExperimentSettings.from_dict(settings)
    s = ExperimentSettings() if settings is None else settings.model_copy(deep=True)
    if registered_model:   # the registered model's parameters recorded in full, defaults included
        s.model.params = MODELS.with_defaults(s.model.name, s.model.params)
        if n_positions is not None:
            s.model.params = params_for_scan(s.model.name, s.model.params, n_positions)
    if scalarizer is not None:
        s.scalarizer = ScalarizerSpec(**scalarizer.to_dict())
    s.policy = PolicySpec(**policy_from_dict(s.policy.to_dict()).to_dict())
    return s


class Experiment:
    """One hAE run on a :class:`~napari_hae.core.instrument.microscope.Microscope`.

    ``scalarizer`` may be an unregistered :meth:`Scalarizer.from_callable` (not restorable from a trace).
    ``model_factory(input_dim, settings)`` overrides the registered model named by ``settings.model`` (for
    benchmarks and tests; it is not recorded). ``journal``: a file path; every measurement is then on disk
    (flushed) before the next step starts. ``follow`` (a counterfactual): the positions to measure, one per policy
    step, instead of the policy's picks. ``trace``: continue the run these records describe (see :meth:`resume`).
    """

    def __init__(self, microscope: Microscope, settings: ExperimentSettings | dict | None = None,
                 scalarizer: Scalarizer | None = None, dataset_info: dict | None = None,
                 model_factory: Callable[[int, ExperimentSettings], object] | None = None,
                 journal=None, *, follow: Sequence | None = None, trace: Trace | None = None):
        self.microscope = microscope
        self.model_factory = model_factory or _registered_model
        self._read_instrument(microscope)
        self._custom_scalarizer = scalarizer
        if trace is None:
            s = resolved_settings(settings, scalarizer, model_factory is None, self.n_positions)
            if s.pipeline_depth is None:   # learning while measuring pays where measuring takes time
                s.pipeline_depth = int(not isinstance(microscope, ReplaysData) and (s.dwell or 1.0) >= PIPELINE_DWELL)
            picking.check_budget(s, self.n_positions)
            energy = microscope.energy
            info = {"energy": None if energy is None else energy.to_dict(), **(dataset_info or {})}
            # pre-acquired data: its fingerprint, however the run is made (a resume or report checks it)
            if "fingerprint" not in info and isinstance(microscope, ReplaysData) and \
                    hasattr(microscope.data, "fingerprint"):
                info["fingerprint"] = microscope.data.fingerprint()
            trace = Trace(structural=self.structural.copy(), settings=s.to_dict(), dataset=info)
            self.state = RunState(s, self.scan_shape, follow)
        else:   # the recorded settings (``settings``: those, read, with this machine's model device)
            self.state = RunState.from_trace(trace, follow, None if settings is None else resolved_settings(
                settings, scalarizer, registered_model=False))
        self.trace = trace
        self.model, self._needs_reset, self._retry_fresh, self._patch_size = None, True, False, None
        self._derive_all()
        self.rng = np.random.default_rng(self.state.settings.random_seed)
        if self.state.rng_state is not None:
            self.rng.bit_generator.state = self.state.rng_state
        self.stuck_window = STUCK_WINDOW
        # the trace applies its records here too; weakly: a trace kept after its run (a counterfactual's, the dock's
        # replay) must not keep the run's model and patches alive
        on_record = weakref.WeakMethod(self._on_record)
        trace.listeners.append(lambda *record: (m := on_record()) is not None and m(*record))
        s = self.state.settings   # the guard refuses a dwell the instrument cannot expose: before any journal
        self.microscope = microscope = tracking(microscope, self.structural, s.drift_every)
        self.guard = AcquisitionGuard(microscope, s.acquire_retries, s.acquire_timeout, s.acquire_retry_wait,
                                      on_event=lambda msg: self.trace.add_event(self.step_index, msg),
                                      dwell=s.dwell, blank=s.blank_between, energy=microscope.energy)
        if journal is not None:
            self.journal_to(journal)
        self._seeds = None
        self._values_cache = ("", np.zeros(0))
        self._variance_cache: tuple = (None, np.zeros(0))   # (objective, counting variances so far; None: not counts)
        self._recorded_at = -math.inf   # time.perf_counter() of the latest step's record

    def _read_instrument(self, microscope) -> None:
        self.scan_shape = tuple(int(v) for v in microscope.scan_shape)
        self.n_positions = self.scan_shape[0] * self.scan_shape[1]
        energy = microscope.energy
        self.energies = None if energy is None else energy.values
        self.signal_shape = tuple(microscope.signal_shape)
        self.structural = np.asarray(microscope.structural_image(), dtype=np.float64)
        if self.structural.shape != self.scan_shape:
            raise HAEInputError(f"The microscope's structural image {self.structural.shape} does not match its "
                                f"scan shape {self.scan_shape}.", "acquire the image on the scan grid.")
        self.grid_positions = positions_of(np.arange(self.n_positions), self.scan_shape)

    def journal_to(self, path, append: bool = False) -> Path:
        """Journal every record from here on to ``path`` (``append``: continue this run's own intact journal)."""
        if not append:
            s = self.state.settings
            check_free_space(Path(path).parent, bytes_needed(s, self.signal_shape, self.n_positions),
                             "" if not s.record_maps else ", or do not store per-step maps (--no-maps)")
        return self.trace.attach_journal(path, append=append)

    # -- the state, and what is derived from it -----------------------------------------------------------
    def _on_record(self, kind: str, fields: dict, arrays: dict) -> None:
        """Every record the trace adds: applied to the state, then what depends on a changed setting rebuilt."""
        self.state.apply(kind, fields, arrays)
        if kind == "intervention" and fields["intervention"]["kind"] in _DERIVED:
            self._derive(fields["intervention"]["kind"])

    def _derive_all(self) -> None:
        for kind in _DERIVED:
            self._derive(kind)

    def _derive(self, kind: str) -> None:
        """Rebuild what depends on the settings of ``kind`` ("scalarizer", "policy" or "patch_size")."""
        s = self.state.settings
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
        elif kind == "patch_size" and self._patch_size != s.patch_size:
            iv.ChangePatchSize(s.patch_size).check(self)
            self._patch_size = int(s.patch_size)
            self.patches = PatchGrid(self.structural, int(s.patch_size))   # not held: a view on the image
            # built now, not at the first fit: a model its settings cannot build is a settings error
            self.model = self.model_factory(self.patches.shape[1], s)
            self._needs_reset = True

    @property
    def settings(self) -> ExperimentSettings:
        """The settings in force (a copy: change them with an intervention)."""
        return self.state.settings

    @property
    def measured(self) -> np.ndarray:
        return self.state.measured

    @property
    def avoid(self) -> np.ndarray:
        return self.state.avoid

    @property
    def visit(self) -> list[np.ndarray]:
        return self.state.visit

    @property
    def started(self) -> bool:
        return self.state.started

    @property
    def follow(self):
        return self.state.follow

    @property
    def scalarizer(self) -> Scalarizer:
        return self.objective.primary

    @property
    def objectives(self) -> list[Scalarizer]:
        """The further objectives of a multi-objective run (empty otherwise)."""
        return self.objective.scalarizers[1:]

    @property
    def patch_size(self) -> int:
        return self.state.patch_size

    @property
    def step_index(self) -> int:
        return self.state.n_steps

    @property
    def done(self) -> bool:
        return self.started and self.step_index >= self.state.budget

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

    def view(self) -> RunView:
        """What the run has recorded so far, read-only (see :class:`RunView`): what the dock draws from."""
        tr = self.trace
        values = self._current_values()
        pareto = None
        if self.objective.multi and tr.n_points:
            pos, vals = self.pareto_set()
            pareto = (frozen_array(pos), frozen_array(vals))
        return RunView(
            tuple(tr.positions), tuple(tr.values), tuple(tr.kinds), tuple(tr.point_steps),
            frozen_mapping({k: tuple(v) for k, v in tr.steps.items()}), frozen_array(tr.structural),
            frozen_mapping(tr.dataset), self.state.budget, self.scalarizer.label(), self.scalarizer.name,
            frozen_mapping(self.scalarizer.to_dict()), frozen_array(values), pareto,
            tuple(frozen_array(s) for s in tr.spectra),
            None if self.energies is None else frozen_array(self.energies), self.stuck_window, self.done,
            None if tr.journal is None else str(tr.journal.path), tuple(tr.beam_on))

    def _current_values(self) -> np.ndarray:
        """The measured values under the scalarizer in force (computed for new points only while it stays)."""
        label, done = self._values_cache
        n = self.trace.n_points
        if label != self.scalarizer.label() or len(done) > n:
            label, done = self.scalarizer.label(), np.zeros(0)
        if len(done) < n:
            new = self.objective.value(np.stack(self.trace.spectra[len(done):n]), self.energies, errors="nan")
            done = np.concatenate([done, np.asarray(new, dtype=np.float64)])
        self._values_cache = (label, done)
        return done

    def _counting_variances(self) -> np.ndarray | None:
        """Each measured spectrum's counting variance under the objective in force (:mod:`..targets.noise`;
        computed for new points only while the objective stays, a function of the recorded spectra alone), or None
        where it is not defined (spectra that are not counts, several objectives)."""
        objective, done = self._variance_cache
        n = self.trace.n_points
        if objective is not self.objective or (done is not None and len(done) > n):
            objective, done = self.objective, np.zeros(0)
        if done is not None and len(done) < n:
            new = self.objective.counting_variance(np.stack(self.trace.spectra[len(done):n]), self.energies,
                                                   first_index=len(done))
            done = None if new is None else np.concatenate([done, new])
        self._variance_cache = (objective, done)
        return done

    # -- measure ------------------------------------------------------------------------------------------
    def measure(self, decision: Decision) -> Measurement:
        """Acquire the spectrum ``decision`` chose and scalarize it (nothing is recorded yet)."""
        return self.measure_at(decision.flat, decision.kind, decision.step)

    def measure_at(self, flat: int, kind: str, step: int) -> Measurement:
        """Acquire at flat index ``flat`` and scalarize. A scalarizer that fails or gives a non-finite value for
        this spectrum does not lose it: the value is NaN and ``why`` says why (the point is kept, not trained on)."""
        y, x = (int(c) for c in self.grid_positions[flat])
        t0 = time.perf_counter()
        spectrum = self.guard(y, x, self.signal_shape)
        seconds = time.perf_counter() - t0
        why = None
        try:
            value = float(np.asarray(self.scalarizer(spectrum[None], self.energies), dtype=np.float64)[0])
            if not np.isfinite(value):
                why = f"the scalarizer gave {value}"
        except Exception as exc:   # a user function may raise anything; the spectrum must survive it
            value, why = float("nan"), f"the scalarizer raised {type(exc).__name__}: {exc}"
        if why is not None:
            value = float("nan")
        return Measurement((y, x), frozen_array(spectrum), value, kind, step, self.guard.dwell,
                           self.guard.last_blanked_s, seconds, why, self.guard.last_beam_on_s)

    def _record_why(self, m: Measurement) -> None:
        if m.why is not None:
            self.trace.add_event(m.step if m.step >= 0 else self.step_index,
                                 f"point {m.position}: {m.why}; the spectrum is kept, its value is NaN and it is "
                                 "left out of training")

    def record_point(self, m: Measurement) -> None:
        """Record a measurement that is not a policy step's (a seed)."""
        self.trace.add_point(**m.point())
        self._record_why(m)
        resuming.record_drift(self)

    # -- seeds --------------------------------------------------------------------------------------------
    def seed_indices(self) -> np.ndarray:
        """Flat indices of the seed positions for the configured seed mode."""
        return picking.seed_indices(self.state.settings, self.scan_shape, self.rng, np.array(self.avoid),
                                    self.structural)

    def start(self) -> None:
        """Measure the seed positions (once; drawn once: a start that faulted goes on with the same seeds)."""
        if self.started:
            return
        self._seeds = self.seed_indices() if self._seeds is None else self._seeds
        self.guard.prefetch([self.grid_positions[f] for f in self._seeds if not self.measured[f]], self.signal_shape)
        for flat in self._seeds:
            if not self.measured[flat]:   # after a resume, seeds measured before the crash are kept
                self.record_point(self.measure_at(int(flat), "seed", -1))
        self.trace.set_rng_state(self.rng.bit_generator.state)

    # -- interventions ------------------------------------------------------------------------------------
    def intervene(self, change: iv.Intervention) -> None:
        """Record ``change`` before the next step; the run changes by applying that record (checked first: a
        refused change leaves the run as it was)."""
        change.check(self)
        old = change.current(self.state.settings)
        new = change.new(self)
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

    def remove_object(self, label: str) -> None:
        """Retract the newest object in force labelled ``label``: its positions are no longer avoided (or to be
        visited) from the next step."""
        self.intervene(iv.RemoveObject(label))

    # -- decide -------------------------------------------------------------------------------------------
    def _fit(self) -> tuple[np.ndarray, float, float, float]:
        """Fit on every measured point under the current objective; returns (targets, final loss, seconds, the
        primary objective's weight)."""
        s = self.state.settings
        order = flat_index(self.trace.positions_array(), self.scan_shape)
        y, weight = self.objective.training_target(self.trace.spectra_array(), self.energies, self.rng)
        usable = np.isfinite(y)   # a spectrum the scalarizer could not value is kept, but not trained on
        if not usable.any():
            raise ModelFitError(f"None of the {len(y)} measured spectra has a finite value under "
                                f"{self.scalarizer.label()}; nothing was lost.",
                                "check the scalarizer (its band and background) against a measured spectrum, "
                                "then change it (an intervention) and resume.")
        noise = {}
        if isinstance(self.model, KnowsNoise):   # the targets' counting variances, where the model wants them
            y_var = self._counting_variances() if self.model.known_noise else None
            noise["y_var"] = None if y_var is None else y_var[usable]
        y, order = y[usable], order[usable]
        X = self.patches[order]
        t0 = time.perf_counter()
        # how long to train is the run's (its records); whether the weights may be kept is the model object's
        first = self.state.fresh_fit or self._retry_fresh
        if isinstance(self.model, Seekable):   # the same fresh weights live, on resume and in replay
            self.model.seek(self.step_index)
        if isinstance(self.model, ChoosesByRecord):   # which of its models it uses: from the records alone
            self.model.choose(np.column_stack([self.trace.step_array(f).reshape(-1)
                                               for f in self.model.score_fields]))
        try:
            rep = self.model.fit(X, y, iterations=s.fit_iterations_first if first else s.fit_iterations,
                                 warm=not self._needs_reset, **noise)
        except (RuntimeError, ValueError) as exc:
            self._needs_reset = self._retry_fresh = True   # start the next attempt from fresh weights
            self.trace.add_event(self.step_index, f"model fit failed: {exc}")
            raise ModelFitError(
                f"The model could not be fitted at step {self.step_index} ({exc}). Nothing was lost: the "
                f"trace holds all {self.trace.n_points} measured points.",
                "resume to retry from fresh weights; if it fails again, change the scalarizer (are its values "
                "finite and varied?) or the patch size.") from exc
        self._needs_reset = self._retry_fresh = False
        for ev in rep.events:
            self.trace.add_event(self.step_index, ev)
        return y, rep.final_loss, time.perf_counter() - t0, weight

    def decide(self, pending: Sequence[int] = ()) -> Decision:
        """Fit on the recorded points, predict everywhere and choose where policy step ``step_index +
        len(pending)`` measures; ``pending`` (flat indices) are being measured and are not chosen again. Records
        nothing but the fit's own events."""
        t_start = time.perf_counter()
        k = self.step_index + len(pending)
        measured_y, loss, fit_time, weight = self._fit()
        t0 = time.perf_counter()
        post = self.model.posterior(self.patches)
        factor = spread_factor(self.trace.step_array("z_score"), self.trace.step_array("spread_factor")) \
            if self.state.settings.recalibrate else 1.0
        post = post.widened(factor)
        predict_time = time.perf_counter() - t0
        mean, std = post.in_units()   # maps in scalarizer units (several objectives: the step's z-score target)
        mean = self.objective.in_units(mean)
        pending = np.asarray(pending, dtype=np.int64)
        taken = np.array(self.measured)
        taken[pending] = True
        pick_mask, kind = picking.pick_mask(taken, self.avoid, self.visit)
        in_flight = self.grid_positions[pending]
        ctx = AcquisitionContext(best=float(post.standardize(measured_y.max())), rng=self.rng,
                                 available=pick_mask, step=k, budget=self.state.budget,
                                 current=tuple(in_flight[-1]) if len(pending) else self.state.last_position,
                                 positions=self.grid_positions, measured=self.trace.positions_array(),
                                 pending=in_flight)
        # around a point being measured, by an eighth of the patch (a quarter lost 2 of 8 sample runs below 0.9 of
        # the maximum in 40 steps, an eighth none: benchmarks/discovery.py --pipeline 1, docs/performance.md)
        scores = penalize_pending(self.policy(post, ctx), ctx, self.patch_size / 8)
        choice = select(scores, pick_mask, self.rng)
        if (followed := self.state.followed(k)) is not None:   # counterfactual: the recorded trajectory
            choice = int(flat_index(np.asarray(followed), self.scan_shape)[0])
        post = post.members_at(choice)   # what the record will score, predicted now (the model may be refitted)
        acq = np.where(pick_mask, scores, -np.inf)
        position = tuple(int(c) for c in self.grid_positions[choice])
        ties = float(np.sum(pick_mask & (acq == acq[choice])))
        record = self._decision_record(position, choice, scores[choice], ties, mean, std, measured_y)
        record.update(loss=float(loss), fit_time=fit_time, predict_time=predict_time, objective_weight=float(
            weight) if self.objective.multi else float("nan"), spread_factor=factor)
        flags, warning = step_flags(self.trace.steps, position, record["std_mean"], record["best_so_far"],
                                    self.scan_shape, self.stuck_window)
        record.update(flags)
        if (grid := getattr(self.model, "last_grid", None)) is not None:   # the grid predictor's measured error
            record["grid_mean_err"], record["grid_std_err"] = grid.mean_units, grid.std_units
        maps = {"mean": mean.reshape(self.scan_shape), "std": std.reshape(self.scan_shape),
                "acq": acq.reshape(self.scan_shape)}
        return Decision(k, int(choice), position, kind, frozen_mapping(record),
                        frozen_mapping({n: frozen_array(m) for n, m in maps.items()}), post,
                        tuple(w for w in (warning, spread_event(self._last_factor(), factor)) if w), t_start)

    def _last_factor(self) -> float:
        """The spread factor the step before was drawn with (NaN: none yet)."""
        factors = self.trace.steps["spread_factor"]
        return float(factors[-1]) if factors else float("nan")

    def _decision_record(self, position, choice, score, ties, mean, std, measured_y) -> dict:
        """The step record's fields known once the position is chosen (scalarizer units)."""
        return {
            "position": position, "policy": self.policy.label(), "scalarizer": self.scalarizer.label(),
            "acq_value": float(score), "acq_ties": ties, "next_std": float(std[choice]),
            "next_mean": float(mean[choice]),
            "std_mean": float(std.mean()), "std_std": float(std.std()),
            **{f"std_q{q}": float(v) for q, v in zip((10, 50, 90), np.quantile(std, (0.1, 0.5, 0.9)))},
            "mean_max": float(mean.max()), "best_so_far": self.objective.in_units(measured_y.max()),
            "patch_size": self.patch_size,
        }

    # -- record -------------------------------------------------------------------------------------------
    def record(self, decision: Decision, m: Measurement) -> StepResult:
        """Record the step: the measurement, the decision and the random state in one record (on disk together
        or not at all); the run's state changes by applying it."""
        k = decision.step
        if k != self.step_index:
            raise RuntimeError(f"Decision for step {k} recorded at step {self.step_index}: record in order.")
        record = dict(decision.record)
        record.update(self.objective.calibration(decision.posterior, decision.flat, m.value))
        record["blanked_s"] = m.blanked_s
        record["travel_px"] = (self.trace.steps["travel_px"][-1] if k else 0.0) + float(
            step_lengths([self.state.last_position, decision.position])[0])   # from the point recorded before
        # the step's wall time: from its decision, or, pipelined (decided while the step before was measured),
        # from the step before's record: the time a point costs
        record["step_time"] = time.perf_counter() - max(decision.started_at, self._recorded_at)
        for warning in decision.events:
            self.trace.add_event(k, warning)
        maps = {n: np.asarray(a) for n, a in decision.maps.items()}
        s = self.state.settings   # maps every k steps (and the last); the newest are kept in memory in any case
        self.trace.add_step(record, maps if s.stores_maps(k, self.n_positions) else None, point=m.point(),
                            rng=self.rng.bit_generator.state, latest=maps if s.record_maps else None)
        self._record_why(m)
        resuming.record_drift(self)   # a drift check now, if due, before the next decision: said, what left the field
        memory.after_step(k + 1)   # the free heap back to the OS every few steps (glibc keeps it otherwise)
        self._recorded_at = time.perf_counter()
        return StepResult(k, decision.position, decision.kind, m.value, frozen_mapping(record),
                          decision.maps["mean"], decision.maps["std"], decision.maps["acq"], self.view())

    def step(self) -> StepResult:
        """Run one policy step: decide, measure, record. Returns what was recorded."""
        if not self.started:
            self.start()
        if self.done:
            raise RuntimeError(f"The budget of {self.state.budget} steps is spent.")
        decision = self.decide()
        return self.record(decision, self.measure(decision))

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
        """Continue a run from its records, with the settings, model and interventions it had.

        ``trace``: a :class:`Trace` or a path (HDF5 trace, journal, or run folder). The run's state is rebuilt from
        its records (nothing is measured again), the model retrained on all points, the random generator continued.
        ``journal``: where to journal on (``append_journal``: continue this run's intact journal there); ``budget``
        may extend the run; ``device`` moves the model (another machine's). See :mod:`.resuming`.
        """
        return resuming.resume(cls, trace, microscope, journal, append_journal, model_factory, budget, device)

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
