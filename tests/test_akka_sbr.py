"""The dialog servers' Akka cluster gets a keep-majority split-brain resolver (2N+1 servers);
a single dialog server runs in single mode with no cluster and no resolver.

pyhocon is not among the pack's test dependencies, so server.conf is read by the strict HOCON
subset below (objects, `=`/`:` fields, dotted keys, arrays, quoted and unquoted values,
comments): anything else, an unbalanced brace or a field without a value fails the test."""

import json
import re

import pytest

from test_render import file_of, make_context, render_all

SERVER_CONF = "/etc/dialog/server.conf"
TOKEN = re.compile(r'''\s+|#[^\n]*|//[^\n]*|(?P<s>"(?:[^"\\\n]|\\.)*")|(?P<p>[{}\[\],=:])|'''
                   r'''(?P<u>[^\s{}\[\],=:#"]+(?:[ \t]+[^\s{}\[\],=:#"]+)*)''')


def tokens(text):
    position, found = 0, []
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError("HOCON: cannot read %r" % text[position:position + 30])
        kind = match.lastgroup
        if kind:
            found.append((kind, match.group(kind), text.count("\n", 0, position) + 1))
        position = match.end()
    return found


def parse_hocon(text):
    """The configuration as nested dicts; ValueError on anything outside the subset."""
    items = tokens(text)
    at = [0]

    def peek():
        return items[at[0]] if at[0] < len(items) else (None, None, "end")

    def take(kind=None, value=None):
        item = peek()
        if item[0] is None or (kind and item[0] != kind) or (value and item[1] != value):
            raise ValueError("HOCON line %s: expected %s, found %r"
                             % (item[2], value or kind, item[1]))
        at[0] += 1
        return item

    def scalar(item):
        return json.loads(item[1]) if item[0] == "s" else item[1]

    def value():
        item = peek()
        if item[1] == "{" and item[0] == "p":
            take()
            return members("}")
        if item[1] == "[" and item[0] == "p":
            take()
            result = []
            while peek()[1] != "]":
                result.append(value())
                if peek()[1] == ",":
                    take()
            take("p", "]")
            return result
        if item[0] not in ("s", "u"):
            raise ValueError("HOCON line %s: a field without a value" % item[2])
        return scalar(take())

    def members(closing):
        result = {}
        while peek()[1] != closing or peek()[0] not in ("p", None):
            if closing is None and peek()[0] is None:
                break
            key = take()
            if key[0] not in ("s", "u"):
                raise ValueError("HOCON line %s: expected a key, found %r" % (key[2], key[1]))
            path = [json.loads(key[1])] if key[0] == "s" else key[1].split(".")
            if peek()[1] in ("=", ":") and peek()[0] == "p":
                take()
            elif peek()[1] != "{":
                raise ValueError("HOCON line %s: %s has no value" % (key[2], key[1]))
            found = value()
            target = result
            for part in path[:-1]:
                target = target.setdefault(part, {})
            if isinstance(found, dict) and isinstance(target.get(path[-1]), dict):
                target[path[-1]].update(found)
            else:
                target[path[-1]] = found
            if peek()[1] == ",":
                take()
        if closing is not None:
            take("p", closing)
        return result

    parsed = members(None)
    if at[0] != len(items):
        raise ValueError("HOCON: unexpected %r" % (items[at[0]][1],))
    return parsed


def test_the_subset_parser_is_strict():
    assert parse_hocon('a.b { c = "x", d = [1, 2] }\na { e : on }') == {
        "a": {"b": {"c": "x", "d": ["1", "2"]}, "e": "on"}}
    for broken in ("a { b = 1", "a = ", "a { b = 1 } }", "a b c"):
        with pytest.raises(ValueError):
            parse_hocon(broken)


def server_confs(tier, **counts):
    context = make_context(tier, **counts)
    results = render_all(context)
    return {h["name"]: parse_hocon(file_of(results[h["name"]], SERVER_CONF))
            for h in context["hosts"] if "dialog-server" in h["roles"]}


@pytest.mark.parametrize("tier,counts,servers", [
    ("small-failover", {}, 3),
    ("production", {"dialog_servers": 5}, 5),
    ("small-failover", {"dialog_servers": 7}, 7),
])
def test_a_cluster_of_2n_plus_1_servers_keeps_the_majority(tier, counts, servers):
    confs = server_confs(tier, **counts)
    assert len(confs) == servers
    for name, conf in confs.items():
        cluster = conf["akka"]["cluster"]
        assert cluster["downing-provider-class"] == \
            "akka.cluster.sbr.SplitBrainResolverProvider", name
        sbr = cluster["split-brain-resolver"]
        assert sbr["active-strategy"] == "keep-majority", name
        # At least Akka's recommended minimum for 100 members, the same for every count (a
        # scale-out must not change the running servers' files).
        assert sbr["stable-after"] == "20s"
        assert "single-mode" not in conf
        assert len(cluster["seed-nodes"]) == min(3, len(confs))


@pytest.mark.parametrize("tier", ["mini", "small", "production"])
def test_a_single_dialog_server_has_no_cluster_and_no_resolver(tier):
    confs = server_confs(tier)
    assert len(confs) == 1
    conf = next(iter(confs.values()))
    assert conf["single-mode"] == "true"
    assert "akka" not in conf
