#!/usr/bin/env bash
# Installs the pinned JavaScript toolchain of hello-js (componentize-js and
# its dependencies, the exact versions in package-lock.json) into
# node_modules/. Idempotent: a second run with an up-to-date node_modules/
# does nothing. Needs Node.js >= 18 and npm (from the npm registry only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "error: node and npm are needed (Node.js >= 18); install them first" >&2
    exit 1
fi

# Skip the install when node_modules/ was installed from this very
# package-lock.json.
stamp=node_modules/.hello-js-setup
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -x node_modules/.bin/componentize-js ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "hello-js: toolchain already installed"
    exit 0
fi
# Not `npm ci`: the registry mirror of this machine lacks some optional
# platform packages (rolldown, jco-node-fs bindings for other OSes) at the
# locked versions, so package-lock.json cannot list them and `npm ci` refuses
# it as "out of sync". `npm install --no-save` installs the same locked
# versions and leaves the lock file untouched.
npm install --no-save --no-audit --no-fund
echo "$want" > "$stamp"
echo "hello-js: installed componentize-js $(node -p "require('./node_modules/@bytecodealliance/componentize-js/package.json').version")"
