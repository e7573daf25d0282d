"""Where a run may measure: the seed positions, and the candidates of the next pick (objects of interest)."""

from __future__ import annotations

import numpy as np

from ..data.patches import flat_index
from ..errors import HAEInputError


def seed_indices(settings, scan_shape, rng: np.random.Generator, avoid: np.ndarray | None = None,
                 structural: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the seed positions: given, on a centred grid, random (drawn with ``rng``), at the
    brightest places of the ``structural`` image (:func:`bright_seeds`) or over what it shows
    (:func:`cover_seeds`). ``avoid`` (flat bool, the "avoid" objects drawn before the start): random, bright and
    cover seeds are chosen outside it; given or grid seeds inside it are refused (an avoid region is never
    measured, seeds included)."""
    if settings.seed_mode in IMAGE_SEEDS:
        if structural is None:
            raise HAEInputError(f"Seeds placed by the image ('{settings.seed_mode}') need the structural image.",
                                "pass it (or use another seed mode).")
        return _image_seeds(settings, scan_shape, rng, avoid, structural)
    flat = _seeds(settings, scan_shape, rng, avoid)
    if avoid is not None and avoid[flat].any():
        inside = [divmod(int(i), scan_shape[1]) for i in flat[avoid[flat]]]
        raise HAEInputError(f"Seed position(s) {[list(p) for p in inside]} (y, x) lie inside an 'avoid' object: "
                            "they would be measured where the run must not measure.",
                            "move or delete those seeds, or draw that object as 'visit'.")
    return flat


IMAGE_SEEDS = ("bright", "mixed", "cover")   # the seed modes that read the structural image


def _image_seeds(settings, scan_shape, rng, avoid, structural) -> np.ndarray:
    n, patch = int(settings.n_seeds), int(settings.patch_size)
    if settings.seed_mode == "cover":
        return cover_seeds(structural, n, patch, rng, avoid)
    bright = bright_seeds(structural, -(-n // 2) if settings.seed_mode == "mixed" else n, patch, avoid)
    if settings.seed_mode == "bright":
        return bright
    taken = np.zeros(scan_shape[0] * scan_shape[1], bool) if avoid is None else np.asarray(avoid, bool).copy()
    taken[bright] = True   # the other half at random, elsewhere: where the image does not point
    free = np.flatnonzero(~taken)
    return np.sort(np.concatenate([bright, rng.choice(free, min(n - len(bright), len(free)), replace=False)]))


def outside_avoid(n_positions: int, avoid: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """The positions outside the "avoid" objects (flat bool); refused when fewer than the ``n`` ``what`` asked."""
    free = np.ones(n_positions, bool) if avoid is None else ~np.asarray(avoid, bool).ravel()
    if free.sum() < n:
        raise HAEInputError(f"{n} {what} do not fit outside the 'avoid' objects ({int(free.sum())} positions left).",
                            "draw smaller avoid objects or ask for fewer seeds.")
    return free


def bright_seeds(structural: np.ndarray, n: int, patch_size: int, avoid: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` brightest positions of the structural image, lightly smoothed (a Gaussian of 1 px: one hot pixel
    is not a particle), at least half a patch apart (one seed per bright feature before a second on any), outside
    ``avoid``: what a microscopist measures first by eye, given to the model to start from. Sorted flat indices."""
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(np.asarray(structural, dtype=np.float64), 1.0, mode="nearest")
    ny, nx = image.shape
    free = outside_avoid(ny * nx, avoid, n, "bright seeds")
    score = np.where(free, image.ravel(), -np.inf)
    yy, xx = np.divmod(np.arange(ny * nx), nx)
    gap, chosen = max(1.0, patch_size / 2), []
    while len(chosen) < n and np.isfinite(score.max()):
        i = int(np.argmax(score))
        chosen.append(i)
        score[(yy - yy[i]) ** 2 + (xx - xx[i]) ** 2 < gap ** 2] = -np.inf   # that feature is seeded
    if len(chosen) < n:   # fewer bright features than seeds: the brightest of the rest
        rest = np.where(free, image.ravel(), -np.inf)
        rest[chosen] = -np.inf
        chosen += [int(i) for i in np.argsort(-rest, kind="stable")[: n - len(chosen)]]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def image_features(structural: np.ndarray, patch_size: int) -> np.ndarray:
    """(positions, 8): what the structural image shows around each position, standardized: its mean and its
    local contrast (standard deviation) in Gaussian windows of 1, 2, a quarter and half a patch (pixels)."""
    from scipy.ndimage import gaussian_filter

    image = np.asarray(structural, dtype=np.float64)
    columns = []
    for sigma in (1.0, 2.0, max(1.0, patch_size / 4), max(1.0, patch_size / 2)):
        mean = gaussian_filter(image, sigma, mode="nearest")
        columns += [mean, np.sqrt(np.maximum(gaussian_filter(image ** 2, sigma, mode="nearest") - mean ** 2, 0.0))]
    f = np.stack([c.ravel() for c in columns], axis=1)
    spread = f.std(axis=0)
    return (f - f.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def cover_seeds(structural: np.ndarray, n: int, patch_size: int, rng: np.random.Generator,
                avoid: np.ndarray | None = None) -> np.ndarray:
    """``n`` positions that cover what the structural image shows, the most different first: from one drawn at
    random, each next one where the image looks least like any chosen so far (farthest-point order over
    :func:`image_features`), outside ``avoid``. Particles, their edges, the support, vacuum and odd spots each get
    a seed before any gets a second. Sorted flat indices."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    f = image_features(structural, patch_size)
    free = np.flatnonzero(outside_avoid(len(f), avoid, n, "cover seeds"))
    f = f[free]
    first = int(rng.integers(len(free)))   # the first at random, from the run's generator
    chosen, far = [first], np.linalg.norm(f - f[first], axis=1)
    while len(chosen) < n:
        if far.max() > 0:
            k = int(np.argmax(far))
        else:   # what is left looks like what is chosen (a flat image): at random among the rest
            k = int(rng.choice(np.setdiff1d(np.arange(len(free)), chosen)))
        chosen.append(k)
        far = np.minimum(far, np.linalg.norm(f - f[k], axis=1))
    return np.sort(free[chosen].astype(np.int64))


def _seeds(settings, scan_shape, rng, avoid) -> np.ndarray:
    ny, nx = scan_shape
    if settings.seed_mode == "given":
        pos = np.asarray(settings.seed_positions, dtype=int).reshape(-1, 2)
        bad = (pos[:, 0] < 0) | (pos[:, 0] >= ny) | (pos[:, 1] < 0) | (pos[:, 1] >= nx)
        if bad.any():
            raise HAEInputError(f"Seed position(s) {pos[bad].tolist()} lie outside the {ny} x {nx} scan field.",
                                f"use 0 <= y < {ny} and 0 <= x < {nx}.")
        flat = flat_index(pos, scan_shape)
        if len(np.unique(flat)) != len(flat):
            raise HAEInputError("Seed positions contain duplicates.", "give each seed position once.")
        return flat
    if settings.seed_mode == "grid":
        k = int(np.ceil(np.sqrt(settings.n_seeds)))
        ys = np.linspace(0, ny - 1, k + 2)[1:-1].round().astype(int)
        xs = np.linspace(0, nx - 1, k + 2)[1:-1].round().astype(int)
        flat = np.unique(flat_index(np.array([(y, x) for y in ys for x in xs]), scan_shape))
        return flat[: settings.n_seeds]
    if avoid is None or not avoid.any():
        return np.sort(rng.choice(ny * nx, int(settings.n_seeds), replace=False))
    free = np.flatnonzero(outside_avoid(ny * nx, avoid, int(settings.n_seeds), "random seeds"))
    return np.sort(rng.choice(free, int(settings.n_seeds), replace=False))


def pick_mask(measured: np.ndarray, avoid: np.ndarray, visit: list[np.ndarray]) -> tuple[np.ndarray, str]:
    """Where the next pick may fall, and its kind: inside the first unsatisfied "visit" object that still has
    free positions, else anywhere not measured and not in an "avoid" object."""
    available = ~measured & ~avoid
    for v in visit:
        if (v & available).any():
            return v & available, "visit"
    return available, "policy"


def check_budget(s, n_positions: int) -> None:
    """Refuse a budget that is negative, seeds that are none, or more points than the scan has."""
    if s.budget < 0:
        raise HAEInputError(f"Budget {s.budget!r} must be a whole number >= 0.", "give the number of steps.")
    n_seed = s.n_seed_points
    if n_seed < 1:
        raise HAEInputError("At least one seed point is needed to train the first model.",
                            "use n_seeds >= 1 (typical 5-20), or give seed positions.")
    if n_seed + s.budget > n_positions:
        raise HAEInputError(
            f"Seeds ({n_seed}) plus budget ({s.budget}) exceed the {n_positions} scan positions.",
            f"use a budget of at most {n_positions - n_seed} steps.",
        )
