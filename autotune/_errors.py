class AutotuneError(Exception):
    """A usage error: a bad spec, a missing study, a refused operation. The message is one
    line that says what is wrong and how to mend it; the CLI prints it and exits 2."""


class Stopped(Exception):
    """A run stopped by a signal, cleanly: the CLI prints the message and exits 128 + signum."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class SpecError(AutotuneError):
    """The study spec is malformed or asks for something impossible."""
