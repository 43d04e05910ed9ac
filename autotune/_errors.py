class AutotuneError(Exception):
    """A usage error: a bad spec, a missing study, a refused operation. The message is one
    line that says what is wrong and how to mend it; the CLI prints it and exits 2."""


class SpecError(AutotuneError):
    """The study spec is malformed or asks for something impossible."""
