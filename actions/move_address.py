from dialog_action import DialogAction, reports_errors
from lib.catalog import default_catalog
from lib.cloud.failover import move_addresses, target_of
from lib.hosts import ssh_path
from lib.planner import validate_region


class MoveAddressAction(DialogAction):
    """dialog.move_address: a lost host's floating addresses to the first healthy proxy."""

    @reports_errors
    def run(self, deployment, lost_host, to_host=None, addresses=[],  # pylint: disable=W0102
            profile=None):  # the metadata's default, never mutated
        settings = self.profile(profile)
        provider, region = target_of(self.record(deployment), settings)
        region = validate_region(default_catalog(), provider, region)
        driver = self.driver(settings, provider, region)
        hosts = driver.inventory(deployment)
        via = ssh_path.resolve_via(settings.get("ssh_address"), provider)

        def reachable(host):
            """True: sshd answers (directly, or a live jump leads to it); None: no path."""
            paths = ssh_path.routes(host, via, hosts)
            for address, jump in paths:
                if jump is None:
                    return ssh_path.PROBE.banner(address)
                if ssh_path.PROBE.alive(jump):
                    return True
            return None

        result = move_addresses(driver, deployment, lost_host, hosts, reachable,
                                to_host=to_host, known=tuple(addresses or ()))
        print(result["message"])
        return dict(result, deployment=deployment)
