"""Match a trigger instance against the pack's rules and render the action each one runs,
the way st2rulesengine does (st2reactor/rules/filter.py and enforcer.py), for the criteria
operators and parameter rendering the pack's rules use. A development tool for the sandbox
and the tests, not a second StackStorm.
"""

import glob
import os

import jinja2
import yaml

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_rules(pack_root=PACK_ROOT, include_disabled=False):
    rules = []
    for path in sorted(glob.glob(os.path.join(pack_root, "rules", "*.yaml"))):
        with open(path, encoding="utf-8") as handle:
            rule = yaml.safe_load(handle)
        if rule.get("enabled", True) or include_disabled:
            rules.append(rule)
    return rules


def _lookup(payload, path):
    value = {"trigger": payload}
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None, False
        value = value[part]
    return value, True


OPERATORS = {
    "equals": lambda value, pattern: value == pattern,
    "nequals": lambda value, pattern: value != pattern,
    "iequals": lambda value, pattern: str(value).lower() == str(pattern).lower(),
    "contains": lambda value, pattern: pattern in value,
}


def matches(rule, trigger_type, payload):
    if rule["trigger"]["type"] != trigger_type:
        return False
    for path, criterion in (rule.get("criteria") or {}).items():
        value, found = _lookup(payload, path)
        if criterion["type"] == "exists":
            if not found:
                return False
            continue
        # st2 renders the pattern with the payload first; the pack's patterns are literals.
        if not found or not OPERATORS[criterion["type"]](value, criterion["pattern"]):
            return False
    return True


def render_parameters(rule, payload, schemas=None):
    """The action's parameters: each value rendered with `trigger`, then cast to the action
    parameter's type as st2 casts rendered strings."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    params = {}
    for name, template in (rule["action"].get("parameters") or {}).items():
        value = env.from_string(str(template)).render(trigger=payload) \
            if isinstance(template, str) else template
        kind = ((schemas or {}).get(name) or {}).get("type")
        if kind == "integer" and isinstance(value, str):
            value = int(value)
        params[name] = value
    return params


def enforce(trigger_type, payload, schemas_of=None, rules=None):
    """[(rule name, action ref, parameters)] for every enabled rule the trigger matches."""
    out = []
    for rule in rules if rules is not None else load_rules():
        if matches(rule, trigger_type, payload):
            ref = rule["action"]["ref"]
            out.append((rule["name"], ref, render_parameters(
                rule, payload, schemas_of(ref) if schemas_of else None)))
    return out
