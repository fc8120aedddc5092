"""Stand-in for the real StackStorm module of the same name (st2common.models.api.base).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
BaseAPI's constructor and validate() are copied from StackStorm
(st2common/st2common/models/api/base.py at v3.9.0, the same on master; Copyright 2020 The
StackStorm Authors, Copyright 2019 Extreme Networks, Inc.; Apache License 2.0): an API object
is checked against its schema with st2's CustomValidator (draft 4, draft 3's boolean
`required`), defaults filled in and an optional property allowed to be null. The conversions
from database documents (from_model, mongo escaping, secret masking) are left out: the
stand-in has no database.
"""

import abc

__all__ = ["BaseAPI"]


class BaseAPI(object, metaclass=abc.ABCMeta):
    schema = abc.abstractproperty
    name = None

    def __init__(self, **kw):
        for key, value in kw.items():
            setattr(self, key, value)

    def __repr__(self):
        name = type(self).__name__
        attrs = ", ".join("'%s': %r" % item for item in vars(self).items())
        # The format here is so that eval can be applied.
        return "%s(**{%s})" % (name, attrs)

    def __str__(self):
        name = type(self).__name__
        attrs = ", ".join("%s=%r" % item for item in vars(self).items())

        return "%s[%s]" % (name, attrs)

    def validate(self):
        """
        Perform validation and return cleaned object on success.

        Note: This method doesn't mutate this object in place, but it returns a new one.

        :return: Cleaned / validated object.
        """
        from st2common.util import schema as util_schema

        schema = getattr(self, "schema", {})
        attributes = vars(self)

        cleaned = util_schema.validate(
            instance=attributes,
            schema=schema,
            cls=util_schema.CustomValidator,
            use_default=True,
            allow_default_none=True,
        )

        # Note: We use type() instead of self.__class__ since self.__class__ confuses pylint
        return type(self)(**cleaned)

    @classmethod
    def to_model(cls, doc):
        """
        Create a model class instance for the provided MongoDB document.

        :param doc: MongoDB document.
        """
        raise NotImplementedError()
