"""Stand-in for the real StackStorm module of the same name (st2tests.mocks.datastore).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Like the real mock it keeps values as given (no str() conversion, no encryption, no expiry).
"""

__all__ = ["MockDatastoreService"]

SYSTEM_SCOPE = "system"  # st2common.constants.keyvalue.SYSTEM_SCOPE
DATASTORE_KEY_SEPARATOR = ":"  # st2common.constants.keyvalue.DATASTORE_KEY_SEPARATOR


class KeyValuePair(object):
    """Minimal stand-in for st2client.models.keyvalue.KeyValuePair (plain attribute holder)."""

    id = None
    name = None
    value = None
    ttl = None

    def __repr__(self):
        return "<KeyValuePair name=%s,value=%s>" % (self.name, self.value)


class MockDatastoreService(object):
    """
    Mock DatastoreService for use in testing.
    """

    DATASTORE_NAME_SEPARATOR = DATASTORE_KEY_SEPARATOR

    def __init__(self, logger, pack_name, class_name, api_username=None):
        self._pack_name = pack_name
        self._class_name = class_name
        self._username = api_username or "admin"
        self._logger = logger

        # Key is a KeyValuePair name and value is the KeyValuePair object
        self._datastore_items = {}

    def get_user_info(self):
        return {
            "username": self._username,
            "rbac": {"is_admin": True, "enabled": True, "roles": ["admin"]},
            "authentication": {"method": "authentication token", "location": "header"},
        }

    def list_values(self, local=True, limit=None, prefix=None, offset=0):
        key_prefix = self._get_full_key_prefix(local=local, prefix=prefix)

        if not key_prefix:
            return list(self._datastore_items.values())

        return [kvp for name, kvp in self._datastore_items.items() if name.startswith(key_prefix)]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        name = self._get_full_key_name(name=name, local=local)

        if name not in self._datastore_items:
            return None

        return self._datastore_items[name].value

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        name = self._get_full_key_name(name=name, local=local)

        instance = KeyValuePair()
        instance.id = name
        instance.name = name
        instance.value = value
        if ttl:
            self._logger.warning("MockDatastoreService is not able to expire keys based on ttl.")
            instance.ttl = ttl

        self._datastore_items[name] = instance
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        name = self._get_full_key_name(name=name, local=local)

        if name not in self._datastore_items:
            return False

        del self._datastore_items[name]
        return True

    # Key naming, as st2common.services.datastore.BaseDatastoreService does it
    def _get_full_key_name(self, name, local):
        if local:
            name = self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR + name
        return name

    def _get_full_key_prefix(self, local, prefix=None):
        if local:
            key_prefix = self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR
            if prefix:
                key_prefix += prefix
        else:
            key_prefix = prefix
        return key_prefix

    def _get_datastore_key_prefix(self):
        return "%s.%s" % (self._pack_name, self._class_name)


class DatastoreServiceMethods(object):
    """The datastore methods st2's ActionService / SensorService expose, delegating to
    self.datastore_service (python_runner.python_action_wrapper.ActionService and
    st2reactor.container.sensor_wrapper.SensorService in StackStorm)."""

    @property
    def datastore_service(self):
        raise NotImplementedError("subclasses provide the datastore service")

    def get_user_info(self):
        return self.datastore_service.get_user_info()

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(
            local=local, prefix=prefix, limit=limit, offset=offset
        )

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self.datastore_service.get_value(
            name=name, local=local, scope=scope, decrypt=decrypt
        )

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        return self.datastore_service.set_value(
            name=name, value=value, ttl=ttl, local=local, scope=scope, encrypt=encrypt
        )

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self.datastore_service.delete_value(name=name, local=local, scope=scope)
