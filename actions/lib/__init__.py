"""Plain-Python core of the dialog pack: no StackStorm imports below this package."""
