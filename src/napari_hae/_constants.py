DATASET_KEY = "napari_hae_dataset"
# napari's menu path to the bundled sample (one sample: napari lists it under Open Sample with the plugin's name)
SAMPLE_MENU = "File > Open Sample > Plasmonic nanoparticles STEM-EELS (simulated) (napari hAE)"
