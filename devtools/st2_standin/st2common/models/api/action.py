"""Stand-in for the real StackStorm module of the same name (st2common.models.api.action).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Only ActionAliasAPI is provided, copied from StackStorm (st2common/st2common/models/api/action.py
at v3.9.0, unchanged on master and since v3.8.1; Copyright 2020 The StackStorm Authors,
Copyright 2019 Extreme Networks, Inc.; Apache License 2.0): its schema is what st2's
AliasesRegistrar validates every aliases/*.yaml against (BaseAPI.validate), so an alias st2
refuses to register is refused here. The reference is built as
st2common.models.system.common.ResourceReference.to_string_reference builds it.
"""

from st2common.models.api.base import BaseAPI
from st2common.models.db.actionalias import ActionAliasDB

__all__ = ["ActionAliasAPI"]

PACK_SEPARATOR = "."


def _to_string_reference(pack=None, name=None):
    """ResourceReference.to_string_reference."""
    if pack and name:
        if PACK_SEPARATOR in pack:
            raise ValueError('Pack name should not contain "%s"' % (PACK_SEPARATOR))
        return PACK_SEPARATOR.join([pack, name])
    else:
        raise ValueError(
            "Both pack and name needed for building ref. pack=%s, name=%s" % (pack, name)
        )


class ActionAliasAPI(BaseAPI):
    """
    Alias for an action in the system.
    """

    model = ActionAliasDB
    schema = {
        "title": "ActionAlias",
        "description": "Alias for an action.",
        "type": "object",
        "properties": {
            "id": {
                "description": "The unique identifier for the action alias.",
                "type": "string",
            },
            "ref": {
                "description": (
                    "System computed user friendly reference for the alias. "
                    "Provided value will be overridden by computed value."
                ),
                "type": "string",
            },
            "uid": {"type": "string"},
            "name": {
                "type": "string",
                "description": "Name of the action alias.",
                "required": True,
            },
            "pack": {
                "description": "The content pack this actionalias belongs to.",
                "type": "string",
                "required": True,
            },
            "description": {
                "type": "string",
                "description": "Description of the action alias.",
                "default": None,
            },
            "enabled": {
                "description": "Flag indicating of action alias is enabled.",
                "type": "boolean",
                "default": True,
            },
            "action_ref": {
                "type": "string",
                "description": "Reference to the aliased action.",
                "required": True,
            },
            "formats": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "display": {"type": "string"},
                                "representation": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                            },
                        },
                    ]
                },
                "description": "Possible parameter format.",
            },
            "ack": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "format": {"type": "string"},
                    "extra": {"type": "object"},
                    "append_url": {"type": "boolean"},
                },
                "description": "Acknowledgement message format.",
            },
            "result": {
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean"},
                    "format": {"type": "string"},
                    "extra": {"type": "object"},
                },
                "description": "Execution message format.",
            },
            "extra": {
                "type": "object",
                "description": "Extra parameters, usually adapter-specific.",
            },
            "immutable_parameters": {
                "type": "object",
                "description": "Parameters to be passed to the action on every execution.",
            },
            "metadata_file": {
                "description": "Path to the metadata file relative to the pack directory.",
                "type": "string",
                "default": "",
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def to_model(cls, alias):
        name = alias.name
        description = getattr(alias, "description", None)
        pack = alias.pack
        ref = _to_string_reference(pack=pack, name=name)
        enabled = getattr(alias, "enabled", True)
        action_ref = alias.action_ref
        formats = alias.formats
        ack = getattr(alias, "ack", None)
        result = getattr(alias, "result", None)
        extra = getattr(alias, "extra", None)
        immutable_parameters = getattr(alias, "immutable_parameters", None)
        metadata_file = getattr(alias, "metadata_file", None)

        model = cls.model(
            name=name,
            description=description,
            pack=pack,
            ref=ref,
            enabled=enabled,
            action_ref=action_ref,
            formats=formats,
            ack=ack,
            result=result,
            extra=extra,
            immutable_parameters=immutable_parameters,
            metadata_file=metadata_file,
        )
        return model
