"""Stand-in for the real StackStorm module of the same name (st2common.exceptions.content).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Only the exception alias matching raises is reproduced.
"""

__all__ = ["ParseException"]


class ParseException(ValueError):
    pass
