# What a host has, for the seed's hardware minimums: CPUs, memory, and the size of the
# filesystem that will hold /var/lib/dialog (its nearest existing directory).
set -e
echo "@cpus $(nproc)"
echo "@memory_kb $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
d=/var/lib/dialog
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "@disk_kb $(df -Pk "$d" | awk 'NR==2 {print $2}')"
