#!/usr/bin/env bash
# Prepares an ubuntu-24.04 GitHub runner for the integration tests: disk space, LXD
# (installed and initialised if canonical/setup-lxd did not), Docker's firewall opened
# for the LXD bridge, jq, Juju 3.6 from snap, and a controller on localhost.
set -euo pipefail
SCENARIO=setup
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# Two unpacked releases, their tarballs and four containers need more than the runner's
# default free space.
free_disk() {
    sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /opt/hostedtoolcache/CodeQL
    df -h /
}

ensure_lxd() {
    if ! command -v lxc >/dev/null; then
        sudo snap install lxd
        sudo lxd init --auto
    fi
    if ! lxc list >/dev/null 2>&1; then
        sudo usermod -aG lxd "$USER"
        sudo chmod a+rw /var/snap/lxd/common/lxd/unix.socket
    fi
    lxc network get lxdbr0 ipv4.address
}

# Docker on the runner sets the FORWARD policy to DROP, which cuts LXD containers off
# the network; accept the bridge's traffic (LXD's documented workaround).
open_docker_firewall() {
    if sudo iptables -L DOCKER-USER >/dev/null 2>&1; then
        sudo iptables -I DOCKER-USER -i lxdbr0 -j ACCEPT
        sudo iptables -I DOCKER-USER -o lxdbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    fi
}

install_tools() {
    command -v jq >/dev/null || sudo apt-get install -y jq
    sudo snap install juju --channel=3.6/stable
    mkdir -p "$HOME/.local/share"
    juju version
}

bootstrap() {
    juju bootstrap localhost it --model-default update-status-hook-interval=30s
}

main() {
    step free_disk
    step ensure_lxd
    step open_docker_firewall
    step install_tools
    step bootstrap
}

main "$@"
