from dialog_action import DialogAction, reports_errors
from lib.stages import bootstrap_stages


class BootstrapOrderAction(DialogAction):
    """dialog.bootstrap_order: which hosts are bootstrapped in which stage."""

    @reports_errors
    def run(self, hosts):
        return bootstrap_stages(hosts)
