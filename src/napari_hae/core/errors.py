"""Errors raised for bad input: each message names the problem and the fix."""


class HAEInputError(ValueError):
    """Input data or settings that napari-hae cannot use as given.

    The message always says what is wrong and how to fix it.
    """

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} Fix: {fix}")
