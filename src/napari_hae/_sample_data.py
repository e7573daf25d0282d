"""npe2 sample-data contributions (File > Open Sample > Plasmonic nanoparticles STEM-EELS (simulated) (napari hAE))."""

from ._layers import dataset_layer_data


def nanoparticles_sample():
    from .core.data.samples import load_sample

    return dataset_layer_data(load_sample("nanoparticles"))
