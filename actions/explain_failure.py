from dialog_action import DialogAction
from lib.failures import explain


class ExplainFailureAction(DialogAction):
    """dialog.explain_failure: one line on why a workflow task failed, from StackStorm's raw
    result of it (any shape); the workflows publish it as output.failure."""

    def run(self, task, result=None, results=None, items=None, host=None, deployment=None):
        # Never fails: a workflow calls it on its way out, and a failure here would leave the
        # operator without any reason.
        try:
            return True, explain(task, result=result, results=results, items=items, host=host,
                                 scrub=self.scrubber(deployment))
        except Exception as exc:  # pylint: disable=broad-except
            self.logger.exception("cannot explain the failure of %s", task)
            return True, {"failure": "%s: failed; its result could not be read (%s)"
                                     % (task, type(exc).__name__), "failures": []}
