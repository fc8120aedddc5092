"""Named deployment targets from the pack config, resolved without ever exposing a secret."""

from lib.errors import InputError

SECRET_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                 "digitalocean_token", "registry_password", "spaces_secret_access_key")
# Secret fields inside a profile's object: (object field, secret field).
NESTED_SECRETS = (("object_storage", "secret_access_key"),)
REDACTED = "********"


def resolve_profile(config, name=None):
    """The profile called `name`, else the config's default profile.

    With no profiles configured at all and none asked for by name, an empty profile is
    returned: planning needs no credentials.
    """
    config = config or {}
    profiles = config.get("profiles") or {}
    chosen = name or config.get("default_profile") or "default"
    if chosen in profiles:
        return dict(profiles[chosen], name=chosen)
    if not name and not profiles:
        return {"name": chosen}
    field = "profile" if name else "default_profile"
    raise InputError(field, "no profile named %r in the pack config" % chosen, sorted(profiles))


def redact(profile):
    """A copy safe to log or return: every credential replaced by a fixed mask."""
    safe = {key: (REDACTED if key in SECRET_FIELDS and value else value)
            for key, value in profile.items()}
    for outer, inner in NESTED_SECRETS:
        if isinstance(safe.get(outer), dict) and safe[outer].get(inner):
            safe[outer] = dict(safe[outer], **{inner: REDACTED})
    return safe
