"""One error type for bad user input, raised before any expensive work."""


class InputError(ValueError):
    """A user-supplied value is invalid. The message names the input, what was expected and what was given."""


def require(condition: bool, name: str, expected: str, got: object) -> None:
    """Raise InputError("name must be expected, got got") unless condition holds."""
    if not condition:
        raise InputError(f"{name} must be {expected}, got {got!r}")
