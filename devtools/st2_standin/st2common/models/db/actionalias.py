"""Stand-in for the real StackStorm module of the same name (st2common.models.db.actionalias).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
A plain object with the fields of the real mongoengine document; get_format_strings is copied
from StackStorm (st2common/st2common/models/db/actionalias.py; Copyright 2020 The StackStorm
Authors, Copyright 2019 Extreme Networks, Inc.; Apache License 2.0).
"""

__all__ = ["ActionAliasDB"]

PACK_SEPARATOR = "."


class ActionAliasDB(object):
    """
    Database entity that represent an Alias for an action.

    Attribute:
        pack: Pack to which this alias belongs to.
        name: Alias name.
        ref: Alias reference (pack + name).
        enabled: A flag indicating whether this alias is enabled in the system.
        action_ref: Reference of an action this alias belongs to.
        formats: Alias format strings.
    """

    # A keyword st2's document does not have is refused (mongoengine's FieldDoesNotExist), and
    # "ref" is recomputed from pack and name whatever the caller passes, as st2's __init__ does.
    def __init__(self, name, pack, action_ref, formats=None, description=None, enabled=True,
                 ack=None, result=None, extra=None, immutable_parameters=None,
                 metadata_file=None, ref=None):
        self.name = name
        self.pack = pack
        self.ref = PACK_SEPARATOR.join([pack, name])
        self.description = description
        self.enabled = enabled
        self.action_ref = action_ref
        self.formats = formats or []
        self.ack = ack or {}
        self.result = result or {}
        self.extra = extra or {}
        self.immutable_parameters = immutable_parameters or {}
        self.metadata_file = metadata_file

    def get_format_strings(self):
        """
        Return a list of all the supported format strings.

        :rtype: ``list`` of ``str``
        """
        result = []

        formats = getattr(self, "formats", [])
        for format_string in formats:
            if isinstance(format_string, dict) and format_string.get(
                "representation", None
            ):
                result.extend(format_string["representation"])
            else:
                result.append(format_string)

        return result
