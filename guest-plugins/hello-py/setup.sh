#!/usr/bin/env bash
# Installs the pinned Python toolchain of hello-py (requirements.txt) into the
# virtual environment .venv/. Idempotent: a second run with an up-to-date
# .venv/ does nothing. Needs python3 >= 3.9 with venv (on Debian, run as root:
# it installs python3-venv itself when that is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
    echo "error: $python not found; install Python 3 first" >&2
    exit 1
fi

# Skip the install when .venv/ was set up from this very requirements.txt.
stamp=.venv/.hello-py-setup
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ -x .venv/bin/componentize-py ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "hello-py: toolchain already installed"
    exit 0
fi

if [ ! -x .venv/bin/python ]; then
    rm -rf .venv
    if ! "$python" -m venv .venv 2>/dev/null; then
        # Debian's python3 ships venv (ensurepip) separately.
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv .venv
        else
            echo "error: '$python -m venv' failed; install python3-venv (Debian) first" >&2
            exit 1
        fi
    fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "$want" > "$stamp"
echo "hello-py: installed $(.venv/bin/componentize-py --version)"
