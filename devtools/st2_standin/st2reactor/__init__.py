"""Stand-in for the real StackStorm module of the same name (st2reactor).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""

__version__ = "3.10dev"
