class TrialInputError(Exception):
    """A trial's model or dataset cannot be used as the spec describes; the message says
    what is wrong and how to mend it."""
