"""Typed settings of a run: one set of defaults for the core, the command line, the dock and sweeps.

Every settings object refuses unknown keys (a typo is an error naming the valid keys, never a silently ignored
value) and checks types on construction and on assignment. Plug-ins are named by specs ``{"name", "params"}``
whose parameters are checked against the registry's parameter specs when the run builds them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import HAEInputError

# the defaults used everywhere (core, CLI, dock, sweep)
DEFAULT_SCALARIZER = {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}, "background": None}
# log EI: measured best in benchmarks/discovery.py. Its parameters' defaults live in the policy's parameter table
# only (the registry: the dock's fields, the CLI's options and a run's resolved settings all read them there)
DEFAULT_POLICY = {"name": "ei", "params": {}}
DEFAULT_MODEL = {"name": "dkl", "params": {}}


def _input_error(exc: ValidationError, cls: type) -> HAEInputError:
    """A pydantic error as a sentence naming the key, the problem and the valid keys."""
    problems, fixes = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or cls.__name__
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, HAEInputError):   # a nested settings object's own message
            problems.append(f"In {loc!r}: {inner.problem}")
            fixes.append(inner.fix.rstrip("."))
        elif err["type"] == "literal_error":
            problems.append(f"Unknown {loc.replace('_', ' ')} {err.get('input')!r}.")
            fixes.append(f"use one of {err['ctx']['expected']}")
        elif err["type"] in ("int_from_float", "int_parsing", "int_type"):
            problems.append(f"Setting {loc!r} = {err.get('input')!r} is not an integer.")
            fixes.append(f"give {loc} as a whole number")
        elif err["type"] == "extra_forbidden":   # at this level: nested specs raise their own (branch above)
            problems.append(f"Unknown setting {loc!r} in {cls.__name__}.")
            fixes.append(f"use one of the valid keys: {', '.join(sorted(cls.model_fields))}")
        else:
            problems.append(f"Setting {loc!r} = {err.get('input')!r}: {err['msg']}.")
            fixes.append(f"give {loc} a valid value")
    return HAEInputError(" ".join(problems), "; ".join(fixes) + ".")


class Spec(BaseModel):
    """Base of every settings object: unknown keys refused, assignments validated, errors as HAEInputError."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _input_error(exc, type(self)) from None

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise _input_error(exc, type(self)) from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class PluginSpec(Spec):
    """A registered plug-in and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ScalarizerSpec(PluginSpec):
    name: str = DEFAULT_SCALARIZER["name"]
    params: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SCALARIZER["params"]))
    background: tuple[float, float] | None = None   # power-law fit window (eV) subtracted first


class PolicySpec(PluginSpec):
    name: str = DEFAULT_POLICY["name"]
    params: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_POLICY["params"]))


class ModelSpec(PluginSpec):
    name: str = DEFAULT_MODEL["name"]


class ExperimentSettings(Spec):
    """Settings of a run. Positions and patch sizes in pixels; band limits (in ``scalarizer``) in eV.

    ``budget`` counts policy steps after the seeds. Policies score standardized targets (see the policy package).
    """

    patch_size: int = Field(16, ge=1)
    scalarizer: ScalarizerSpec = Field(default_factory=ScalarizerSpec)
    # multi-objective mode: further scalarizers optimised together with ``scalarizer`` (random scalarisation of
    # their standardized values, new every step; Experiment.pareto_set() gives the non-dominated points)
    objectives: list[ScalarizerSpec] | None = None
    goal: Literal["max", "min"] = "max"
    policy: PolicySpec = Field(default_factory=PolicySpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    n_seeds: int = 10
    # bright: the structural image's brightest places; mixed: half of them there, half at random; cover: over what
    # the image shows, the most different places first (SEED_MODES)
    # (default mixed: on the real maps' brightness-like targets 1 and 5 measurements to the top 1% against 13 and
    # 18.5 with random seeds, 12 and 8 runs; docs/performance.md, issue 27)
    seed_mode: Literal["random", "mixed", "bright", "grid", "given", "cover"] = "mixed"
    seed_positions: list[tuple[int, int]] | None = None
    budget: int = 60
    random_seed: int = Field(0, ge=0, le=2**63 - 1)
    fit_iterations_first: int = Field(150, ge=1)   # the first fit (and after a new target or patch size)
    fit_iterations: int = Field(60, ge=1)          # fits of later steps (from fresh weights with the default model)
    record_maps: bool = True
    map_every: int = Field(0, ge=0)                # store maps every k steps (and the last); 0: auto, see maps_every
    acquire_retries: int = Field(2, ge=0)          # further attempts after a failed acquisition
    acquire_timeout: float | None = 120.0          # seconds per acquisition beyond the dwell; None: no timeout
    acquire_retry_wait: float = Field(0.5, ge=0)   # seconds before the first retry (grows linearly)
    dwell: float | None = Field(None, gt=0)        # seconds per spectrum, passed to the instrument; None: its own
    blank_between: bool = True                     # blank the beam between acquisitions (while the model fits)
    # acquire while the model learns: 1 chooses the next point while the current one is measured (that one pending,
    # its neighbourhood penalised), 0 measures, then learns, then chooses; None: 1 on a live instrument with a
    # dwell of 0.1 s or more (or its own exposure), else 0 (the run records what it resolved to)
    pipeline_depth: int | None = Field(None, ge=0, le=1)
    # follow the specimen's drift during the run: every ``drift_every`` acquisitions the structural image is acquired
    # again (a live instrument that can), registered to the run's, and later positions are sent where the specimen
    # now is (0: off; a resume registers the image in any case)
    drift_every: int = Field(0, ge=0)
    # draw the predictive spread (maps, policies, the calibration monitor) wider when the run's last measurements
    # missed their predicted intervals more often than a calibrated model would (run.diagnostics.spread_factor)
    recalibrate: bool = True

    def maps_every(self, n_positions: int) -> int:
        """Steps between stored per-step maps: ``map_every``, or with 0 one stored step per 65,536 positions'
        worth (every step up to 256 x 256, every 16th at 1024 x 1024: 12 MB of maps a step would be 24 GB in
        2,000 steps). The last step's maps are always kept (:attr:`Trace.latest_maps`)."""
        return int(self.map_every) or max(1, -(-int(n_positions) // 65_536))

    def stores_maps(self, step: int, n_positions: int) -> bool:
        """Whether step ``step``'s maps are recorded (every :meth:`maps_every` steps, and the budget's last)."""
        return self.record_maps and (step % self.maps_every(n_positions) == 0 or step == self.budget - 1)

    @property
    def n_seed_points(self) -> int:
        """How many seed points the run measures: the given positions, or ``n_seeds``."""
        return len(self.seed_positions or []) if self.seed_mode == "given" else int(self.n_seeds)

    @field_validator("seed_positions", mode="before")
    @classmethod
    def _whole_pixels(cls, v):
        if v is None:
            return v
        out = []
        for p in v:
            p = list(p)
            if len(p) != 2 or not all(_is_whole(c) for c in p):
                raise ValueError(f"seed position {p} is not two whole pixel coordinates (y, x)")
            out.append((int(p[0]), int(p[1])))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ExperimentSettings:
        """Settings from a dict (a trace's record, a sweep grid, JSON). Unknown keys are refused. Recorded settings
        of older formats are brought up to date when the trace is read (``record.schema.migrate_settings``)."""
        return cls(**dict(d))


def _is_whole(c) -> bool:
    try:
        return float(c) == int(float(c))
    except (TypeError, ValueError, OverflowError):
        return False


# the seed modes a user chooses (the CLI's --seed-mode, the dock's "seeds at"); "given" is set by giving positions
SEED_MODES = tuple(m for m in get_args(ExperimentSettings.model_fields["seed_mode"].annotation) if m != "given")
