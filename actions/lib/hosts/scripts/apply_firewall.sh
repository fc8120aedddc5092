# The host firewall (table inet dialog): the ruleset arrives on stdin. Applied only when it
# differs from /etc/dialog/firewall.nft or the table is missing; checked with nft -c first.
# Prints "@firewall unchanged" or "@firewall applied"; with CHECK_ONLY=1 nothing is changed and
# "@firewall would-apply" replaces "applied".
set -e
target=/etc/dialog/firewall.nft
command -v nft >/dev/null 2>&1 || { echo "nft is missing: install the nftables package" >&2; exit 3; }
new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat >"$new"
if [ -f "$target" ] && cmp -s "$new" "$target" && nft list table inet dialog >/dev/null 2>&1; then
  echo "@firewall unchanged"; exit 0
fi
nft -c -f "$new"
if [ "${CHECK_ONLY:-0}" = 1 ]; then echo "@firewall would-apply"; exit 0; fi
nft -f "$new"
mkdir -p /etc/dialog
install -m 0644 "$new" "$target"
# After a reboot: a unit that loads the file again, where systemd runs.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  cat >/etc/systemd/system/dialog-firewall.service <<'UNIT'
[Unit]
Description=Dialog host firewall (nftables table inet dialog)
Wants=network-pre.target
Before=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/dialog/firewall.nft

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload && systemctl enable dialog-firewall.service >/dev/null 2>&1 || true
fi
echo "@firewall applied"
