"""The hAE dock in small panels over the core (napari-animation style): each panel reads and writes widgets and
hands plain core objects (specs, scalarizers) to the dock; the run controller drives the core's run driver in a
worker thread. No domain rule lives here."""
