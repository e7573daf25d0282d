"""Discovery you can trust: how often runs find the best structures, how fast, and how honest the model's
uncertainty is, on the bundled sample and the real EELS/EDS data in ../shared/data.

    python benchmarks/discovery.py --quick                        # every task, 4 seeds, 45 steps, DKL and plain GP
    python benchmarks/discovery.py --seeds 10 --steps 60          # all datasets and policies (long)
    python benchmarks/discovery.py --datasets sample --policies default --seeds 10 --model-param ensemble=1
    python benchmarks/discovery.py --datasets sample cuzn --policies default --pipeline 1   # pipelined decisions

Per run (policy picks only; a seed that lands in the top 1% is counted apart as a seed hit):
steps to the first top-1% and top-0.1% position, "stuck" = no top-1% pick within the budget, best fraction of the
true maximum after 30 and 60 steps, and at n = 20, 50, 100 measured points the RMSE and the 1/2-sigma coverage of
the model's predictive distribution (latent std and the fitted observation noise together, as the calibration
monitor uses it; the central 68% / 95% intervals, on the model's log scale where it warps) on all unmeasured
positions, on the unmeasured top-1% positions, and by region: where the structural image shows features (above
Otsu's threshold) and the background. "raster picks" counts policy
picks decided among more than one position with the same acquisition score (a degenerate, all-equal map).

Tasks (``--tasks``, alias ``--datasets``): a dataset and a physics target on it; besides each dataset's first
target, targets the structural image does not show (Zn-rich rather than Cu-rich particles on CuZn, the carbon on
SiO2). A task is hard when no model-free rule (random, brightness or darkness order raw or smoothed, a grid at
equal dose, by its median over placements) reaches its top 1% within 15 measurements.

Prints one table per task; the last line is a JSON object (``tasks``: per task the model's median measurements to
the top 1% against each baseline's, hard or not, the 1-sigma coverage of unmeasured positions;
``stuck_fraction``, ``median_steps_to_top1``,
``random_median_steps``, ``coverage_1sigma``, ``coverage_2sigma``, ``coverage_2sigma_top1`` at n = 50, over the
default policy's runs of the first dataset, plus per-dataset figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SOURCES = {
    "sample": {"sample": "nanoparticles"},
    "cuzn": {"spectrum": str(SHARED / "cuzn_eels/CuZn_EELS_mapping_tutorial.hspy"),
             "image": str(SHARED / "cuzn_eels/CuZn_HAADF.hspy")},
    "sio2": {"spectrum": str(SHARED / "sio2_eds/SiO2_EDS_Spectrum_Image.hspy"),
             "image": str(SHARED / "sio2_eds/SiO2_HAADF_Image.hspy")},
}
# A task: a dataset and the physics target a microscopist would look for on it. "hard" is not declared here: it is
# measured (no model-free rule reaches the top 1% within HARD_AT measurements).
DATASETS = {
    "sample": {"data": "sample", "patch": 16, "what": "plasmon band 1.2-2.25 eV (synthetic)",
               "scalarizer": {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}}},
    # the sample's edge mode against its dipole mode: particle edges and corners, not the brightest particles
    "sample_edge": {"data": "sample", "patch": 16, "what": "edge / dipole plasmon band ratio (synthetic)",
                    "scalarizer": {"name": "band_ratio", "params": {"a": 2.45, "b": 2.9, "a2": 1.2, "b2": 2.25}}},
    "cuzn": {"data": "cuzn", "patch": 8, "what": "Cu L2,3 edge, power-law background",
             "scalarizer": {"name": "band_integral", "params": {"a": 920.0, "b": 960.0},
                            "background": [800.0, 900.0]}},
    "sio2": {"data": "sio2", "patch": 12, "what": "Si K line",
             "scalarizer": {"name": "band_integral", "params": {"a": 1640.0, "b": 1840.0}}},
    # Zn-rich rather than Cu-rich: the ZnO particles of the Cu/ZnO catalyst (HAADF barely tells Zn, Z = 30, from
    # Cu, Z = 29; ZnO is the lighter, dimmer phase)
    "cuzn_zn_excess": {"data": "cuzn", "patch": 8, "what": "Zn L2,3 minus Cu L2,3 net counts (a user function)",
                       "scalarizer": {"name": "zn_minus_cu", "params": {}}},
    # the carbon of the support film and contamination: the C K line, which the particles' brightness does not show
    "sio2_carbon": {"data": "sio2", "patch": 12, "what": "C K line",
                    "scalarizer": {"name": "band_integral", "params": {"a": 200.0, "b": 350.0}}},
    # carbon where there is little silica: C K counts per Si K count (a ratio map, as EDS users draw them), the
    # support film and contamination away from the particles; its top 1% shares a quarter of the C K line's
    "sio2_c_per_si": {"data": "sio2", "patch": 12, "what": "C K / (Si K + 5 counts) ratio (a user function)",
                      "scalarizer": {"name": "c_per_si", "params": {}}},
}
HARD_AT = 15
POLICIES = {"default": None, "ei": {"name": "ei", "params": {}}, "ucb": {"name": "ucb", "params": {"beta": 4.0}},
            "mu": {"name": "mu", "params": {}}, "random": {"name": "random", "params": {}},
            "plain_gp": None,   # the default policy on a plain GP (model "gp": block means of each patch, no network)
            "atomai_dkl": None,  # the default policy on AtomAI's dklGPR workflow (a fresh model fitted every step)
            # the default policy on the DKL with its network pretrained on the image's patches (image_pretrained.py)
            "pretrained_dkl": None, "pretrained_dkl_slow": None, "pca_gp": None,
            "spatial_gp": None}  # the default policy on a GP of the scan coordinates alone (spatial_gp.py)
CALIBRATION_AT = (20, 50, 100)
_CACHE: dict = {}


def _register_task_scalarizers() -> None:
    """The tasks' user functions, registered as a user would (``register_scalarizer``)."""
    from napari_hae.core.targets.scalarizers import (
        SCALARIZERS,
        band_integral,
        band_sum,
        register_scalarizer,
        subtract_power_law,
    )

    if "zn_minus_cu" in SCALARIZERS.names():
        return

    @register_scalarizer("zn_minus_cu")
    def zn_minus_cu(spectra, energy):
        """Zn L2,3 (1010-1060 eV) minus Cu L2,3 (920-960 eV) net counts, each over a power law fitted just before
        its edge (960-1005 and 800-900 eV): positive where Zn outweighs Cu."""
        zn = band_integral(subtract_power_law(spectra, energy, (960.0, 1005.0)), energy, a=1010.0, b=1060.0)
        cu = band_integral(subtract_power_law(spectra, energy, (800.0, 900.0)), energy, a=920.0, b=960.0)
        return zn - cu

    @register_scalarizer("c_per_si")
    def c_per_si(spectra, energy):
        """C K (200-350 eV) counts per Si K (1640-1840 eV) count, with 5 counts added to Si K: a pixel with no
        silicon reads as its carbon over 5 (a pseudo-count, so that 0 Si counts on a ~50-count pixel is not an
        infinite ratio)."""
        return band_sum(spectra, energy, a=200.0, b=350.0) / (band_sum(spectra, energy, a=1640.0, b=1840.0) + 5.0)


def _data(task):
    name = DATASETS[task]["data"]
    _register_task_scalarizers()
    if name not in _CACHE:
        from napari_hae.core.data.io import load_source

        _CACHE[name] = load_source(SOURCES[name])
    return _CACHE[name]


def _coverage(mean, z, truth, mask):
    """RMSE of the predicted ``mean`` (scalarizer units; the median on a warped scale) and the share of the
    ``truth`` inside the central 68% / 95% predictive intervals (|z| <= 1, 2) at the positions of ``mask``."""
    if not mask.any():
        return {"rmse": float("nan"), "cov1": float("nan"), "cov2": float("nan")}
    z = np.abs(z[mask])
    return {"rmse": float(np.sqrt(np.mean((truth[mask] - mean[mask]) ** 2))),
            "cov1": float(np.mean(z <= 1)), "cov2": float(np.mean(z <= 2))}


def _features(structural) -> np.ndarray:
    """Where the structural image shows something (particles, film): above Otsu's threshold of the image smoothed by
    1 px; the rest is the background, where a map's positions are mostly empty and an honest model's intervals say
    little about the features."""
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu

    smooth = gaussian_filter(np.asarray(structural, dtype=np.float64), 1.0, mode="nearest")
    return smooth > threshold_otsu(smooth)


def _model_factory(job: dict):
    """AtomAI's dklGPR workflow for ``atomai_dkl`` (benchmarks/atomai_workflow.py: a fresh dklGPR fitted from
    scratch every step, KISS-GP), at our network and our first fit's iterations (its own defaults, [1000, 500, 50]
    and 200 epochs in float64, take 42 s a step here); the DKL with a network pretrained on the image's patches for
    ``pretrained_dkl``, ``pretrained_dkl_slow`` and ``pca_gp`` (benchmarks/image_pretrained.py); a GP on the scan
    coordinates alone for ``spatial_gp`` (benchmarks/spatial_gp.py); else None (the settings' model)."""
    from image_pretrained import VARIANTS, factory

    if job["policy"] in VARIANTS:
        return factory(job["policy"], _data(job["dataset"]).structural, DATASETS[job["dataset"]]["patch"])
    if job["policy"] == "spatial_gp":
        import spatial_gp

        return spatial_gp.factory(_data(job["dataset"]).structural, DATASETS[job["dataset"]]["patch"])
    if job["policy"] != "atomai_dkl":
        return None
    from atomai_workflow import AtomaiDKL

    return lambda d, s: AtomaiDKL(d, training_cycles=s.fit_iterations_first,
                                  hidden=tuple(s.model.params.get("hidden", (64, 32))), precision="single")


def run_one(job: dict) -> dict:
    """One run of the default experiment on ``job``'s dataset with ``job``'s policy and seed."""
    from napari_hae.core.analysis.metrics import measurements_to_top, random_median_steps, steps_to_top, top_mask
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings

    ds = DATASETS[job["dataset"]]
    data = _data(job["dataset"])
    settings = {"patch_size": ds["patch"], "scalarizer": ds["scalarizer"], "budget": job["steps"],
                "n_seeds": 10, "random_seed": job["seed"], "record_maps": False,
                "seed_mode": job.get("seed_mode") or ExperimentSettings().seed_mode}
    if job["policy_spec"] is not None:
        settings["policy"] = job["policy_spec"]
    if job.get("fit_iterations"):
        settings["fit_iterations"] = job["fit_iterations"]
    if job.get("model") or job.get("model_params"):
        settings["model"] = {"name": job.get("model") or "dkl", "params": job["model_params"]}
    settings["pipeline_depth"] = job.get("pipeline") or 0
    settings["recalibrate"] = job.get("recalibrate", True)
    exp = Experiment(SimulatedMicroscope(data, seed=job["seed"]), settings, model_factory=_model_factory(job))
    truth = np.asarray(data.scalarize(exp.scalarizer), dtype=float)
    top1 = top_mask(truth, 0.01).ravel()
    features = _features(data.structural).ravel()
    flat_truth = truth.ravel()
    h = ds["patch"] // 2
    inner = np.zeros(truth.shape, bool)
    inner[h:truth.shape[0] - h, h:truth.shape[1] - h] = True
    border = ~inner.ravel()
    cal, t0, step_times, ties = {}, time.perf_counter(), [], 0
    for res in _steps(exp):
        step_times.append(res.record["step_time"])
        n_train = exp.trace.n_points - 1
        # a pick decided among (nearly) all available positions scoring the same: the raster-scan failure
        ties += int(res.record["acq_ties"] >= 0.5 * (flat_truth.size - n_train) and job["policy"] != "random")
        if n_train in CALIBRATION_AT and not job.get("pipeline"):   # pipelined: the model is a step ahead
            measured = np.zeros(flat_truth.size, bool)
            pos = exp.trace.positions_array()[:-1]
            measured[pos[:, 0] * truth.shape[1] + pos[:, 1]] = True
            # the step's predictive distribution (the model is refitted only at the next step): z on its own scale
            # (drawn as wide as the run drew it: its recalibration from its misses, run.diagnostics.spread_factor)
            post = exp.model.posterior(exp.patches).widened(res.record["spread_factor"])
            z = post.z_scores(exp.objective.sign * flat_truth)
            cal[n_train] = {"all": _coverage(res.mean.ravel(), z, flat_truth, ~measured),
                            "top1": _coverage(res.mean.ravel(), z, flat_truth, ~measured & top1),
                            "features": _coverage(res.mean.ravel(), z, flat_truth, ~measured & features),
                            "background": _coverage(res.mean.ravel(), z, flat_truth, ~measured & ~features)}
    tr = exp.trace
    exp.close()
    pos, kinds = tr.positions_array(), tr.kinds
    values = np.asarray(tr.values, float)
    policy = np.array([k != "seed" for k in kinds])

    def best_at(n):
        keep = np.flatnonzero(~policy)
        keep = np.concatenate([keep, np.flatnonzero(policy)[:n]])
        return float(values[keep].max() / flat_truth.max())

    return {**{k: job[k] for k in ("dataset", "policy", "seed")},
            "random_median": random_median_steps(flat_truth.size - int((~policy).sum()), int(top1.sum())),
            "steps_to_top1": steps_to_top(pos, kinds, truth, 0.01, seeds_count=False),
            "measurements_to_top1": measurements_to_top(pos, truth, 0.01),
            "steps_to_top01": steps_to_top(pos, kinds, truth, 0.001, seeds_count=False),
            "seed_hit_top1": bool(top1[pos[~policy, 0] * truth.shape[1] + pos[~policy, 1]].any()),
            "best30": best_at(30), "best60": best_at(60), "raster_picks": ties,
            "median_step_s": float(np.median(step_times)), "calibration": cal,
            # border zone: positions whose patch reaches past the scan edge (reflect-padded patches)
            "border_area": float(border.mean()), "border_top1": float(border[top1].mean()),
            "border_picks": float(border[pos[policy, 0] * truth.shape[1] + pos[policy, 1]].mean()),
            "flagged_stuck": bool(np.nansum(tr.step_array("stuck")) > 0),
            "first_flag": (int(np.flatnonzero(np.nan_to_num(tr.step_array("stuck")))[0]) + 1
                           if np.nansum(tr.step_array("stuck")) > 0 else None),
            "best_curve": [float(v) / float(flat_truth.max()) for v in tr.step_array("best_so_far")],
            "z": [float(v) for v in tr.step_array("z_score")],
            "wall_s": time.perf_counter() - t0}


def _steps(exp):
    """The run's steps: sequential, or through the run driver with its pipeline (``pipeline_depth`` 1)."""
    if not exp.settings.pipeline_depth:
        yield from exp.iter_steps()
        return
    from napari_hae.core.run.driver import RunDriver
    from napari_hae.core.run.results import StepResult

    yield from (item for item in RunDriver(exp).events() if isinstance(item, StepResult))


def _med(xs, never):
    xs = [never if x is None else x for x in xs]
    return float(np.median(xs)) if xs else float("nan")


def _failed(r) -> bool:
    return r["steps_to_top1"] is None or r["best60"] < 0.9


def summarise(rows: list[dict], steps: int) -> dict:
    """Figures of one (dataset, policy) group."""
    never = steps + 1
    out = {"runs": len(rows),
           "stuck_fraction": float(np.mean([r["steps_to_top1"] is None for r in rows])),
           "median_steps_to_top1": _med([r["steps_to_top1"] for r in rows], never),
           "median_measurements_to_top1": _med([r["measurements_to_top1"] for r in rows], never + 10),
           "random_median_exact": float(np.median([r["random_median"] for r in rows])),
           "median_steps_to_top01": _med([r["steps_to_top01"] for r in rows], never),
           "top01_rate": float(np.mean([r["steps_to_top01"] is not None for r in rows])),
           "seed_hits": int(sum(r["seed_hit_top1"] for r in rows)),
           "best30_median": float(np.median([r["best30"] for r in rows])),
           "best60_median": float(np.median([r["best60"] for r in rows])),
           "best60_min": float(np.min([r["best60"] for r in rows])),
           "below_0.9": int(sum(r["best60"] < 0.9 for r in rows)),
           "raster_picks": int(sum(r["raster_picks"] for r in rows)),
           # the stuck-run detector against the outcome: a run is stuck if it never reached the top 1% or ended
           # below 0.9 of the maximum
           "stuck_runs": int(sum(_failed(r) for r in rows)),
           "stuck_runs_flagged": int(sum(_failed(r) and r["flagged_stuck"] for r in rows)),
           "good_runs_flagged": int(sum(not _failed(r) and r["flagged_stuck"] for r in rows)),
           "median_step_s": float(np.median([r["median_step_s"] for r in rows])),
           "border_area": rows[0].get("border_area"), "border_top1": rows[0].get("border_top1"),
           "border_picks": float(np.mean([r.get("border_picks", np.nan) for r in rows]))}
    for n in CALIBRATION_AT:
        cs = [r["calibration"][n] for r in rows if n in r["calibration"]]
        if cs:
            out[f"n{n}"] = {f"{where}_{k}": float(np.nanmean([c[where][k] for c in cs]))
                            for where in ("all", "top1", "features", "background") for k in ("rmse", "cov1", "cov2")}
    return out


def _print_baselines(d: str, a, result: dict) -> None:
    """Measurements to the first top-1% position (seeds included) by the model-free rules, beside the runs'."""
    from napari_hae.core.analysis.metrics import baselines
    from napari_hae.core.targets.scalarizers import Scalarizer

    data = _data(d)
    truth = np.asarray(data.scalarize(Scalarizer.from_dict(DATASETS[d]["scalarizer"])), dtype=float)
    b = baselines(data.structural, truth, budget=10 + a.steps)
    result["baselines"][d] = b
    runs = ", ".join(f"{pol} {result['datasets'][d][pol]['median_measurements_to_top1']:.1f}"
                     for pol in result["datasets"][d])
    print(f"measurements to the first top-1% position, seeds included (runs: median; seed mode {a.seed_mode}): "
          f"{runs}; brightness order {b['brightness']}, smoothed {b['brightness_smoothed']}; darkness order "
          f"{b['darkness']}, smoothed {b['darkness_smoothed']}; random (median) {b['random_median']}; a grid of "
          f"{b['grid_points']} points (equal dose) centred {'never' if b['grid'] is None else b['grid']}, median over "
          f"its {b['grid_placements']} placements {b['grid_median']:.1f} ({b['grid_never']:.0%} never)")


# the model-free rules; the grid by its median over placements (as random sampling by its median: the model's
# figure is a median over runs, a grid placed once is one draw), the centred grid printed beside it
RULES = ("random_median", "brightness", "brightness_smoothed", "darkness", "darkness_smoothed", "grid_median")


def task_summary(d: str, result: dict, steps: int) -> dict:
    """One task's line of the JSON: the model's median (measurements, seeds included) against every baseline's,
    whether it is hard (no model-free rule within HARD_AT) and the model's 1-sigma coverage of unmeasured
    positions at n = 50. A grid placement or a run that never reaches the top 1% counts as its budget + 1 in a median
    (a bound: the truth is later)."""
    runs, b = result["datasets"][d], result["baselines"][d]
    rules = {k: b[k] for k in RULES}
    rules["random"], rules["grid"] = rules.pop("random_median"), rules.pop("grid_median")
    model = runs.get("default", next(iter(runs.values())))
    baselines = {**rules, **({"plain_gp": runs["plain_gp"]["median_measurements_to_top1"]} if "plain_gp" in runs
                             else {})}
    best = min(baselines.values())
    return {"name": d, "dataset": DATASETS[d]["data"], "real": DATASETS[d]["data"] != "sample",
            "what": DATASETS[d]["what"], "hard": min(rules.values()) >= HARD_AT,
            "model_median": model["median_measurements_to_top1"],
            "baselines": baselines, "grid_centred": b["grid"], "best_baseline": best,
            "model_within_half_best": model["median_measurements_to_top1"] <= best / 2,
            "model_within_2x_plus_5": model["median_measurements_to_top1"] <= 2 * best + 5,
            "coverage_1sigma_unmeasured": model.get("n50", {}).get("all_cov1"),
            "coverage_1sigma_by_region": {where: model.get("n50", {}).get(f"{where}_cov1")
                                          for where in ("features", "background", "top1")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="every task, 4 seeds, 45 steps (the coverage at 50 points), the default policy on the DKL "
                        "and on the plain GP (about 10 minutes on 2 cores)")
    p.add_argument("--datasets", "--tasks", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                   help="tasks: a dataset and its target (sample, cuzn and sio2 are the datasets' first targets)")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--also-policy", action="append", default=[], metavar="NAME[:K=V,...]",
                   help="a further policy to compare, e.g. ucb:beta=2 (repeatable)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed, first_seed + 1, ...")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", help="a registered model (default: the settings' default model)")
    p.add_argument("--model-param", action="append", default=[], metavar="K=V",
                   help="a parameter of the model (repeatable; JSON values)")
    p.add_argument("--fit-iterations", type=int, help="training iterations of later fits (the settings' default)")
    p.add_argument("--rows", help="write every run's row to this JSON-lines file")
    from napari_hae.core.run.settings import SEED_MODES, ExperimentSettings

    p.add_argument("--seed-mode", choices=SEED_MODES, default=ExperimentSettings().seed_mode,
                   help="where the 10 seeds go (bright: the structural image's brightest places)")
    p.add_argument("--pipeline", type=int, choices=(0, 1), default=0,
                   help="1: decide each next point while the current one is measured (as on a live instrument)")
    p.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                   help="draw the model's own predictive spread (not widened after the run's misses)")
    a = p.parse_args(argv)
    for text in a.also_policy:
        from napari_hae.core.analysis.sweep import parse_policy

        POLICIES[text] = parse_policy(text)
        a.policies = [*a.policies, text]
    if a.quick:
        a.datasets, a.policies, a.seeds, a.steps = list(DATASETS), ["default", "plain_gp"], 4, 45
    missing = [d for d in a.datasets if DATASETS[d]["data"] != "sample" and
               not Path(SOURCES[DATASETS[d]["data"]]["spectrum"]).exists()]
    if missing:
        print(f"skipping {missing}: ../shared/data is not here", file=sys.stderr)
        a.datasets = [d for d in a.datasets if d not in missing]
    params = {}
    for kv in a.model_param:
        k, _, v = kv.partition("=")
        params[k] = json.loads(v)
    jobs = [{"dataset": d, "policy": pol, "policy_spec": POLICIES[pol], "seed": s, "steps": a.steps,
             "model_params": {} if pol == "plain_gp" else params,
             "model": "gp" if pol == "plain_gp" else a.model, "fit_iterations": a.fit_iterations,
             "pipeline": a.pipeline, "seed_mode": a.seed_mode, "recalibrate": a.recalibrate}
            for d in a.datasets for pol in a.policies for s in range(a.first_seed, a.first_seed + a.seeds)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    if a.rows:
        Path(a.rows).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {"wall_s": round(time.perf_counter() - t0, 1), "seeds": a.seeds, "steps": a.steps,
              "model": a.model, "model_params": params, "fit_iterations": a.fit_iterations, "pipeline": a.pipeline,
              "seed_mode": a.seed_mode, "recalibrate": a.recalibrate, "datasets": {}, "baselines": {}}
    for d in a.datasets:
        print(f"\n## {d} ({a.seeds} seeds, {a.steps} steps; steps are policy picks, seed hits apart)\n")
        print("| policy | stuck | median steps top 1% | top 0.1% reached | median steps top 0.1% | seed hits | "
              "best@30 | best@60 (min) | runs < 0.9 | raster picks | 1σ cov n=50 | 2σ cov n=50 | "
              "2σ cov top1% n=50 | RMSE n=50 (top1%) | stuck flagged (false alarms) | s/step |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        result["datasets"][d] = {}
        for pol in a.policies:
            s = summarise([r for r in rows if r["dataset"] == d and r["policy"] == pol], a.steps)
            result["datasets"][d][pol] = s
            c = s.get("n50", {})
            print(f"| {pol} | {s['stuck_fraction']:.0%} | {s['median_steps_to_top1']:.1f} | {s['top01_rate']:.0%} | "
                  f"{s['median_steps_to_top01']:.1f} | {s['seed_hits']} | {s['best30_median']:.2f} | "
                  f"{s['best60_median']:.2f} ({s['best60_min']:.2f}) | {s['below_0.9']} | {s['raster_picks']} | "
                  f"{c.get('all_cov1', float('nan')):.2f} | {c.get('all_cov2', float('nan')):.2f} | "
                  f"{c.get('top1_cov2', float('nan')):.2f} | {c.get('all_rmse', float('nan')):.3g} "
                  f"({c.get('top1_rmse', float('nan')):.3g}) | {s['stuck_runs_flagged']}/{s['stuck_runs']} "
                  f"({s['good_runs_flagged']}/{s['runs'] - s['stuck_runs']}) | {s['median_step_s']:.3f} |")
        s0 = next(iter(result["datasets"][d].values()))
        print(f"\nrandom sampling, exact (hypergeometric): median {s0['random_median_exact']:.0f} steps to the top 1%")
        _print_baselines(d, a, result)
        for pol in a.policies:
            s = result["datasets"][d][pol]
            print(f"{pol}: border zone (patch reaches past the edge) {s['border_area']:.0%} of the area, "
                  f"{s['border_top1']:.0%} of the top 1%, {s['border_picks']:.0%} of the policy's picks")
    result["tasks"] = [task_summary(d, result, a.steps) for d in a.datasets]
    for t in result["tasks"]:
        print(f"task {t['name']} ({t['what']}): {'hard' if t['hard'] else 'easy'}; model {t['model_median']:.1f} "
              f"measurements, best baseline {t['best_baseline']:.1f}; within half of it: {t['model_within_half_best']}"
              f"; 1-sigma coverage of unmeasured positions at 50 points {t['coverage_1sigma_unmeasured']} (by region: "
              + ", ".join(f"{k} {v:.2f}" for k, v in t["coverage_1sigma_by_region"].items() if v is not None) + ")")
    first = result["datasets"][a.datasets[0]]
    main_pol = "default" if "default" in first else next(iter(first))
    m = first[main_pol]
    result.update(stuck_fraction=m["stuck_fraction"], median_steps_to_top1=m["median_steps_to_top1"],
                  random_median_steps=m["random_median_exact"],
                  random_policy_median_steps=first.get("random", {}).get("median_steps_to_top1"),
                  coverage_1sigma=m.get("n50", {}).get("all_cov1"),
                  coverage_2sigma=m.get("n50", {}).get("all_cov2"),
                  coverage_2sigma_top1=m.get("n50", {}).get("top1_cov2"),
                  median_step_s=m["median_step_s"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
