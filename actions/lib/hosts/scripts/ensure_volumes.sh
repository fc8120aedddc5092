#!/bin/sh
# Data volumes of one host: found by stable device path, formatted once, mounted by UUID.
#
#   sh ensure_volumes.sh WAIT_SECONDS DEVICE[,ALTERNATIVE] MOUNT [...]     (as root)
#
# Per volume it prints "@volume <device> <mount> <uuid> <formatted 0|1> <mounted 0|1>" (1: done
# by this run); on a problem "@fail <device>: <reason>" and exit status 1. A re-run changes
# nothing. It never formats a device on which blkid finds anything (a filesystem of any type,
# a partition table, RAID or LVM signatures): only a blank device gets a filesystem.
set -eu

FSTAB=/etc/fstab

fail() {
    echo "@fail $1: $2"
    echo "$1: $2" >&2
    exit 1
}

# Sets kind to "blank" or "ext4"; anything else stops the run. blkid -p probes the device
# itself (no cache) and exits 2 when it finds no signature at all.
probe() {
    device=$1 real=$2
    status=0
    found=$(blkid -p -o export "$real" 2>&1) || status=$?
    case $status in
        2) kind=blank; return ;;
        0) ;;
        *) fail "$device" "blkid cannot tell what $real holds (status $status): $found" ;;
    esac
    pttype=$(printf '%s\n' "$found" | sed -n 's/^PTTYPE=//p')
    fstype=$(printf '%s\n' "$found" | sed -n 's/^TYPE=//p')
    if [ -n "$pttype" ]; then
        fail "$device" "holds a $pttype partition table; not formatting or mounting it"
    fi
    if [ "$fstype" != ext4 ]; then
        fail "$device" "holds ${fstype:-an unknown signature}, not ext4; not formatting or\
 mounting it"
    fi
    kind=ext4
}

# A blank volume mounted over files would hide them (e.g. a database written to the root disk
# by an earlier deploy): stop and say so instead.
check_empty() {
    device=$1 mount=$2
    if [ -d "$mount" ] && [ -n "$(ls -A "$mount")" ]; then
        fail "$device" "$mount already holds files on the root disk; move them away (or onto\
 the volume) first, then re-run"
    fi
}

ensure_fstab() {
    uuid=$1 mount=$2
    line="UUID=$uuid $mount ext4 defaults,nofail 0 2"
    if grep -qxF "$line" "$FSTAB" 2>/dev/null; then
        return
    fi
    # Another line for the same mount point (a replaced volume) goes; every other line stays.
    # Rewritten in place: /etc/fstab may be a bind mount, which rename cannot replace.
    kept=$(awk -v m="$mount" '$0 ~ /^[ \t]*#/ || $2 != m' "$FSTAB" 2>/dev/null || true)
    if [ -n "$kept" ]; then
        printf '%s\n%s\n' "$kept" "$line" > "$FSTAB"
    else
        printf '%s\n' "$line" > "$FSTAB"
    fi
}

# The device appears some time after the attach call returns on a real cloud (EBS and DO
# volumes attach asynchronously): wait for it, boundedly. DEVICE may list alternatives
# separated by commas (an EBS volume is at its NVMe by-id path on
# Nitro instances, at /dev/xvdX on Xen ones): the first that exists is the volume. Reported and
# failed under the first name.
pick() {
    candidates=$1 limit=$2 waited=0
    while :; do
        for candidate in $(printf '%s' "$candidates" | tr ',' ' '); do
            if [ -b "$candidate" ]; then
                found=$candidate
                return
            fi
        done
        if [ "$waited" -ge "$limit" ]; then
            fail "${candidates%%,*}" "no such block device after ${limit}s (looked at\
 $candidates); is the volume attached?"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

ensure_one() {
    device=${1%%,*} mount=$2 limit=$3
    formatted=0 mounted=0
    pick "$1" "$limit"
    real=$(readlink -f "$found")
    current=$(findmnt -n -o SOURCE --mountpoint "$mount" || true)
    if [ -n "$current" ] && [ "$(readlink -f "$current")" != "$real" ]; then
        fail "$device" "$mount is already a mount of $current"
    fi
    elsewhere=$(findmnt -n -o TARGET --source "$real" | grep -vxF "$mount" | head -n 1 || true)
    if [ -n "$elsewhere" ]; then
        fail "$device" "$real is mounted at $elsewhere, not $mount"
    fi
    probe "$device" "$real"
    if [ "$kind" = blank ]; then
        check_empty "$device" "$mount"
        mkfs.ext4 -q -F "$real" </dev/null >&2
        formatted=1
    fi
    uuid=$(blkid -p -s UUID -o value "$real")
    [ -n "$uuid" ] || fail "$device" "the filesystem on $real has no UUID"
    ensure_fstab "$uuid" "$mount"
    if [ -z "$current" ]; then
        [ "$formatted" = 1 ] || check_empty "$device" "$mount"
        mkdir -p "$mount"
        mount -t ext4 -o defaults "$real" "$mount"
        mounted=1
    fi
    if [ "$formatted" = 1 ]; then
        # Postgres' initdb refuses a data directory that is not empty, and mkfs leaves
        # lost+found at the top of the new filesystem (e2fsck recreates it when it needs one).
        rmdir "$mount/lost+found" 2>/dev/null || true
    fi
    echo "@volume $device $mount $uuid $formatted $mounted"
}

limit=$1
shift
while [ $# -ge 2 ]; do
    ensure_one "$1" "$2" "$limit"
    shift 2
done
