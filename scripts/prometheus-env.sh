#!/usr/bin/env bash
# Prints the path of a Prometheus server binary for the end-to-end tests, installing
# Debian's `prometheus` package first when there is none (needs root, as on CI).
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "prometheus-env.sh: install Debian's prometheus package (apt-get install prometheus), or run as root" >&2
        exit 1
    fi
    echo "prometheus-env.sh: installing Debian's prometheus package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends prometheus >&2
fi
command -v prometheus
