"""Stand-in for the real StackStorm module of the same name
(st2common.util.actionalias_matching).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
Copied from StackStorm (st2common/st2common/util/actionalias_matching.py; Copyright 2020 The
StackStorm Authors, Copyright 2019 Extreme Networks, Inc.; Apache License 2.0).
get_matching_alias, which reads the enabled aliases from the database and raises when a command
matches more or fewer than one format, is left out: callers pass the aliases to
match_command_to_alias and count its results.
"""

from st2common.exceptions.content import ParseException
from st2common.models.utils.action_alias_utils import extract_parameters

__all__ = [
    "list_format_strings_from_aliases",
    "normalise_alias_format_string",
    "match_command_to_alias",
]


def list_format_strings_from_aliases(aliases, match_multiple=False):
    """
    List patterns from a collection of alias objects

    :param aliases: The list of aliases
    :type  aliases: ``list`` of :class:`st2common.models.api.action.ActionAliasAPI`

    :return: A description of potential execution patterns in a list of aliases.
    :rtype: ``list`` of ``list``
    """
    patterns = []
    for alias in aliases:
        for format_ in alias.formats:
            display, representations, _match_multiple = normalise_alias_format_string(
                format_
            )
            if display and len(representations) == 0:
                patterns.append(
                    {
                        "alias": alias,
                        "format": format_,
                        "display": display,
                        "representation": "",
                    }
                )
            else:
                patterns.extend(
                    [
                        {
                            "alias": alias,
                            "format": format_,
                            "display": display,
                            "representation": representation,
                            "match_multiple": _match_multiple,
                        }
                        for representation in representations
                    ]
                )
    return patterns


def normalise_alias_format_string(alias_format):
    """
    StackStorm action aliases come in two forms;
        1. A string holding the format, which is also used as the help string.
        2. A dictionary containing "display" and/or "representation" keys.
           "representation": a list of numerous alias format "representation(s)"
           "display": a help string to be displayed.
    This function processes both forms and returns a standardized form.

    :param alias_format: The alias format
    :type  alias_format: ``str`` or ``dict``

    :return: The representation of the alias
    :rtype: ``tuple`` of (``str``, ``str``)
    """
    display = None
    representation = []
    match_multiple = False

    if isinstance(alias_format, str):
        display = alias_format
        representation.append(alias_format)
    elif isinstance(alias_format, dict):
        display = alias_format.get("display")
        representation = alias_format.get("representation") or []
        if isinstance(representation, str):
            representation = [representation]
        match_multiple = alias_format.get("match_multiple", match_multiple)
    else:
        raise TypeError(
            "alias_format '%s' is neither a dictionary or string type."
            % repr(alias_format)
        )
    return (display, representation, match_multiple)


def match_command_to_alias(command, aliases, match_multiple=False):
    """
    Match the text against an action and return the action reference.
    """
    results = []

    for alias in aliases:
        formats = list_format_strings_from_aliases([alias], match_multiple)
        for format_ in formats:
            try:
                extract_parameters(
                    format_str=format_["representation"], param_stream=command
                )
            except ParseException:
                continue

            results.append(format_)
    return results
