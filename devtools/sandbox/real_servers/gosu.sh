#!/bin/sh
# gosu USER COMMAND [ARG...] for the sandbox's real-server containers: run COMMAND as USER
# with USER's groups and HOME, replacing this process (github.com/tianon/gosu), via setpriv.
set -e
if [ "$#" -lt 2 ]; then
    echo "Usage: gosu user-spec command [args]" >&2
    exit 1
fi
user="$1"
shift
entry="$(getent passwd "$user")" || { echo "error: failed switching to \"$user\": unable to find user $user" >&2; exit 1; }
uid="$(echo "$entry" | cut -d: -f3)"
gid="$(echo "$entry" | cut -d: -f4)"
HOME="$(echo "$entry" | cut -d: -f6)"
export HOME
exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
