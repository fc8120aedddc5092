"""Per-deployment secrets: generated once, kept encrypted in the StackStorm datastore.

Nothing here is ever defaulted: the public installer shipped fixed passwords and keys, which is
exactly what a deployment must not share with every other one. Values stay inside this module,
the renderer and the files it marks secret; results and logs name the datastore key only.
"""

import base64
import json
import secrets as random_source

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lib.errors import InputError

KEY_TEMPLATE = "dialog.%s.secrets"


def _token(length):
    return lambda: random_source.token_urlsafe(length)


def _server_keys():
    private = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    return {
        "server_key_private": base64.b64encode(private.private_bytes(
            raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())).decode(),
        "server_key_public": base64.b64encode(
            private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)).decode(),
    }


GENERATORS = {
    "postgres_password": _token(24),
    "replication_password": _token(24),
    "turn_username": lambda: "dialog-" + random_source.token_hex(4),
    "turn_password": _token(24),
    "server_secret": _token(48),
    "admin_login": lambda: "admin",
    "admin_password": _token(18),
    "s3_access_key": lambda: random_source.token_hex(10).upper(),
    "s3_secret_key": _token(30),
}
PAIRED = {("server_key_private", "server_key_public"): _server_keys}


def datastore_key(deployment):
    return KEY_TEMPLATE % deployment


def ensure_secrets(datastore, deployment):
    """The deployment's secrets, generating only the missing ones; (secrets, names created).

    datastore: StackStorm's action service (get_value/set_value with local, decrypt, encrypt).
    Secrets are written back only when something was generated, encrypted, in system scope.
    """
    key = datastore_key(deployment)
    stored = datastore.get_value(key, local=False, decrypt=True)
    values = json.loads(stored) if stored else {}
    created = []
    for name, generate in GENERATORS.items():
        if not values.get(name):
            values[name] = generate()
            created.append(name)
    for names, generate in PAIRED.items():
        if not all(values.get(n) for n in names):
            values.update(generate())
            created.extend(names)
    if created:
        datastore.set_value(key, json.dumps(values, sort_keys=True), local=False, encrypt=True)
    return values, created


def load_secrets(datastore, deployment):
    """The stored secrets; a clear error when the deployment has none yet."""
    stored = datastore.get_value(datastore_key(deployment), local=False, decrypt=True)
    if not stored:
        raise InputError("deployment", "no secrets are stored for deployment %r (datastore key "
                         "%s); run dialog.deploy for it first"
                         % (deployment, datastore_key(deployment)))
    return json.loads(stored)
