"""Provider drivers: one module per provider, all behind the interface in providers.base."""

import importlib

from lib.catalog import PROVIDERS
from lib.errors import InputError

_MODULES = {"aws": "lib.providers.aws", "digitalocean": "lib.providers.digitalocean",
            "static": "lib.providers.static"}


def open_provider(provider, profile, region, calls=None, progress=None):
    """The driver for `provider`, imported on demand so that boto3 loads only for AWS."""
    if provider not in PROVIDERS:
        raise InputError("provider", "unknown value %r" % (provider,), PROVIDERS)
    module = importlib.import_module(_MODULES[provider])
    return module.Driver(profile=profile, region=region, calls=calls, progress=progress)
