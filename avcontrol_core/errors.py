"""One error type for bad user input, raised before any expensive work; one warning type for what the user must see."""

import warnings


class InputError(ValueError):
    """A user-supplied value is invalid. The message names the input, what was expected and what was given."""


class PackWarning(UserWarning):
    """The pack changed or could not fully honour what the user asked for (a prompt cut at the encoder's limit, a
    damaged packet skipped, a LoRA only partly matching). The core only emits it (`warn`); the node layer records the
    warnings a node raised and shows them in the UI, the CLI prints them."""


def warn(message: str) -> None:
    """Emit a PackWarning the user will see (the host shows it on the node that raised it)."""
    warnings.warn(message, PackWarning, stacklevel=2)


def require(condition: bool, name: str, expected: str, got: object) -> None:
    """Raise InputError("name must be expected, got got") unless condition holds."""
    if not condition:
        raise InputError(f"{name} must be {expected}, got {got!r}")
