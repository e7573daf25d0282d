"""Bundled sample datasets, generated deterministically (nothing is downloaded)."""

from .nanoparticles import make_nanoparticles

SAMPLES = {"nanoparticles": make_nanoparticles}


def load_sample(name: str, **kwargs):
    """Return the sample :class:`~napari_hae.core.data.dataset.SpectrumImage` called ``name``."""
    from ...errors import HAEInputError

    if name not in SAMPLES:
        raise HAEInputError(f"Unknown sample dataset {name!r}.", f"choose one of {sorted(SAMPLES)}.")
    return SAMPLES[name](**kwargs)
