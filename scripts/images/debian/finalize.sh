#!/bin/sh
# Runs inside the debootstrapped root (chroot) before `podman import`.
# $1: the Debian mirror URI the host uses.
set -eu
mirror="$1"

# Containers fetch packages from the same mirror as the host (the only one
# reachable); the security suite lives next to it.
security="$(printf '%s' "${mirror}" | sed 's#/debian$#/debian-security#')"
rm -f /etc/apt/sources.list
cat >/etc/apt/sources.list.d/debian.sources <<SRC
Types: deb
URIs: ${mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

# Docs and man pages only cost image size (and nested-podman copy time).
cat >/etc/dpkg/dpkg.cfg.d/fleetcert-nodoc <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >/etc/apt/apt.conf.d/90fleetcert <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/* /root/.cache
mkdir -p /var/lib/apt/lists/partial
# ansible.builtin.apt's cache_valid_time falls back to this folder's mtime when
# no update stamp exists: epoch forces the first update in every container.
touch -d @0 /var/lib/apt/lists
# Without a hostname file, some daemons (sudo) complain on every call.
echo localhost >/etc/hostname
: >/etc/machine-id
