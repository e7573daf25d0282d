"""The record schema, written once: what a step records, the point kinds and the stored maps.

The trace's in-memory columns, its HDF5 layout and its journal records are all derived from :class:`StepRecord`;
a step record with a field that is not in the schema is an error, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

FORMAT_VERSION = 2     # 2: settings hold typed specs (model spec added); version 1 traces still load
POINT_KINDS = ("seed", "policy", "visit", "user")
MAP_NAMES = ("mean", "std", "acq")
NAN = math.nan


@dataclass
class StepRecord:
    """One policy decision. Values in scalarizer units unless stated; times in seconds."""

    position: tuple[int, int]      # the chosen position (y, x), pixels
    policy: str                    # label of the policy that chose it
    scalarizer: str                # label of the scalarizer in force
    acq_value: float = NAN         # acquisition score of the choice
    next_std: float = NAN          # predicted std at the choice
    next_mean: float = NAN         # predicted mean at the choice
    std_mean: float = NAN          # predicted std over all positions: mean, spread and quantiles
    std_std: float = NAN
    std_q10: float = NAN
    std_q50: float = NAN
    std_q90: float = NAN
    mean_max: float = NAN          # largest predicted mean (signed by the goal: best predicted)
    best_so_far: float = NAN       # best measured value under the goal, before this step's measurement
    loss: float = NAN              # final training loss of this step's fit
    fit_time: float = NAN
    predict_time: float = NAN
    step_time: float = NAN
    patch_size: float = NAN        # px
    travel_px: float = NAN         # cumulative probe travel since the seeds, px
    stuck: float = NAN             # 1.0 when the stuck-run detector fired at this step
    objective_weight: float = NAN  # multi-objective mode: weight of the primary objective this step
    pred_std: float = NAN          # predictive std of the measurement at the choice (latent std and noise; on a
    noise_std: float = NAN         # log-scale model half the central 68% interval), and the noise's own
    pred_lo: float = NAN           # central 95% predictive interval of the measurement at the choice
    pred_hi: float = NAN
    z_score: float = NAN           # where the measured value fell in the prediction (|z| <= 2: inside pred_lo..hi;
                                   # on the model's scale: log(value / next_mean) / spread on a log scale)
    log_score: float = NAN         # log density of the measured value under the prediction (higher: better)
    overconfident: float = NAN     # 1.0 when the calibration monitor judged the model overconfident at this step
    acq_ties: float = NAN          # available candidates sharing the chosen (best) score: > 1 means a tie-break
    grid_mean_err: float = NAN     # grid predictor: RMS difference of its mean from the exact posterior's on a
    grid_std_err: float = NAN      # random sample of positions, and of its std (scalarizer units; NaN: exact)
    blanked_s: float = NAN         # seconds the beam was blanked before this step's measurement (NaN: not blanked)
    spread_factor: float = NAN     # the predictive spread drawn this many times the model's (the run's misses; NaN:
                                   # a run from before the recalibration, 1 throughout)
    dkl_log_score: float = NAN     # model 'dkl_or_gp': the log density the DKL and the plain GP each gave the
    gp_log_score: float = NAN      # measured value before it was measured, unwidened (the choice's records)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def text_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.type == "str")

    @classmethod
    def float_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.type == "float")

    @classmethod
    def row(cls, record: dict) -> dict:
        """``record`` checked against the schema, as a complete row (missing scalars: NaN, e.g. older traces).
        Raises ValueError naming any field the schema does not have."""
        unknown = set(record) - set(cls.names())
        if unknown:
            raise ValueError(f"Step record field(s) {sorted(unknown)} are not in the record schema "
                             f"(napari_hae.core.record.schema.StepRecord); add them there first.")
        r = cls(**record)
        out = {f: getattr(r, f) for f in cls.names()}
        out["position"] = tuple(int(c) for c in out["position"])
        for k in cls.float_names():
            out[k] = float(out[k])
        return out


STEP_SCALARS = StepRecord.float_names()


_FORMAT1_MODEL_KEYS = ("embed_dim", "hidden", "kernel", "lr")


def migrate_settings(settings: dict) -> dict:
    """A recorded settings dict read in today's meaning (every trace is read through this):

    - format 1 kept the DKL's parameters at the top level: they move into the model spec;
    - runs record their model's parameters in full since the DKL's default became a cold restart every step; a
      DKL recorded without ``restart`` was warm-started (the default before), and is rebuilt so when the run is
      resumed or replayed;
    - a DKL recorded without ``max_train``, ``predictor`` or ``refit_points`` (before issue 15) trained on every
      point at every step and predicted exactly everywhere: it is rebuilt so;
    - a DKL recorded without ``embed_dim`` had a 2-D embedding (the default until issue 27's ``"auto"``);
    - a DKL or plain GP recorded without ``noise`` (before issue 27's counting noise) learned one noise variance;
    - a run recorded without ``recalibrate`` drew the model's own predictive spread.
    """
    if not isinstance(settings, dict):
        return settings
    settings = dict(settings)
    settings.setdefault("recalibrate", False)
    settings.setdefault("seed_mode", "random")   # before seed modes: random seeds
    old = {k: settings.pop(k) for k in _FORMAT1_MODEL_KEYS if k in settings}
    model = settings.get("model") or {"name": "dkl", "params": old}
    if model.get("name", "dkl") == "dkl" and "restart" not in (model.get("params") or {}):
        model = {**model, "params": {**(model.get("params") or {}), "restart": "warm"}}
    if model.get("name", "dkl") == "dkl":
        params = model.get("params") or {}
        before = {k: v for k, v in (("max_train", 100_000), ("predictor", "exact"), ("refit_points", 0),
                                    ("warp", "none"), ("kernel", "rbf"), ("embed_dim", 2))
                  if k not in params}
        model = {**model, "params": {**params, **before}}
    if model.get("name", "dkl") in ("dkl", "gp") and "noise" not in (model.get("params") or {}):
        model = {**model, "params": {**(model.get("params") or {}), "noise": "learned"}}
    settings["model"] = model
    return settings
