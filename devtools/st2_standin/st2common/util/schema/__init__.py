"""Stand-in for the real StackStorm module of the same name (st2common.util.schema).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.

Ported from StackStorm's st2common/st2common/util/schema/__init__.py (master, which supports
jsonschema 3.2 and 4.x; Copyright 2020 The StackStorm Authors, Copyright 2019 Extreme Networks,
Inc.; Apache License 2.0). custom.json, draft4.json, action_params.json and
action_output_schema.json beside this file are StackStorm's files of the same names, unchanged
(the draft-04 meta-schema they derive from is under the AFL or BSD licence).

StackStorm's schema dialect: draft 4, except that `required` is draft 3's, a boolean on each
property (`required: true`), checked against custom.json, so a draft-4 list `required: [a, b]`
is a SchemaError. validate() fills in defaults, and with allow_default_none lets an optional
property (or one whose default is null) be null.

Differences from st2, each one stricter or equal: fast_deepcopy_dict is copy.deepcopy (st2 goes
through orjson, which turns a tuple into a list first, so a tuple passes as an array there but
not here); the functions that need StackStorm's database (get_schema_for_action_parameters) and
the runner-parameter override check are left out.
"""

import copy
import json
import os

import jsonschema
from jsonschema.validators import Draft3Validator, Draft4Validator, create

try:
    # jsonschema >= 4.18 resolves "$ref" through a `referencing` registry.
    from referencing import Registry, Resource
    import referencing.jsonschema as ref_jsonschema
except ImportError:  # jsonschema 3.2 (StackStorm 3.8 / 3.9) and 4.x before 4.18
    Registry = Resource = ref_jsonschema = None

__all__ = [
    "get_validator",
    "get_draft_schema",
    "get_action_parameters_schema",
    "get_action_output_schema",
    "get_schema_for_resource_parameters",
    "is_property_type_single",
    "is_property_type_list",
    "is_property_type_anyof",
    "is_property_type_oneof",
    "is_property_nullable",
    "is_attribute_type_array",
    "is_attribute_type_object",
    "assign_default_values",
    "modify_schema_allow_default_none",
    "validate",
    "CustomValidator",
]


def fast_deepcopy_dict(value):
    """st2common.util.deep_copy.fast_deepcopy_dict (see the module docstring)."""
    return copy.deepcopy(value)


def _load_file(path):
    """st2common.util.jsonify.load_file."""
    with open(path, "r") as fd:
        return json.load(fd)


PATH = os.path.join(os.path.dirname(os.path.realpath(__file__)))
SCHEMAS = {
    "draft4": _load_file(os.path.join(PATH, "draft4.json")),
    "custom": _load_file(os.path.join(PATH, "custom.json")),
    # Custom schema for action params which doesn't allow parameter "type" attribute to be array
    "action_params": _load_file(os.path.join(PATH, "action_params.json")),
    "action_output_schema": _load_file(os.path.join(PATH, "action_output_schema.json")),
}

# st2 master: custom.json, action_params.json and action_output_schema.json all claim the
# draft-04 id but take a boolean "required". jsonschema < 4.18 resolved "$ref": "#" under that
# id to the CustomValidator meta-schema; with `referencing` it would be the official draft-04
# meta-schema (list-valued "required"), so the URI is mapped back to custom.json.
if Registry is not None:
    _LOCAL_SCHEMA_REGISTRY = Registry().with_resources(
        [
            (
                "http://json-schema.org/draft-04/schema#",
                Resource.from_contents(
                    SCHEMAS["custom"],
                    default_specification=ref_jsonschema.DRAFT4,
                ),
            )
        ]
    )
else:
    _LOCAL_SCHEMA_REGISTRY = None

SCHEMA_ANY_TYPE = {
    "anyOf": [
        {"type": "array"},
        {"type": "boolean"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "object"},
        {"type": "string"},
    ]
}


def get_draft_schema(version="custom", additional_properties=False):
    schema = fast_deepcopy_dict(SCHEMAS[version])
    if additional_properties and "additionalProperties" in schema:
        del schema["additionalProperties"]
    return schema


def get_action_output_schema(additional_properties=True, description=None):
    """
    Return a generic schema which is used for validating action output.
    """
    schema = get_draft_schema(
        version="action_output_schema", additional_properties=additional_properties
    )
    if description:
        schema["description"] = "%s (based on %s)" % (description, schema["description"])
    return schema


def get_action_parameters_schema(additional_properties=False):
    """
    Return a generic schema which is used for validating action parameters definition.
    """
    return get_draft_schema(version="action_params", additional_properties=additional_properties)


CustomValidator = create(
    meta_schema=get_draft_schema(version="custom", additional_properties=True),
    validators={
        "$ref": Draft4Validator.VALIDATORS["$ref"],
        "additionalItems": Draft4Validator.VALIDATORS["additionalItems"],
        "additionalProperties": Draft4Validator.VALIDATORS["additionalProperties"],
        "allOf": Draft4Validator.VALIDATORS["allOf"],
        "anyOf": Draft4Validator.VALIDATORS["anyOf"],
        "dependencies": Draft4Validator.VALIDATORS["dependencies"],
        "enum": Draft4Validator.VALIDATORS["enum"],
        "format": Draft4Validator.VALIDATORS["format"],
        "items": Draft4Validator.VALIDATORS["items"],
        "maxItems": Draft4Validator.VALIDATORS["maxItems"],
        "maxLength": Draft4Validator.VALIDATORS["maxLength"],
        "maxProperties": Draft4Validator.VALIDATORS["maxProperties"],
        "maximum": Draft4Validator.VALIDATORS["maximum"],
        "minItems": Draft4Validator.VALIDATORS["minItems"],
        "minLength": Draft4Validator.VALIDATORS["minLength"],
        "minProperties": Draft4Validator.VALIDATORS["minProperties"],
        "minimum": Draft4Validator.VALIDATORS["minimum"],
        "multipleOf": Draft4Validator.VALIDATORS["multipleOf"],
        "not": Draft4Validator.VALIDATORS["not"],
        "oneOf": Draft4Validator.VALIDATORS["oneOf"],
        "pattern": Draft4Validator.VALIDATORS["pattern"],
        "patternProperties": Draft4Validator.VALIDATORS["patternProperties"],
        "properties": Draft3Validator.VALIDATORS["properties"],
        "type": Draft4Validator.VALIDATORS["type"],
        "uniqueItems": Draft4Validator.VALIDATORS["uniqueItems"],
    },
    version="custom_validator",
    type_checker=Draft4Validator.TYPE_CHECKER,
    id_of=Draft4Validator.ID_OF,
)


def is_property_type_single(property_schema):
    return (
        isinstance(property_schema, dict)
        and "anyOf" not in list(property_schema.keys())
        and "oneOf" not in list(property_schema.keys())
        and not isinstance(property_schema.get("type", "string"), list)
    )


def is_property_type_list(property_schema):
    return isinstance(property_schema, dict) and isinstance(
        property_schema.get("type", "string"), list
    )


def is_property_type_anyof(property_schema):
    return isinstance(property_schema, dict) and "anyOf" in list(property_schema.keys())


def is_property_type_oneof(property_schema):
    return isinstance(property_schema, dict) and "oneOf" in list(property_schema.keys())


def is_property_nullable(property_type_schema):
    # For anyOf and oneOf, the property_schema is a list of types.
    if isinstance(property_type_schema, list):
        return (
            len(
                [
                    t
                    for t in property_type_schema
                    if (
                        (isinstance(t, str) and t == "null")
                        or (isinstance(t, dict) and t.get("type", "string") == "null")
                    )
                ]
            )
            > 0
        )

    return (
        isinstance(property_type_schema, dict)
        and property_type_schema.get("type", "string") == "null"
    )


def is_attribute_type_array(attribute_type):
    return attribute_type == "array" or (
        isinstance(attribute_type, list) and "array" in attribute_type
    )


def is_attribute_type_object(attribute_type):
    return attribute_type == "object" or (
        isinstance(attribute_type, list) and "object" in attribute_type
    )


def assign_default_values(instance, schema):
    """
    Assign default values on the provided instance based on the schema default specification.
    """
    instance = fast_deepcopy_dict(instance)
    instance_is_dict = isinstance(instance, dict)
    instance_is_array = isinstance(instance, list)

    if not instance_is_dict and not instance_is_array:
        return instance

    schema_type = schema.get("type", None)

    if instance_is_dict and schema_type == "object":
        return _assign_default_values_object(instance, schema)

    elif instance_is_array and schema_type == "array":
        return _assign_default_values_array(instance, schema)

    return instance


def _assign_default_values_object(instance, schema):
    if not isinstance(instance, dict):
        return instance

    properties = schema.get("properties", {})
    dependencies = schema.get("dependencies", {})

    for property_name, property_schema in properties.items():
        has_default_value = "default" in property_schema
        # A default is applied only when the properties it depends on are there (or have a
        # default themselves), as in st2.
        if has_default_value and property_name in dependencies:
            for required_property in dependencies[property_name]:
                if "default" in properties.get(required_property, {}):
                    continue
                if required_property not in instance:
                    has_default_value = False
                    break

        default_value = property_schema.get("default", None)

        # So that validation doesn't fail when required is true but no value is provided.
        if has_default_value and instance.get(property_name, None) is None:
            instance[property_name] = default_value

        attribute_instance = instance.get(property_name, None)
        if attribute_instance is None:
            # As in st2: no subschema defaults when no value is provided.
            continue

        attribute_type = property_schema.get("type", None)

        if is_attribute_type_array(attribute_type):
            instance[property_name] = _assign_default_values_array(
                instance=attribute_instance,
                schema=property_schema,
            )

        elif is_attribute_type_object(attribute_type):
            instance[property_name] = _assign_default_values_object(
                instance=attribute_instance,
                schema=property_schema,
            )

    return instance


def _assign_default_values_array(instance, schema):
    if not isinstance(instance, list):
        return instance

    # Leaves the caller's schema untouched.
    schema = fast_deepcopy_dict(schema)

    items = schema.get("items", [])

    if not items:
        return instance

    # items is either a single schema for all items or a positional list of schemas.
    if isinstance(items, dict):
        items = [items] * len(instance)

    for index, item_schema in enumerate(items):
        has_instance_value = index < len(instance)
        if not has_instance_value:
            break

        has_default_value = "default" in item_schema
        default_value = item_schema.get("default", None)

        if has_default_value and instance[index] is None:
            instance[index] = default_value

        item_instance = instance[index]
        if item_instance is None:
            continue

        item_type = item_schema.get("type", None)

        if is_attribute_type_array(item_type):
            instance[index] = _assign_default_values_array(
                instance=item_instance,
                schema=item_schema,
            )

        if is_attribute_type_object(item_type):
            instance[index] = _assign_default_values_object(
                instance=item_instance,
                schema=item_schema,
            )

    return instance


def modify_schema_allow_default_none(schema):
    """
    Manipulate the provided schema so None is also an allowed value for each attribute which
    defines a default value of None.
    """
    schema = fast_deepcopy_dict(schema)
    properties = schema.get("properties", {})

    for property_name, property_data in properties.items():
        is_optional = not property_data.get("required", False)
        has_default_value = "default" in property_data
        default_value = property_data.get("default", None)
        property_schema = schema["properties"][property_name]

        if (has_default_value or is_optional) and default_value is None:
            # anyOf and oneOf get a {"type": "null"} alternative, a type (list) gets "null".
            if is_property_type_anyof(property_schema) and not is_property_nullable(
                property_schema["anyOf"]
            ):
                property_schema["anyOf"].append({"type": "null"})
            elif is_property_type_oneof(property_schema) and not is_property_nullable(
                property_schema["oneOf"]
            ):
                property_schema["oneOf"].append({"type": "null"})
            elif is_property_type_list(property_schema) and not is_property_nullable(
                property_schema.get("type")
            ):
                property_schema["type"].append("null")
            elif is_property_type_single(property_schema) and not is_property_nullable(
                property_schema.get("type")
            ):
                property_schema["type"] = [
                    property_schema.get("type", "string"),
                    "null",
                ]

        attribute_type = property_data.get("type", None)
        schema_items = property_data.get("items", {})

        if (
            is_attribute_type_array(attribute_type)
            and schema_items
            and schema_items.get("properties", {})
        ):
            array_schema = schema_items
            array_schema = modify_schema_allow_default_none(schema=array_schema)
            schema["properties"][property_name]["items"] = array_schema

        if is_attribute_type_object(attribute_type) and property_data.get("properties", {}):
            object_schema = property_data
            object_schema = modify_schema_allow_default_none(schema=object_schema)
            schema["properties"][property_name] = object_schema

    return schema


def validate(
    instance,
    schema,
    cls=None,
    use_default=True,
    allow_default_none=False,
    *args,
    **kwargs
):
    """
    Custom validate function which supports default arguments combined with the "required"
    property.

    Note: This function returns cleaned instance with default values assigned.

    :param use_default: True to support the use of the optional "default" property.
    :type use_default: ``bool``
    """
    instance = fast_deepcopy_dict(instance)
    schema_type = schema.get("type", None)
    instance_is_dict = isinstance(instance, dict)

    if use_default and allow_default_none:
        schema = modify_schema_allow_default_none(schema=schema)

    if use_default and schema_type == "object" and instance_is_dict:
        instance = assign_default_values(instance=instance, schema=schema)

    if _LOCAL_SCHEMA_REGISTRY is not None:
        kwargs.setdefault("registry", _LOCAL_SCHEMA_REGISTRY)
    jsonschema.validate(instance=instance, schema=schema, cls=cls, *args, **kwargs)

    return instance


VALIDATORS = {"draft4": jsonschema.Draft4Validator, "custom": CustomValidator}


def get_validator(version="custom"):
    validator = VALIDATORS[version]
    return validator


def get_schema_for_resource_parameters(parameters_schema, allow_additional_properties=False):
    """
    Dynamically construct JSON schema for the provided resource from the parameters metadata.
    """

    def normalize(x):
        return {k: v if v else SCHEMA_ANY_TYPE for k, v in x.items()}

    schema = {}
    properties = {}
    properties.update(normalize(parameters_schema))
    if properties:
        schema["type"] = "object"
        schema["properties"] = properties
        schema["additionalProperties"] = allow_additional_properties

    return schema
