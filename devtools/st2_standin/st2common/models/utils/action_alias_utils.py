"""Stand-in for the real StackStorm module of the same name
(st2common.models.utils.action_alias_utils).

Used only when StackStorm is not installed; it must not grow features StackStorm lacks.
The parser and the extraction functions are copied from StackStorm
(st2common/st2common/models/utils/action_alias_utils.py; Copyright 2020 The StackStorm Authors,
Copyright 2019 Extreme Networks, Inc.; Apache License 2.0), unchanged but for the imports, so
that alias formats match here exactly as they match in st2api.

inject_immutable_parameters is st2's too: st2api's alias execution controller
(st2api/st2api/controllers/v1/aliasexecution.py) calls it after the extraction, so the values
are rendered with the chat user and channel and typing one of them is refused. Two things
differ, both stricter: the stand-in has no datastore, so a template that reads st2kv.system or
st2kv.user raises DatastoreUnavailableError instead of reading MongoDB; and the values are
rendered as st2common.util.jinja.render_values renders them but without st2's own Jinja filters
(to_json_string, regex_replace, ...), so a template that uses one fails here.
"""

import json
import logging
import re
import sys

import jinja2
import jinja2.sandbox

if sys.version_info >= (3, 11):
    from re._parser import (  # pylint: disable=E0611
        parse,
        AT,
        AT_BEGINNING,
        AT_BEGINNING_STRING,
        AT_END,
        AT_END_STRING,
        BRANCH,
        SUBPATTERN,
    )
else:
    from sre_parse import (  # pylint: disable=E0611
        parse,
        AT,
        AT_BEGINNING,
        AT_BEGINNING_STRING,
        AT_END,
        AT_END_STRING,
        BRANCH,
        SUBPATTERN,
    )

from st2common.exceptions.content import ParseException

__all__ = [
    "ActionAliasFormatParser",
    "extract_parameters_for_action_alias_db",
    "extract_parameters",
    "inject_immutable_parameters",
    "search_regex_tokens",
]


LOG = logging.getLogger(__name__)

SUBPATTERN_INDEX = 3

# st2common.constants.keyvalue
DATASTORE_PARENT_SCOPE = "st2kv"
SYSTEM_SCOPE = "system"
USER_SCOPE = "user"
FULL_SYSTEM_SCOPE = "st2kv.system"
FULL_USER_SCOPE = "st2kv.user"


class DatastoreUnavailableError(RuntimeError):
    """A template read the datastore, which the stand-in does not have."""


class ActionAliasFormatParser(object):
    def __init__(self, alias_format=None, param_stream=None):
        self._format = alias_format or ""
        self._original_param_stream = param_stream or ""
        self._param_stream = self._original_param_stream
        self._snippets = self.generate_snippets()

        # 1. Matching the arbitrary key-value pairs at the end of the command
        # to support extra parameters (not specified in the format string),
        # and cutting them from the command string afterwards.
        self._kv_pairs, self._param_stream = self.match_kv_pairs_at_end()

        # 2. Matching optional parameters (with default values).
        self._optional = self.generate_optional_params_regex()

        # 3. Convert the mangled format string into a regex object
        self._regex = self.transform_format_string_into_regex()

    def generate_snippets(self):
        snippets = dict()

        # Formats for keys and values: key is a non-spaced string,
        # value is anything in quotes or curly braces, or a single word.
        snippets["key"] = r"\s*(\S+?)\s*"
        snippets["value"] = r'""|\'\'|"(.+?)"|\'(.+?)\'|({.+?})|(\S+)'

        # Extended value: also matches unquoted text (caution).
        snippets["ext_value"] = r'""|\'\'|"(.+?)"|\'(.+?)\'|({.+?})|(.+?)'

        # Key-value pair:
        snippets["pairs"] = r"(?:^|\s+){key}=({value})".format(**snippets)

        # End of string: multiple space-separated key-value pairs:
        snippets["ending"] = r".*?(({pairs}\s*)*)$".format(**snippets)

        # Default value in optional parameters:
        snippets["default"] = r"\s*=\s*(?:{ext_value})\s*".format(**snippets)

        # Optional parameter (has a default value):
        snippets["optional"] = "{{" + snippets["key"] + snippets["default"] + "}}"

        # Required parameter (no default value):
        snippets["required"] = "{{" + snippets["key"] + "}}"

        return snippets

    def match_kv_pairs_at_end(self):
        param_stream = self._param_stream

        ending_pairs = re.match(self._snippets["ending"], param_stream, re.DOTALL)
        has_ending_pairs = ending_pairs and ending_pairs.group(1)
        if has_ending_pairs:
            kv_pairs = re.findall(
                self._snippets["pairs"], ending_pairs.group(1), re.DOTALL
            )
            param_stream = param_stream.replace(ending_pairs.group(1), "")
        else:
            kv_pairs = []
        param_stream = " %s " % (param_stream)

        return (kv_pairs, param_stream)

    def generate_optional_params_regex(self):
        return re.findall(self._snippets["optional"], self._format, re.DOTALL)

    def transform_format_string_into_regex(self):
        # Substituting {{ ... }} with regex named groups, so that param_stream
        # matched against this expression yields a dict of params with values.
        param_match = (
            r'\1["\']?(?P<\2>(?:(?<=\').+?(?=\')|(?<=").+?(?=")|{.+?}|.+?))["\']?'
        )
        reg = re.sub(
            r"(\s*)" + self._snippets["optional"],
            r"(?:" + param_match + r")?",
            self._format,
        )
        reg = re.sub(r"(\s*)" + self._snippets["required"], param_match, reg)

        reg_tokens = parse(reg, flags=re.DOTALL)

        # Add a beginning anchor if none exists
        if not search_regex_tokens(
            ((AT, AT_BEGINNING), (AT, AT_BEGINNING_STRING)), reg_tokens
        ):
            reg = r"^\s*" + reg

        # Add an ending anchor if none exists
        if not search_regex_tokens(
            ((AT, AT_END), (AT, AT_END_STRING)), reg_tokens, backwards=True
        ):
            reg = reg + r"\s*$"

        return re.compile(reg, re.DOTALL)

    def match_params_in_stream(self, matched_stream):
        if not matched_stream:
            # The command did not match the format string.
            raise ParseException(
                'Command "%s" doesn\'t match format string "%s"'
                % (self._original_param_stream, self._format)
            )

        if matched_stream:
            result = matched_stream.groupdict()

        # Apply optional parameters/add the default parameters
        for param in self._optional:
            matched_value = result[param[0]] if matched_stream else None
            matched_result = matched_value or "".join(param[1:])
            if matched_result is not None:
                result[param[0]] = matched_result

        # Apply given parameters
        for pair in self._kv_pairs:
            result[pair[0]] = "".join(pair[2:])

        if self._format and not (self._param_stream.strip() or any(result.values())):
            raise ParseException("No value supplied and no default value found.")

        return result

    def get_extracted_param_value(self):
        """
        Match command against the format string and extract parameters from the command string.

        :rtype: ``dict``
        """
        matched_stream = self._regex.search(self._param_stream)

        return self.match_params_in_stream(matched_stream)

    def get_multiple_extracted_param_value(self):
        """
        Match command against the format string and extract parameters from the command string.

        :rtype: ``list of dicts``
        """
        matched_streams = self._regex.finditer(self._param_stream)

        results = []
        for matched_stream in matched_streams:
            results.append(self.match_params_in_stream(matched_stream))
        return results


def extract_parameters_for_action_alias_db(
    action_alias_db, format_str, param_stream, match_multiple=False
):
    """
    Extract parameters from the user input based on the provided format string.

    Note: This function makes sure that the provided format string is indeed available in the
    action_alias_db.formats.
    """
    formats = []
    formats = action_alias_db.get_format_strings()

    if format_str not in formats:
        raise ValueError(
            'Format string "%s" is not available on the alias "%s"'
            % (format_str, action_alias_db.name)
        )

    result = extract_parameters(
        format_str=format_str, param_stream=param_stream, match_multiple=match_multiple
    )
    return result


def extract_parameters(format_str, param_stream, match_multiple=False):
    parser = ActionAliasFormatParser(alias_format=format_str, param_stream=param_stream)
    if match_multiple:
        return parser.get_multiple_extracted_param_value()
    else:
        return parser.get_extracted_param_value()


def inject_immutable_parameters(
    action_alias_db, multiple_execution_parameters, action_context
):
    """
    Inject immutable parameters from the alias definiton on the execution parameters.
    Jinja expressions will be resolved.
    """
    immutable_parameters = action_alias_db.immutable_parameters or {}
    if not immutable_parameters:
        return multiple_execution_parameters

    user = action_context.get("user", None)

    context = {}
    context.update(
        {
            DATASTORE_PARENT_SCOPE: {
                SYSTEM_SCOPE: _DatastoreLookup(scope=FULL_SYSTEM_SCOPE),
                USER_SCOPE: _DatastoreLookup(scope=FULL_USER_SCOPE, user=user),
            }
        }
    )
    context.update(action_context)
    rendered_params = _render_values(immutable_parameters, context)

    for exec_params in multiple_execution_parameters:
        overriden = [
            param for param in immutable_parameters.keys() if param in exec_params
        ]
        if overriden:
            raise ValueError(
                "Immutable arguments cannot be overriden: {}".format(
                    ",".join(overriden)
                )
            )

        exec_params.update(rendered_params)

    return multiple_execution_parameters


class _DatastoreLookup(object):
    """Where st2 puts st2common.services.keyvalues.KeyValueLookup / UserKeyValueLookup."""

    def __init__(self, scope, user=None):
        self._scope = scope
        self._user = user

    def __getattr__(self, name):
        # Python's own protocols (copy, hasattr of dunders) must still see a plain object.
        if name.startswith("__"):
            raise AttributeError(name)
        raise DatastoreUnavailableError(
            'The template reads "%s.%s": the StackStorm stand-in has no datastore to read it '
            "from." % (self._scope, name)
        )

    def __getitem__(self, name):
        return self.__getattr__(name)


def _render_values(mapping=None, context=None, allow_undefined=False):
    """st2common.util.jinja.render_values (see the module docstring)."""
    if not context or not mapping:
        return mapping

    # Add in special __context variable that provides an easy way to get access to entire
    # context. This mean __context is a reserve key word although backwards compat is preserved
    # by making sure that real context is updated later and therefore will override the
    # __context value.
    super_context = {}
    super_context["__context"] = context
    super_context.update(context)

    env = _get_jinja_environment(allow_undefined=allow_undefined)
    rendered_mapping = {}
    for k, v in mapping.items():
        # jinja2 works with string so transform list and dict to strings.
        reverse_json_dumps = False
        if isinstance(v, dict) or isinstance(v, list):
            # st2's json_encode (orjson by default): compact, non-ASCII kept.
            v = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            reverse_json_dumps = True
        elif not isinstance(v, str):
            # Other types (e.g. boolean, etc.)
            v = str(v)

        try:
            rendered_v = env.from_string(v).render(super_context)
        except Exception as e:
            # Attach key and value which failed the rendering
            e.key = k
            e.value = v
            raise e

        # no change therefore no templatization so pick params from original to retain
        # original type
        if rendered_v == v:
            rendered_mapping[k] = mapping[k]
            continue
        if reverse_json_dumps:
            rendered_v = json.loads(rendered_v)
        rendered_mapping[k] = rendered_v
    return rendered_mapping


def _get_jinja_environment(allow_undefined=False, trim_blocks=True, lstrip_blocks=True):
    """st2common.util.jinja.get_jinja_environment, without st2's custom filters."""
    undefined = jinja2.Undefined if allow_undefined else jinja2.StrictUndefined
    env = jinja2.sandbox.SandboxedEnvironment(  # nosec: the sandbox st2 renders in
        undefined=undefined, trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks
    )
    env.tests["in"] = lambda item, list: item in list
    return env


def search_regex_tokens(needle_tokens, haystack_tokens, backwards=False):
    """
    Search a tokenized regex for any tokens in needle_tokens. Returns True if
    any token tuple in needle_tokens is found, and False otherwise.

    :param needle_tokens: an iterable of token tuples
    :param haystack_tokens: an iterable of token tuples from sre_parse.parse
    :param backwards: Controls direction of search, defaults to False. Set it to True if
                      needle_tokens are more likely to be found at the end of the
                      haystack_tokens iterable, eg: ending anchors.

    :rtype: ``bool``
    """
    if backwards:
        haystack_tokens = reversed(haystack_tokens)

    for rtoken_type, rtoken in haystack_tokens:
        LOG.debug("Matching: ({}, {})".format(rtoken_type, rtoken))
        if rtoken_type == SUBPATTERN:
            LOG.debug("SUBPATTERN: {}".format(rtoken))
            if search_regex_tokens(needle_tokens, rtoken[SUBPATTERN_INDEX]):
                return True
        elif rtoken_type == BRANCH:
            LOG.debug("BRANCH: {}".format(rtoken))
            if search_regex_tokens(needle_tokens, rtoken[1][1]):
                return True
        elif (rtoken_type, rtoken) in needle_tokens:
            LOG.debug("Found: {}".format((rtoken_type, rtoken)))
            return True
    else:
        LOG.debug("Not found: {}".format(needle_tokens))
        return False
