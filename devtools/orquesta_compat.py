"""Run orquesta 1.2.0 on Python 3.11 with current networkx: call install() before importing it.

This module exists only to run the pack's Orquesta workflows outside StackStorm (tests and
devtools/workflow_runner.py). StackStorm ships its own, newer orquesta and never needs it.
orquesta 1.2.0 is the last release on PyPI; it is installed without its dependency pins
(jsonschema<3 and networkx<2 clash with the pack's jsonschema and moto's networkx). Each fix
checks whether it is needed, so install() is idempotent and a no-op where nothing is broken:

1. collections ABC aliases (collections.Mapping, collections.MutableSequence, ...), removed in
   Python 3.10; orquesta's specs and expression functions still use them. Put back before
   orquesta is imported, as Python 3.9 had them.
2. fractions.gcd, removed in Python 3.9; networkx 1.x (orquesta 1.2.0's declared range) imports
   it. networkx 2.4 and later do not.
3. The inline-parameter regex (task `action: x.y a=1`) embeds "(?i)true" mid-pattern; Python
   3.11 rejects global flags not at the start, so every task with an action failed to parse.
   Scoped to "(?i:true)", as orquesta 1.3.0 did.
4. networkx 2.4 removed Graph.node and dict-returning in_degree(), which orquesta 1.2.0's
   WorkflowGraph uses in three methods; they are replaced with the code orquesta 1.5 uses.
"""

import collections
import collections.abc
import fractions
import math
import re


def _fix_stdlib():
    for name in collections.abc.__all__:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    if not hasattr(fractions, "gcd"):
        fractions.gcd = math.gcd


def _fix_inline_params_regex():
    from orquesta.utils import parameters

    try:
        re.compile(parameters.REGEX_INLINE_PARAMS)
    except re.error:
        for word in ("true", "false"):
            parameters.REGEX_INLINE_PARAMS = parameters.REGEX_INLINE_PARAMS.replace(
                "(?i)%s" % word, "(?i:%s)" % word)
        parameters.REGEX_TRUE, parameters.REGEX_FALSE = "(?i:true)", "(?i:false)"


def _fix_graph_for_networkx2():
    from orquesta import exceptions
    from orquesta import graphing
    from orquesta.utils import jsonify

    probe = graphing.WorkflowGraph()
    probe.add_task("probe")
    try:
        probe.get_task("probe")
        return
    except AttributeError:
        pass

    def get_root_nodes(graph):
        nodes = [{"id": n, "name": graph.nodes[n].get("name", n)}
                 for n, degree in dict(graph.in_degree()).items() if degree == 0]
        return sorted(nodes, key=lambda x: x["id"])

    def get_task(self, task_id):
        if not self.has_task(task_id):
            raise exceptions.InvalidTask(task_id)
        task = {"id": task_id}
        task.update(jsonify.deepcopy(self._graph.nodes[task_id]))
        return task

    def update_task(self, task_id, **kwargs):
        if not self.has_task(task_id):
            raise exceptions.InvalidTask(task_id)
        self._graph.nodes[task_id].update(kwargs)

    graphing.WorkflowGraph.get_root_nodes = staticmethod(get_root_nodes)
    graphing.WorkflowGraph.get_task = get_task
    graphing.WorkflowGraph.update_task = update_task


def install():
    """Apply the fixes that this Python and these packages need. Raises ImportError when
    orquesta is not installed."""
    _fix_stdlib()
    _fix_inline_params_regex()
    _fix_graph_for_networkx2()
