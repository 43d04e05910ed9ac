class TrialInputError(Exception):
    """A trial's model or dataset cannot be used as the spec describes; the message says
    what is wrong and how to mend it."""


class MetricError(Exception):
    """The user's metric function `metric` raised, or returned no float: the config is not to blame."""

    def __init__(self, metric: str, message: str) -> None:
        super().__init__(message)
        self.metric = metric
