"""Entry point of the monitor renderer process: lower its priority before importing matplotlib, so that neither
its start nor its drawing takes CPU from napari's GUI thread or the training worker."""

import os


def main(conn) -> None:
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    from ._monitor_figure import serve

    serve(conn)
