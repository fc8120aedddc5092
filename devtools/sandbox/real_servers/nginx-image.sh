#!/bin/sh
# `nginx` as the official nginx image has it, played by Debian's /usr/sbin/nginx.
# nginx.org's build (the image's) has the stream modules compiled in; Debian builds them as a
# dynamic module (libnginx-mod-stream) that a configuration must load. The pack's nginx.conf is
# written for the image and has no load_module line, so this loads the module with -g, which
# nginx applies before it reads the file, merged with the caller's own -g ("daemon off;").
module="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
globals=""
count=$#
while [ "$count" -gt 0 ]; do
    arg="$1"
    shift
    count=$((count - 1))
    if [ "$arg" = "-g" ] && [ "$count" -gt 0 ]; then
        globals="$1"
        shift
        count=$((count - 1))
    else
        set -- "$@" "$arg"
    fi
done
exec /usr/sbin/nginx -g "$module $globals" "$@"
