"""Synthetic plasmonic-nanoparticle STEM-EELS dataset (low-loss), generated deterministically.

What it imitates (metal nanoparticles, e.g. Ag, on a thin carbon support, 1 nm scan step):

* **HAADF image.** Intensity ~ projected thickness of spheres, ``2 sqrt(r^2 - d^2)`` (Z-contrast of a uniform
  metal), on a weak support background, blurred by a 0.8-pixel Gaussian probe, with shot noise. Particles of radius
  3-7 px are placed singly and in touching clusters (chains of 2-5 particles) that do not overlap each other.
* **Zero-loss tail.** ``Z (E / E0)^-3`` falling from the spectrometer's first channel, slightly stronger on
  particles (more elastic/phonon scattering).
* **Collective dipole mode** of each cluster (``dipole`` map): a longitudinal mode whose energy red-shifts with
  cluster length (2.1 eV for a single particle, -0.18 eV per extra particle) and whose strength grows with cluster
  size. It is excited by aloof (outside) probe positions, decays as ``exp(-d / 3 px)`` with distance d to the
  cluster, is strongest along the cluster's long axis (``0.25 + 0.75 cos^2``), and has hot spots in the gaps where
  particles touch, as in gap-plasmon field enhancement. Inside particles it is suppressed (x0.3).
* **Edge (surface) mode** (``edge`` map) at 2.65 eV, localised within ~1.5 px of each particle's surface.
* **Bulk plasmon** (``bulk`` map) at 3.75 eV, proportional to the projected thickness (particle interiors).
* Peaks are Gaussians (FWHM 0.35-0.5 eV) on the tail; counts are Poisson noise draws.

Energy axis: 0.2-6.18 eV, 0.02 eV/channel (300 channels). Ground-truth maps of each mode's amplitude, the dipole
energy and the thickness are returned in ``SpectrumImage.ground_truth``; suggested bands (eV) are in
``BANDS``. The dataset depends only on ``seed`` and ``shape``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..dataset import EnergyAxis, SpectrumImage

BANDS = {"dipole": (1.2, 2.25), "edge": (2.45, 2.9), "bulk": (3.45, 4.05)}
ENERGY = EnergyAxis(size=300, offset=0.2, scale=0.02, units="eV")

_CLUSTER_SIZES = (1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5)


def _place_clusters(rng, shape, n_clusters, margin=4, gap=3.0, tries=4000):
    ny, nx = shape
    particles: list[tuple[float, float, float, int]] = []   # (cy, cx, r, cluster)
    contacts: list[tuple[float, float, int]] = []           # (gy, gx, cluster)
    clusters: list[dict] = []
    for _ in range(tries):
        if len(clusters) >= n_clusters:
            break
        size = int(rng.choice(_CLUSTER_SIZES))
        radii = rng.uniform(3.0, 7.0, size)
        cy, cx = rng.uniform(margin + 7, ny - margin - 7), rng.uniform(margin + 7, nx - margin - 7)
        angle = rng.uniform(0, np.pi)
        members = [(cy, cx, radii[0])]
        pair_contacts = []
        for k in range(1, size):
            py, px, pr = members[-1]
            a = angle + rng.normal(0, 0.35)
            d = 0.92 * (pr + radii[k])                       # touching (slight overlap = neck)
            ny_, nx_ = py + d * np.sin(a), px + d * np.cos(a)
            members.append((ny_, nx_, radii[k]))
            w = pr / (pr + radii[k])
            pair_contacts.append((py + w * (ny_ - py), px + w * (nx_ - px)))
        ok = all(margin + r <= y <= ny - 1 - margin - r and margin + r <= x <= nx - 1 - margin - r
                 for y, x, r in members)
        ok = ok and all(np.hypot(y - q[0], x - q[1]) > r + q[2] + gap
                        for y, x, r in members for q in particles)
        if not ok:
            continue
        c = len(clusters)
        particles += [(y, x, r, c) for y, x, r in members]
        contacts += [(gy, gx, c) for gy, gx in pair_contacts]
        pts = np.array([(y, x) for y, x, _ in members])
        if size > 1:
            _, _, vt = np.linalg.svd(pts - pts.mean(0))
            axis = vt[0]
        else:
            axis = np.array([np.sin(angle), np.cos(angle)])
        clusters.append({"size": size, "centroid": pts.mean(0), "axis": axis})
    return particles, contacts, clusters


def make_nanoparticles(shape: tuple[int, int] = (96, 96), seed: int = 7, n_clusters: int = 16,
                       dose: float = 1.0) -> SpectrumImage:
    """Generate the plasmonic nanoparticle STEM-EELS sample (see module docstring). ``dose`` scales counts."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    particles, contacts, clusters = _place_clusters(rng, shape, n_clusters)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)

    thickness = np.zeros(shape)
    surf_dist = np.full(shape, np.inf)         # signed distance to the nearest particle surface (px)
    cluster_dist = np.full((len(clusters), ny, nx), np.inf)
    for cy, cx, r, c in particles:
        d = np.hypot(yy - cy, xx - cx)
        thickness += 2.0 * np.sqrt(np.clip(r**2 - d**2, 0.0, None))
        sd = d - r
        surf_dist = np.where(np.abs(sd) < np.abs(surf_dist), sd, surf_dist)
        cluster_dist[c] = np.minimum(cluster_dist[c], sd)
    inside = thickness > 0

    # Modes
    bulk = thickness / thickness.max()
    edge = np.exp(-0.5 * (surf_dist / 1.5) ** 2)
    dip_amp = np.zeros((len(clusters), ny, nx))
    for c, cl in enumerate(clusters):
        strength = cl["size"] ** 0.8
        vy, vx = yy - cl["centroid"][0], xx - cl["centroid"][1]
        rr = np.hypot(vy, vx) + 1e-9
        cos2 = ((vy * cl["axis"][0] + vx * cl["axis"][1]) / rr) ** 2
        dip_amp[c] = strength * np.exp(-np.clip(cluster_dist[c], 0, None) / 3.0) * (0.25 + 0.75 * cos2)
    for gy, gx, c in contacts:
        dip_amp[c] += 1.5 * clusters[c]["size"] ** 0.8 * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * 1.5**2))
    dip_amp *= np.where(inside & (surf_dist < -1.0), 0.3, 1.0)[None]
    dominant = np.argmax(dip_amp, axis=0)
    dipole = dip_amp.max(axis=0)
    sizes = np.array([cl["size"] for cl in clusters])
    dipole_energy = 2.1 - 0.18 * (sizes[dominant] - 1)

    # Spectra (expected counts), then Poisson noise
    e = ENERGY.values
    def gauss(center, fwhm):
        s = fwhm / 2.3548
        return np.exp(-0.5 * ((e[None, None, :] - center[..., None]) / s) ** 2)
    zlp = (300.0 * (1 + 0.3 * bulk))[..., None] * (e / e[0])[None, None, :] ** -3.0
    clean = (zlp
             + 60.0 * dipole[..., None] * gauss(dipole_energy, 0.45)
             + 35.0 * edge[..., None] * gauss(np.full(shape, 2.65), 0.35)
             + 45.0 * bulk[..., None] * gauss(np.full(shape, 3.75), 0.5)
             + 2.0)
    spectra = rng.poisson(clean * dose).astype(np.float32) / np.float32(dose)

    haadf_clean = gaussian_filter(0.05 + thickness / thickness.max(), 0.8)
    haadf = rng.poisson(haadf_clean * 400.0).astype(np.float64) / 400.0

    truth = {"dipole": dipole, "edge": edge, "bulk": bulk, "dipole_energy": np.where(dipole > 0.05, dipole_energy, 0),
             "thickness": thickness}
    return SpectrumImage(structural=haadf, spectra=spectra, energy=ENERGY, pixel_size=1.0, pixel_units="nm",
                         name="nanoparticles", ground_truth=truth)
