# Docker Engine and the compose plugin from Docker's apt repository (Debian and Ubuntu), the way
# docs.docker.com/engine/install/debian (and /ubuntu) describes it. Runs as root under `set -e`
# with `repo` set before it: the profile's docker_apt_repository, https://download.docker.com/linux
# or an operator's mirror of it (same layout: $repo/<debian|ubuntu>/gpg, dists/, pool/).
# Prints "@docker present|installed".
if docker compose version >/dev/null 2>&1; then echo "@docker present"; exit 0; fi
if [ ! -r /etc/os-release ]; then echo "no /etc/os-release: cannot tell the distribution" >&2
  exit 1; fi
. /etc/os-release
case " $ID $ID_LIKE " in
  *" ubuntu "*) dist=ubuntu; codename="${UBUNTU_CODENAME:-$VERSION_CODENAME}" ;;
  *" debian "*) dist=debian; codename="$VERSION_CODENAME" ;;
  *) echo "Docker is missing and the pack installs it only on Debian and Ubuntu (this is $ID)" >&2
     exit 1 ;;
esac
if [ -z "$codename" ]; then echo "no VERSION_CODENAME in /etc/os-release" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt_get() {
  apt-get -q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -o Acquire::http::Timeout=30 \
    "$@" >"$log" 2>&1 || { tail -n 5 "$log" >&2; return 1; }
}
# A host without a way out fails here, not after minutes of apt retries, and says so.
unreachable() {
  echo "cannot reach the Docker apt repository $repo: $1. This host needs a route to it (a" \
    "public address or a NAT gateway), or set docker_apt_repository to a mirror it can reach" >&2
  exit 1
}
# apt-get update only warns about a source it cannot reach (exit status 0).
apt_get update
apt_get install --no-install-recommends ca-certificates curl
install -m 0755 -d /etc/apt/keyrings
if ! curl -fsSL --connect-timeout 20 --retry 3 "$repo/$dist/gpg" \
    -o /etc/apt/keyrings/docker.asc.new 2>"$log"; then
  unreachable "$(tail -n 1 "$log")"
fi
mv -f /etc/apt/keyrings/docker.asc.new /etc/apt/keyrings/docker.asc
chmod a+r /etc/apt/keyrings/docker.asc
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc]" \
  "$repo/$dist $codename stable" >/etc/apt/sources.list.d/docker.list
apt_get update
if grep -q "Failed to fetch $repo/" "$log"; then
  unreachable "$(grep "Failed to fetch $repo/" "$log" | tail -n 1)"
fi
apt_get install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
if command -v systemctl >/dev/null 2>&1; then systemctl enable --now docker >/dev/null 2>&1 || true
fi
docker compose version >/dev/null
echo "@docker installed"
