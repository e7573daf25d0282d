"""Errors raised for bad input: each message names the problem and the fix."""


class HAEInputError(ValueError):
    """Input data or settings that napari-hae cannot use as given.

    The message always says what is wrong and how to fix it.
    """

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}")


class HAERunError(RuntimeError):
    """A run cannot continue for now (instrument fault, model failure). The trace measured so far is intact and
    the run can be resumed once the cause is fixed."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}")


class MicroscopeFault(HAERunError):
    """The microscope failed to acquire (raised, timed out or returned an unusable spectrum) after retries."""


class ModelFitError(HAERunError):
    """The DKL model could not be fitted, even with more jitter and a fresh feature extractor."""
