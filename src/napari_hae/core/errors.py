"""Errors raised for bad input: each message names the problem and the fix."""


def sentence(text) -> str:
    """``text`` (an error or a string) as one sentence ending in exactly one full stop, for messages that go on
    after it ("...: {sentence(exc)} The trace measured so far is kept."): no "kept.." when the error ends in one."""
    t = str(text).rstrip()
    return t if t.endswith((".", "!", "?")) else t + "."


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


class InstrumentError(RuntimeError):
    """Raised by a microscope adapter for a condition of the instrument. Plain exceptions from ``acquire`` count as
    transient (retried); these subclasses tell the loop more."""


class InstrumentRefused(InstrumentError):
    """The instrument refuses this request (a coordinate out of range, a setting it cannot take): retrying would
    not help, so the run pauses at once with the instrument's reason."""


class InstrumentDisconnected(InstrumentError):
    """The connection or session to the instrument is lost: the adapter's ``reconnect()`` is tried (if it has one)
    before the acquisition is retried."""
