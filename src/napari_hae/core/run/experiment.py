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
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..policy.acquisition import AcquisitionContext, AcquisitionFunction, Posterior, make_policy, policy_from_dict, select
from ..model.dkl import DKLRegressor
from ..errors import HAEInputError, ModelFitError
from ..instrument.microscope import AcquisitionGuard, Microscope
from ..analysis.monitors import stuck_verdict
from ..data.patches import check_patch_size, extract_patches, flat_index, positions_of
from ..targets.scalarizers import Scalarizer
from ..record.trace import Trace

log = logging.getLogger(__name__)

SEED_MODES = ("random", "grid", "given")


@dataclass
class ExperimentSettings:
    """Settings of a run. Positions and patch sizes in pixels; band limits (in ``scalarizer``) in eV.

    ``budget`` counts policy steps after the seeds. Scores use standardized targets (see acquisition module).
    """

    patch_size: int = 16
    scalarizer: dict = field(default_factory=lambda: {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}})
    policy: dict = field(default_factory=lambda: {"name": "ei", "params": {"xi": 0.01}})
    goal: str = "max"
    n_seeds: int = 10
    seed_mode: str = "random"
    seed_positions: list | None = None
    budget: int = 100
    random_seed: int = 0
    fit_iterations_first: int = 150
    fit_iterations: int = 30
    embed_dim: int = 2
    hidden: tuple = (64, 32)
    kernel: str = "rbf"
    lr: float = 0.01
    record_maps: bool = True
    acquire_retries: int = 2            # further attempts after a failed acquisition
    acquire_timeout: float | None = 120.0   # seconds per acquisition; None: no timeout
    acquire_retry_wait: float = 0.5     # seconds before the first retry (grows linearly)
    # multi-objective mode: further scalarizer dicts maximised (or minimised, see goal) together with
    # ``scalarizer``; each step trains on a random convex combination of their standardized values (ParEGO-style
    # random scalarisation), and :meth:`Experiment.pareto_set` gives the non-dominated measured points
    objectives: list | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentSettings":
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


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


def _default_model(input_dim: int, s: ExperimentSettings) -> DKLRegressor:
    return DKLRegressor(input_dim, embed_dim=s.embed_dim, hidden=s.hidden, kernel=s.kernel, lr=s.lr,
                        seed=s.random_seed)


class Experiment:
    """One hAE run on a :class:`~napari_hae.core.instrument.microscope.Microscope`."""

    def __init__(self, microscope: Microscope, settings: ExperimentSettings | None = None,
                 scalarizer: Scalarizer | None = None, dataset_info: dict | None = None,
                 model_factory: Callable[[int, ExperimentSettings], DKLRegressor] | None = None,
                 journal=None):
        """``model_factory(input_dim, settings)`` may supply another regressor with DKLRegressor's interface
        (fit / predict / sample / y_mean / y_std), e.g. to compare implementations. ``journal``: a file path;
        every measurement is then on disk (flushed) before the next step starts (see :meth:`resume`)."""
        self.microscope = microscope
        self.model_factory = model_factory or _default_model
        self.settings = settings or ExperimentSettings()
        s = self.settings
        self.scan_shape = tuple(int(v) for v in microscope.scan_shape)
        self.n_positions = self.scan_shape[0] * self.scan_shape[1]
        energy = microscope.energy
        self.energies = None if energy is None else energy.values
        self.signal_shape = tuple(microscope.signal_shape)
        self.scalarizer = scalarizer or Scalarizer.from_dict(s.scalarizer)
        self.scalarizer.validate(self.energies, self.signal_shape)
        s.scalarizer = self.scalarizer.to_dict()
        self.objectives = [Scalarizer.from_dict(d) for d in (s.objectives or [])]
        for sc in self.objectives:
            sc.validate(self.energies, self.signal_shape)
        self._weights: np.ndarray | None = None
        self.policy: AcquisitionFunction = policy_from_dict(s.policy)
        if s.goal not in ("max", "min"):
            raise HAEInputError(f"goal={s.goal!r} is not 'max' or 'min'.", "use goal='max' or goal='min'.")
        self.patch_size = check_patch_size(s.patch_size, self.scan_shape)
        if not isinstance(s.budget, (int, np.integer)) or s.budget < 0:
            raise HAEInputError(f"Budget {s.budget!r} must be a whole number >= 0.", "give the number of steps.")
        if s.seed_mode not in SEED_MODES:
            raise HAEInputError(f"Unknown seed mode {s.seed_mode!r}.", f"use one of {SEED_MODES}.")
        n_seed = len(s.seed_positions or []) if s.seed_mode == "given" else int(s.n_seeds)
        if n_seed < 1:
            raise HAEInputError("At least one seed point is needed to train the first model.",
                                "use n_seeds >= 1 (typical 5-20), or give seed positions.")
        if n_seed + s.budget > self.n_positions:
            raise HAEInputError(
                f"Seeds ({n_seed}) plus budget ({s.budget}) exceed the {self.n_positions} scan positions.",
                f"use a budget of at most {self.n_positions - n_seed} steps.",
            )
        self.rng = np.random.default_rng(s.random_seed)
        self.structural = np.asarray(microscope.structural_image(), dtype=np.float64)
        if self.structural.shape != self.scan_shape:
            raise HAEInputError(f"The microscope's structural image {self.structural.shape} does not match its "
                                f"scan shape {self.scan_shape}.", "acquire the image on the scan grid.")
        self.grid_positions = positions_of(np.arange(self.n_positions), self.scan_shape)
        self._set_patches(self.patch_size)
        self.measured = np.zeros(self.n_positions, dtype=bool)
        self.avoid = np.zeros(self.n_positions, dtype=bool)
        self.visit: list[np.ndarray] = []        # flat masks of unsatisfied "visit" objects
        self.model: DKLRegressor | None = None
        self._needs_reset = True
        self.stuck_window = 10     # policy steps judged by the stuck-run detector (see monitors.stuck_verdict)
        self.follow: list | None = None   # positions to measure instead of the policy's picks (replay.counterfactual)
        info = dict(dataset_info or {})
        info.setdefault("energy", None if energy is None else energy.to_dict())   # replays need the axis
        self.trace = Trace(structural=self.structural.copy(), settings=s.to_dict(), dataset=info)
        if journal is not None:
            self.trace.attach_journal(journal)
        self.guard = AcquisitionGuard(microscope, s.acquire_retries, s.acquire_timeout, s.acquire_retry_wait,
                                      on_event=lambda msg: self.trace.add_event(self.step_index, msg))
        self.started = False

    # -- state --------------------------------------------------------------------------------------------
    def _set_patches(self, n: int):
        self.patches = extract_patches(self.structural, n).reshape(self.n_positions, -1)

    @property
    def step_index(self) -> int:
        return self.trace.n_steps

    @property
    def done(self) -> bool:
        return self.started and self.step_index >= self.settings.budget

    def _target(self, spectra: np.ndarray) -> np.ndarray:
        if self.objectives:   # a random convex combination of the standardized objectives, new every step
            Y = self.objective_values(spectra)
            Z = (Y - Y.mean(0)) / np.where(Y.std(0) > 0, Y.std(0), 1.0)
            self._weights = self.rng.dirichlet(np.ones(Z.shape[1]))
            return Z @ self._weights
        v = self.scalarizer(spectra, self.energies)
        return -v if self.settings.goal == "min" else v

    def objective_values(self, spectra: np.ndarray | None = None) -> np.ndarray:
        """(n, k) values of every objective (the scalarizer first) for ``spectra`` (default: all measured), signed
        so that larger is better."""
        spectra = self.trace.spectra_array() if spectra is None else spectra
        sign = -1.0 if self.settings.goal == "min" else 1.0
        return sign * np.stack([sc(spectra, self.energies) for sc in [self.scalarizer, *self.objectives]], axis=1)

    def pareto_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions (m, 2) and objective values (m, k, in scalarizer units) of the non-dominated measured points."""
        from ..analysis.metrics import pareto_mask

        Y = self.objective_values()
        keep = pareto_mask(Y)
        sign = -1.0 if self.settings.goal == "min" else 1.0
        return self.trace.positions_array()[keep], sign * Y[keep]

    def _measure(self, flat: int, kind: str, step: int) -> float:
        y, x = (int(c) for c in self.grid_positions[flat])
        spectrum = self.guard(y, x, self.signal_shape)
        value = float(self.scalarizer(spectrum[None], self.energies)[0])
        self.measured[flat] = True
        self.trace.add_point((y, x), spectrum, value, kind, step)
        return value

    # -- seeds --------------------------------------------------------------------------------------------
    def seed_indices(self) -> np.ndarray:
        """Flat indices of the seed positions for the configured seed mode."""
        s = self.settings
        ny, nx = self.scan_shape
        if s.seed_mode == "given":
            pos = np.asarray(s.seed_positions, dtype=float).reshape(-1, 2)
            if not np.all(np.isfinite(pos)) or np.any(pos != np.round(pos)):
                raise HAEInputError("Seed positions must be whole pixel coordinates (y, x).",
                                    "round the seed coordinates to integers.")
            pos = pos.astype(int)
            bad = (pos[:, 0] < 0) | (pos[:, 0] >= ny) | (pos[:, 1] < 0) | (pos[:, 1] >= nx)
            if bad.any():
                raise HAEInputError(f"Seed position(s) {pos[bad].tolist()} lie outside the {ny} x {nx} scan field.",
                                    f"use 0 <= y < {ny} and 0 <= x < {nx}.")
            flat = flat_index(pos, self.scan_shape)
            if len(np.unique(flat)) != len(flat):
                raise HAEInputError("Seed positions contain duplicates.", "give each seed position once.")
            return flat
        if s.seed_mode == "grid":
            k = int(np.ceil(np.sqrt(s.n_seeds)))
            ys = np.linspace(0, ny - 1, k + 2)[1:-1].round().astype(int)
            xs = np.linspace(0, nx - 1, k + 2)[1:-1].round().astype(int)
            flat = np.unique(flat_index(np.array([(y, x) for y in ys for x in xs]), self.scan_shape))
            return flat[: s.n_seeds]
        return np.sort(self.rng.choice(self.n_positions, int(s.n_seeds), replace=False))

    def start(self) -> None:
        """Measure the seed positions (once)."""
        if self.started:
            return
        for flat in self.seed_indices():
            if not self.measured[flat]:   # after a resume, seeds measured before the crash are kept
                self._measure(int(flat), "seed", -1)
        self.started = True
        self.trace.set_rng_state(self.rng.bit_generator.state)

    # -- interventions ------------------------------------------------------------------------------------
    def _intervene(self, kind: str, old, new):
        self.trace.add_intervention(self.step_index, kind, old, new)
        log.info("intervention before step %d: %s %s -> %s", self.step_index, kind, old, new)

    def set_scalarizer(self, scalarizer: Scalarizer | dict) -> None:
        """Change the physics target; earlier spectra are re-scalarized for training."""
        sc = scalarizer if isinstance(scalarizer, Scalarizer) else Scalarizer.from_dict(scalarizer)
        sc.validate(self.energies, self.signal_shape)
        old = self.scalarizer.to_dict()
        self.scalarizer = sc
        self.settings.scalarizer = sc.to_dict()
        self._needs_reset = True   # a new target: the old embedding is not a good start
        self._intervene("scalarizer", old, sc.to_dict())

    def set_policy(self, name: str, **params) -> None:
        """Change the acquisition function or its parameter (xi, beta, ...)."""
        pol = make_policy(name, **params)
        old = self.policy.to_dict()
        self.policy = pol
        self.settings.policy = pol.to_dict()
        self._intervene("policy", old, pol.to_dict())

    def set_patch_size(self, patch_size: int) -> None:
        """Change the patch size: patches are re-extracted and the model retrained from scratch on all points."""
        n = check_patch_size(patch_size, self.scan_shape)
        old = self.patch_size
        self.patch_size = n
        self.settings.patch_size = n
        self._set_patches(n)
        self.model = None
        self._needs_reset = True
        self._intervene("patch_size", old, n)

    def add_object(self, mask: np.ndarray, mode: str, label: str = "") -> None:
        """Add an object of interest: ``mode="visit"`` forces the next pick inside it until it has been measured;
        ``mode="avoid"`` never measures inside it. ``mask`` is a (ny, nx) bool array."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.scan_shape:
            raise HAEInputError(f"Object mask shape {mask.shape} differs from the scan shape {self.scan_shape}.",
                                "draw the object on the structural image layer.")
        if mode not in ("visit", "avoid"):
            raise HAEInputError(f"Object mode {mode!r} is not 'visit' or 'avoid'.", "use 'visit' or 'avoid'.")
        if not mask.any():
            raise HAEInputError("The object covers no scan position.", "draw it over the scanned area.")
        self._apply_object(mask, mode)
        index = self.trace.add_object(mode, label, mask)
        self._intervene("object", None, {"mode": mode, "label": label, "n_pixels": int(mask.sum()), "index": index})

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
        """Fit on every measured point under the current scalarizer; returns (targets, final loss, seconds)."""
        s = self.settings
        order = flat_index(self.trace.positions_array(), self.scan_shape)
        y = self._target(self.trace.spectra_array())
        X = self.patches[order]
        t0 = time.perf_counter()
        if self.model is None:
            self.model = self.model_factory(self.patches.shape[1], s)
        first = self._needs_reset or self.model.model is None
        try:
            rep = self.model.fit(X, y, iterations=s.fit_iterations_first if first else s.fit_iterations,
                                 reset=first)
        except (RuntimeError, ValueError) as exc:
            self._needs_reset = True   # start the next attempt from fresh weights
            self.trace.add_event(self.step_index, f"model fit failed: {exc}")
            raise ModelFitError(
                f"The DKL model could not be fitted at step {self.step_index} ({exc}). Nothing was lost: the "
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
        zmean, zstd = self.model.predict(self.patches, standardized=True)
        predict_time = time.perf_counter() - t0
        # maps in scalarizer units; in multi-objective mode, in units of this step's scalarised (z-score) target
        sign = -1.0 if self.settings.goal == "min" and not self.objectives else 1.0
        ymu, ysd = self.model.y_mean, self.model.y_std
        mean = sign * (zmean * ysd + ymu)
        std = zstd * ysd
        best_z = (float(measured_y.max()) - ymu) / ysd

        available = ~self.measured & ~self.avoid
        kind = "policy"
        self.visit = [v for v in self.visit if not (v & self.measured).any()]
        pick_mask = available
        for v in self.visit:
            if (v & available).any():
                pick_mask = v & available
                kind = "visit"
                break
        model = self.model
        post = Posterior(zmean, zstd, sample=lambda idx, rng: model.sample(self.patches[idx], rng)[0])
        ctx = AcquisitionContext(best=best_z, rng=self.rng, available=pick_mask, step=k,
                                 budget=self.settings.budget,
                                 current=self.trace.positions[-1] if self.trace.positions else None,
                                 positions=self.grid_positions, measured=self.trace.positions_array())
        scores = np.asarray(self.policy(post, ctx), dtype=np.float64)
        choice = select(scores, pick_mask)
        if self.follow is not None:   # counterfactual: the recorded trajectory, whatever this model prefers
            choice = int(flat_index(np.asarray(self.follow[k]), self.scan_shape)[0])
        acq = np.where(pick_mask, scores, -np.inf)

        record = {
            "position": tuple(int(c) for c in self.grid_positions[choice]),
            "policy": self.policy.label(),
            "scalarizer": self.scalarizer.label(),
            "acq_value": float(scores[choice]),
            "next_std": float(std[choice]),
            "next_mean": float(mean[choice]),
            "std_mean": float(std.mean()),
            "std_std": float(std.std()),
            "std_q10": float(np.quantile(std, 0.1)),
            "std_q50": float(np.quantile(std, 0.5)),
            "std_q90": float(np.quantile(std, 0.9)),
            "mean_max": float(mean.max()),
            "best_so_far": float(sign * measured_y.max()),
            "loss": float(loss),
            "fit_time": fit_time,
            "predict_time": predict_time,
            "patch_size": self.patch_size,
            "objective_weight": float(self._weights[0]) if self.objectives else float("nan"),
        }
        last = self.trace.positions[-1]
        record["travel_px"] = (self.trace.steps["travel_px"][-1] if k else 0.0) + float(
            np.hypot(record["position"][0] - last[0], record["position"][1] - last[1]))
        K = self.stuck_window
        verdict = stuck_verdict(self.trace.steps["position"][-(K - 1):] + [record["position"]],
                                self.trace.steps["std_mean"][-(K - 1):] + [record["std_mean"]], self.scan_shape) \
            if k + 1 >= K else None
        record["stuck"] = float(bool(verdict and verdict.stuck))
        value = self._measure(choice, kind, k)
        record["step_time"] = time.perf_counter() - t_step
        maps = {"mean": mean.reshape(self.scan_shape), "std": std.reshape(self.scan_shape),
                "acq": acq.reshape(self.scan_shape)}
        self.trace.add_step(record, maps if self.settings.record_maps else None)
        self.trace.set_rng_state(self.rng.bit_generator.state)
        return StepResult(k, record["position"], kind, value, record, **maps)

    def iter_steps(self, n: int | None = None) -> Iterator[StepResult]:
        """Generator over up to ``n`` steps (default: until the budget); interventions may happen between yields."""
        if not self.started:
            self.start()
        count = 0
        while not self.done and (n is None or count < n):
            yield self.step()
            count += 1

    # -- resuming -----------------------------------------------------------------------------------------
    @classmethod
    def resume(cls, trace: Trace | str, microscope: Microscope, journal=None, append_journal: bool = False,
               model_factory=None, budget: int | None = None) -> "Experiment":
        """Continue a run from its trace, with the settings and interventions it had.

        ``trace`` is a :class:`Trace` or a path (HDF5 trace, journal, or run folder). Measured points are kept and
        not measured again; interventions (scalarizer, policy, patch size, objects) are re-applied; the random
        generator continues from its recorded state. The model is retrained from scratch on all points, so the
        picks after a resume are not bit-identical to an uninterrupted run. ``journal``: where to continue
        journaling (``append_journal=True`` appends to the journal the trace was read from). ``budget`` may
        extend the run.
        """
        if not isinstance(trace, Trace):
            trace = Trace.load(trace)
        settings = ExperimentSettings.from_dict(trace.settings)
        if budget is not None:
            settings.budget = int(budget)
        exp = cls(microscope, settings, dataset_info=trace.dataset, model_factory=model_factory)
        if exp.structural.shape != trace.structural.shape or not np.allclose(exp.structural, trace.structural):
            raise HAEInputError(
                "The microscope's structural image differs from the one recorded in the trace.",
                "resume on the same dataset / the same scan region the run started on.")
        exp.trace = trace
        # re-apply the state the interventions built, without recording them again
        for iv in trace.interventions:
            if iv["kind"] == "scalarizer":
                exp.scalarizer = Scalarizer.from_dict(iv["new"])
                exp.settings.scalarizer = exp.scalarizer.to_dict()
            elif iv["kind"] == "policy":
                exp.policy = policy_from_dict(iv["new"])
                exp.settings.policy = exp.policy.to_dict()
            elif iv["kind"] == "patch_size":
                exp.patch_size = exp.settings.patch_size = int(iv["new"])
        exp._set_patches(exp.patch_size)
        if trace.n_points:
            exp.measured[flat_index(trace.positions_array(), exp.scan_shape)] = True
        for obj in trace.objects:
            exp._apply_object(obj["mask"], obj["mode"])
        # the random state is recorded once all seeds are measured (older traces lack it but have steps)
        exp.started = trace.n_steps > 0 or trace.rng_state is not None
        if trace.rng_state is not None:
            exp.rng.bit_generator.state = trace.rng_state
        if journal is not None:
            if append_journal:
                trace.attach_journal(journal, append=True)
            else:
                trace.attach_journal(journal)
        trace.add_event(trace.n_steps, f"resumed with {trace.n_points} points and {trace.n_steps} steps measured")
        return exp

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
