"""Stand-in for the real StackStorm module of the same name (st2common.models.api).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
"""
