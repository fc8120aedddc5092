"""Stand-in for the real StackStorm module of the same name (st2common.exceptions).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""


class StackStormBaseException(Exception):
    """
    The root of the exception class hierarchy for all
    StackStorm server exceptions.
    """

    pass
