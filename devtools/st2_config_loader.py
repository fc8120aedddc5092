"""A pack config as StackStorm registers and loads it, with the local datastore behind st2kv.

Follows StackStorm 3.9.0's code (unchanged on master), Apache-2.0 (StackStorm's licence;
copyright The StackStorm Authors and Extreme Networks):

- registration (`st2ctl reload --register-configs`: ConfigsRegistrar -> ConfigAPI.validate ->
  st2common/util/pack.py validate_config_against_schema), through st2common.util.schema
  (StackStorm's own where st2common imports, else the port in devtools/st2_standin). st2 only
  checks the values there and stores them as written;
- loading, as every python action and sensor gets its config:
  st2common/util/config_loader.py ContentPackConfigLoader: Jinja expressions rendered with
  st2kv.system and st2kv.user (st2common/util/templating.py and the KeyValueLookup /
  UserKeyValueLookup of st2common/services/keyvalues.py, the decrypt_kv filter of
  st2common/expressions/functions/datastore.py), every rendered value of a `secret: true` field
  decrypted (st2common/services/config.py deserialize_key_value), then the schema's defaults
  filled in, nested objects, additionalProperties / patternProperties and array items included.

The config loader offers st2kv only: `config_context` belongs to action parameters, not to
pack configs. Of st2's Jinja filters only decrypt_kv is provided, so a config using another one
(to_json_string, regex_replace, ...) is refused here although st2 would render it.

Why not devtools/st2_standin/st2common/util/config_loader.py: that stand-in is importable only
where the real st2common is not, and the real ContentPackConfigLoader reads the config, its
schema and the datastore from MongoDB. The local runner needs one loader that reads files and
the local datastore in both cases, with arguments the real class does not take.

The datastore passed in provides lookup(scope, name) -> the stored value (ciphertext for an
encrypted item) or None, with scope "st2kv.system" or "st2kv.user" (user-scoped names are
"<user>:<name>", as st2 stores them), and crypto_key, the st2_crypto.AESKey it encrypts with
(st2's [keyvalue] encryption_key_path, which decrypt_kv also reads).
"""

import copy
import re

import jsonschema

from st2_crypto import symmetric_decrypt

__all__ = ["ConfigValidationError", "ContentPackConfigLoader", "validate_config_against_schema"]

DATASTORE_PARENT_SCOPE = "st2kv"
SYSTEM_SCOPE, USER_SCOPE = "system", "user"
FULL_SYSTEM_SCOPE, FULL_USER_SCOPE = "st2kv.system", "st2kv.user"
USER_SEPARATOR = ":"
SYSTEM_USER = "stanley"  # st2.conf [system_user] user: who loads a config without a user
JINJA_EXPRESSIONS_START_MARKERS = ["{{", "{%"]


class ConfigValidationError(ValueError):
    """The config would not register: st2 raises this message (jsonschema.ValidationError or
    ValueValidationException); `errors` lists every problem as '"dotted.path": message'."""

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = list(errors or [message])


def _util_schema():
    """st2common.util.schema: StackStorm's own where st2common imports, else the port in
    devtools/st2_standin (devtools/local_runner.py puts it on sys.path then)."""
    from st2common.util import schema as util_schema  # pylint: disable=import-outside-toplevel
    return util_schema


def _error_path(error):
    return ".".join(str(p) for p in error.path)


def _all_errors(util_schema, schema, instance):
    """Every error of what validate() checked (st2 reports the best match only)."""
    schema = util_schema.modify_schema_allow_default_none(schema=schema)
    instance = util_schema.assign_default_values(instance=instance, schema=schema)
    errors = sorted(util_schema.CustomValidator(schema).iter_errors(instance),
                    key=lambda e: [str(p) for p in e.path])
    return ['"%s": %s' % (_error_path(e), e.message) if e.path else e.message for e in errors]


# ---- st2common/util/pack.py validate_config_against_schema ------------------------------------

def validate_config_against_schema(config_schema, config_object, config_path, pack_name=None):
    """The config checked as registration checks it: ConfigValidationError where st2 refuses
    it, else the values with defaults filled in (which st2 drops: it stores them as written)."""
    util_schema = _util_schema()
    pack_name = pack_name or "unknown"
    schema = util_schema.get_schema_for_resource_parameters(
        parameters_schema=config_schema, allow_additional_properties=True)
    try:
        cleaned = util_schema.validate(instance=config_object, schema=schema,
                                       cls=util_schema.CustomValidator, use_default=True,
                                       allow_default_none=True)
    except jsonschema.ValidationError as e:
        message = 'Failed validating attribute "%s" in config for pack "%s" (%s): %s' % (
            _error_path(e), pack_name, config_path, e.message)
        raise ConfigValidationError(
            message, _all_errors(util_schema, schema, config_object) or [message]) from None
    # st2 looks at the top-level keys only: a nested secret with decrypt_kv registers, and then
    # fails to load (decrypted twice).
    for key in cleaned:
        value = cleaned.get(key)
        if is_jinja_expression(value) and "decrypt_kv" in value:
            if config_schema.get(key) is None:
                # st2 calls config_schema.get(key).get("secret") here and fails with
                # AttributeError: the config does not register.
                raise ConfigValidationError(
                    "'NoneType' object has no attribute 'get' (st2 cannot register a "
                    "decrypt_kv expression on %r, a key the config schema does not have)" % key)
            if config_schema.get(key).get("secret"):
                raise ConfigValidationError(
                    'Values specified as "secret: True" in config schema are automatically '
                    'decrypted by default. Use of "decrypt_kv" jinja filter is not allowed for '
                    "such values. Please check the specified values in the config or the "
                    "default values in the schema.")
    return cleaned


# ---- st2common/util/jinja.py, templating.py, services/keyvalues.py -------------------------

def is_jinja_expression(value):
    if not value or not isinstance(value, str):
        return False
    return any(marker in value for marker in JINJA_EXPRESSIONS_START_MARKERS)


class _BaseKeyValueLookup(object):
    scope = None
    _key_prefix = None

    def get_key_name(self):
        key_name = self._key_prefix.split(":", 1)
        key_name = key_name[1] if len(key_name) >= 2 else key_name[0]
        return ".".join([DATASTORE_PARENT_SCOPE, self.scope, key_name])


class KeyValueLookup(_BaseKeyValueLookup):
    """st2kv.system in a template: each attribute step looks the dotted name up."""

    scope = SYSTEM_SCOPE

    def __init__(self, datastore, key_prefix=None, cache=None, scope=FULL_SYSTEM_SCOPE):
        self._datastore = datastore
        self._key_prefix = key_prefix or ""
        self._value_cache = cache or {}
        self._scope = scope

    def __str__(self):
        return self._value_cache[self._key_prefix]

    def __int__(self):
        return int(float(self))

    def __float__(self):
        return float(str(self))

    def __getitem__(self, key):
        return self._get(key)

    def __getattr__(self, name):
        return self._get(name)

    def _get(self, name):
        key = "%s.%s" % (self._key_prefix, name) if self._key_prefix else name
        self._value_cache[key] = self._get_kv(key)
        return KeyValueLookup(self._datastore, key_prefix=key, cache=self._value_cache,
                              scope=self._scope)

    def _get_kv(self, key):
        value = self._datastore.lookup(self._scope, key)
        return value if value is not None else ""


class UserKeyValueLookup(_BaseKeyValueLookup):
    """st2kv.user in a template: the keys of the user the config is loaded for."""

    scope = USER_SCOPE

    def __init__(self, datastore, user, key_prefix=None, cache=None, scope=FULL_USER_SCOPE):
        self._datastore = datastore
        self._key_prefix = key_prefix or ""
        self._value_cache = cache or {}
        self._user = user
        self._scope = scope

    def __str__(self):
        return self._value_cache[self._key_prefix]

    def __getitem__(self, key):
        return self._get(key)

    def __getattr__(self, name):
        return self._get(name)

    def _get(self, name):
        if self._key_prefix:
            key = "%s.%s" % (self._key_prefix, name)
        else:
            key = "%s%s%s" % (self._user, USER_SEPARATOR, name)  # UserKeyReference.ref
        self._value_cache[key] = self._get_kv(key)
        return UserKeyValueLookup(self._datastore, self._user, key_prefix=key,
                                  cache=self._value_cache, scope=self._scope)

    def _get_kv(self, key):
        value = self._datastore.lookup(self._scope, key)
        return value if value is not None else ""


def _decrypt_kv_filter(crypto_key):
    def decrypt_kv(value):
        original_value = value
        is_kv_item = isinstance(value, (KeyValueLookup, UserKeyValueLookup))
        if is_kv_item:
            value = str(value)
        if is_kv_item and value == "":
            raise ValueError('Referenced datastore item "%s" doesn\'t exist or it contains an '
                             "empty string" % original_value.get_key_name())
        return symmetric_decrypt(crypto_key, value)
    return decrypt_kv


def render_template_with_system_and_user_context(value, user, datastore):
    # Late import: jinja2 is needed only when a config has an expression.
    import jinja2  # pylint: disable=import-outside-toplevel
    import jinja2.sandbox  # pylint: disable=import-outside-toplevel

    if not isinstance(value, str):
        raise TypeError("The template value needs to be of type string (was %s)." % type(value))
    env = jinja2.sandbox.SandboxedEnvironment(  # nosec
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["decrypt_kv"] = _decrypt_kv_filter(datastore.crypto_key)
    env.tests["in"] = lambda item, items: item in items
    context = {DATASTORE_PARENT_SCOPE: {
        SYSTEM_SCOPE: KeyValueLookup(datastore, scope=FULL_SYSTEM_SCOPE),
        USER_SCOPE: UserKeyValueLookup(datastore, user=user, scope=FULL_USER_SCOPE)}}
    return env.from_string(value).render(context)


# ---- st2common/util/config_loader.py ---------------------------------------------------------

class ContentPackConfigLoader(object):
    """The config an action or sensor of `pack_name` gets: `values` as registered (the
    output of validate_config_against_schema, or {} when the pack has no config file) and
    `schema` (config.schema.yaml, or {}), resolved for `user` against `datastore`."""

    def __init__(self, pack_name, schema, values, datastore, user=None):
        self.pack_name = pack_name
        self.user = user or SYSTEM_USER
        self.schema = schema or {}
        self.values = values or {}
        self.datastore = datastore

    def get_config(self):
        config = copy.deepcopy(self.values)
        config = self._assign_dynamic_config_values(schema=self.schema, config=config)
        return self._assign_default_values(schema=self.schema, config=config)

    @staticmethod
    def _get_object_properties_schema(object_schema, object_keys=None):
        """One schema per key of the object: properties first, then every matching
        patternProperties schema (merged), then additionalProperties when it is a schema."""
        flattened = {key: {} for key in object_keys}
        properties_schema = object_schema.get("properties", {})
        flattened.update(properties_schema)
        extra_keys = set(object_keys) - set(properties_schema.keys())
        if not extra_keys:
            return flattened
        pattern_properties = object_schema.get("patternProperties", {})
        if pattern_properties and isinstance(pattern_properties, dict):
            patterns = {re.compile(raw): sub for raw, sub in pattern_properties.items()}
            for key in list(extra_keys):
                key_schemas = [sub for pattern, sub in patterns.items() if pattern.search(key)]
                if key_schemas:
                    composed = {}
                    for sub in key_schemas:
                        composed.update(sub)
                    flattened[key] = composed
                    extra_keys.remove(key)
            if not extra_keys:
                return flattened
        additional = object_schema.get("additionalProperties", {})
        if additional and isinstance(additional, dict):
            for key in extra_keys:
                flattened[key] = additional
        return flattened

    @staticmethod
    def _get_array_items_schema(array_schema, items_count=0):
        flattened = []
        items_schema = array_schema.get("items", [])
        if isinstance(items_schema, dict):
            flattened.extend([items_schema] * items_count)
        else:
            flattened.extend(items_schema)
        count = len(flattened)
        if count >= items_count:
            return flattened
        additional = array_schema.get("additionalItems", {})
        if additional and isinstance(additional, dict):
            flattened.extend([additional] * (items_count - count))
        return flattened

    def _assign_dynamic_config_values(self, schema, config, parent_keys=None):
        parent_keys = parent_keys or []
        config_is_dict = isinstance(config, dict)
        config_is_list = isinstance(config, list)
        iterator = list(config.items()) if config_is_dict else list(enumerate(config))
        for item_key, item_value in iterator:
            if config_is_dict:
                schema_item = schema.get(item_key, {})
            if config_is_list and isinstance(schema, list):
                try:
                    schema_item = schema[item_key]
                except IndexError:
                    schema_item = {}
            elif config_is_list:
                schema_item = schema
            current_keys = parent_keys + [str(item_key)]
            if isinstance(item_value, dict):
                properties_schema = self._get_object_properties_schema(
                    schema_item, object_keys=item_value.keys())
                self._assign_dynamic_config_values(
                    schema=properties_schema, config=config[item_key], parent_keys=current_keys)
            elif isinstance(item_value, list):
                items_schema = self._get_array_items_schema(
                    schema_item, items_count=len(config[item_key]))
                self._assign_dynamic_config_values(
                    schema=items_schema, config=config[item_key], parent_keys=current_keys)
            elif is_jinja_expression(item_value):
                config[item_key] = self._get_datastore_value_for_expression(
                    key=".".join(current_keys), value=item_value, config_schema_item=schema_item)
        return config

    def _assign_default_values(self, schema, config):
        iterator = schema.items() if isinstance(schema, dict) else enumerate(schema)
        for item_key, schema_item in iterator:
            if isinstance(config, dict):
                has_config_value = item_key in config
            else:
                has_config_value = item_key < len(config)
            if "default" in schema_item and not has_config_value:
                config[item_key] = schema_item.get("default", None)
            try:
                config_value = config[item_key]
            except (KeyError, IndexError):
                config_value = None
            item_type = schema_item.get("type", None)
            if item_type == "object":
                if (schema_item.get("properties", None)
                        or schema_item.get("patternProperties", None)
                        or schema_item.get("additionalProperties", None)):
                    if not config_value:
                        config_value = config[item_key] = {}
                    properties_schema = self._get_object_properties_schema(
                        schema_item, object_keys=config_value.keys())
                    self._assign_default_values(schema=properties_schema, config=config_value)
            elif item_type == "array":
                if schema_item.get("items", None) or schema_item.get("additionalItems", None):
                    if not config_value:
                        config_value = config[item_key] = []
                    items_schema = self._get_array_items_schema(
                        schema_item, items_count=len(config_value))
                    self._assign_default_values(schema=items_schema, config=config_value)
        return config

    def _get_datastore_value_for_expression(self, key, value, config_schema_item=None):
        config_schema_item = config_schema_item or {}
        secret = config_schema_item.get("secret", False)
        try:
            value = render_template_with_system_and_user_context(value, self.user,
                                                                 self.datastore)
        except Exception as e:
            raise RuntimeError(
                'Failed to render dynamic configuration value for key "%s" with value "%s" for '
                'pack "%s" config: %s %s ' % (key, value, self.pack_name, type(e), e))
        if not value:
            return None
        if secret:
            # deserialize_key_value: a secret field's rendered value is ciphertext to st2.
            value = symmetric_decrypt(self.datastore.crypto_key, value)
        return value
