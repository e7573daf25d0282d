DATASET_KEY = "napari_hae_dataset"
