"""Errors the pack reports to a person: each says what to change, never a secret."""


class DialogError(Exception):
    """Base of every error the pack raises on purpose. `details` (a dict without secrets) is
    merged into the failed execution's result, e.g. the health of every host."""

    def __init__(self, *args, details=None):
        super().__init__(*args)
        self.details = details

    def to_result(self):
        return dict(self.details or {}, error=str(self))


class InputError(DialogError, ValueError):
    """A parameter a user gave is not one the pack accepts: one line naming the field, what is
    wrong with the value and, when there is a list, the values it may take ("listed" names
    that list: "allowed values", "known deployments")."""

    def __init__(self, field, message, allowed=None, listed="allowed values"):
        self.field = field
        self.allowed = list(allowed) if allowed is not None else None
        text = "%s: %s" % (field, message)
        if self.allowed is not None:
            text += "; %s: %s" % (listed, ", ".join(str(a) for a in self.allowed) or "none")
        super().__init__(text)

    def to_result(self):
        result = dict(self.details or {}, error=str(self), field=self.field)
        if self.allowed is not None:
            result["allowed"] = self.allowed
        return result


class CatalogError(DialogError):
    """The tier catalog shipped with the pack is inconsistent (a bug in the pack)."""


class ProviderError(DialogError):
    """A provider refused or failed a request; the message says which profile and provider."""


class CredentialsError(ProviderError):
    """The provider refused the profile's credentials."""


class QuotaError(ProviderError):
    """The provider's account limits do not allow what the plan asks for."""


class ResourceFailed(ProviderError):
    """A resource ended in a failed state, or did not become ready in time."""
