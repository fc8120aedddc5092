# `docker login` to registry $1 as user $2, the password on stdin (never in an argument or the
# environment, where `ps` or /proc would show it). Runs as root (sh -c SCRIPT login SERVER USER).
# Prints "@login present" when root's Docker config already holds exactly these credentials
# (docker login stores base64(user:password) under the server's name), else "@login logged-in".
server=$1
user=$2
IFS= read -r password || [ -n "$password" ]
cfg="${DOCKER_CONFIG:-$HOME/.docker}/config.json"
if [ -f "$cfg" ]; then
  flat=$(mktemp)
  trap 'rm -f "$flat"' EXIT
  tr -d ' \t\r\n' <"$cfg" >"$flat"
  want=$(printf '%s:%s' "$user" "$password" | base64 | tr -d '\n')
  # printf is the shell's own: the pattern goes to grep on a pipe, not on its command line.
  if printf '"%s":{"auth":"%s"' "$server" "$want" | grep -qFf - "$flat"; then
    echo "@login present"
    exit 0
  fi
fi
if ! out=$(printf '%s\n' "$password" | docker login "$server" -u "$user" --password-stdin 2>&1)
then
  printf '%s\n' "$out" | grep -v '^WARNING\|^Configure a credential\|^https://docs' | tail -n 2 >&2
  exit 1
fi
echo "@login logged-in"
