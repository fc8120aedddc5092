# Pull each image given as an argument unless Docker already has it, all at once (as
# `docker compose pull` does). Runs as root (sh -c SCRIPT pull IMAGE...). Prints one line per
# image: "@present IMAGE", "@pulled IMAGE" or "@failed IMAGE the daemon's last error line";
# the exit status is 0 either way (the caller reads the lines).
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
i=0
for image in "$@"; do
  i=$((i + 1))
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "@present $image"
    continue
  fi
  (
    if docker pull -q "$image" >/dev/null 2>"$dir/$i.err"; then echo ok >"$dir/$i.rc"
    else echo failed >"$dir/$i.rc"; fi
  ) &
done
wait
i=0
for image in "$@"; do
  i=$((i + 1))
  [ -f "$dir/$i.rc" ] || continue
  if [ "$(cat "$dir/$i.rc")" = ok ]; then
    echo "@pulled $image"
  else
    echo "@failed $image $(grep -v '^[[:space:]]*$' "$dir/$i.err" | tail -n 1)"
  fi
done
