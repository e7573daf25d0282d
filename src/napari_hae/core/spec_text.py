"""Registry entries written as text, for command lines and docks: ``NAME[:PARAM=VALUE[,PARAM=VALUE...]]``."""

from __future__ import annotations

from .errors import HAEInputError


def parse_name_params(text: str, example: str) -> dict:
    """``"ei:xi=0.05"`` -> ``{"name": "ei", "params": {"xi": 0.05}}``; values are floats. ``example`` is shown in
    the error message of malformed text."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        try:
            if not eq:
                raise ValueError
            params[k.strip()] = float(v)
        except ValueError:
            raise HAEInputError(f"Parameter {item!r} in {text!r} is not name=value (a number).",
                                f"write e.g. {example}.") from None
    return {"name": name.strip(), "params": params}
