#!/usr/bin/env bash
# Install trustmilter and what it needs on Debian 12, as root, non-interactively.
#   bash packaging/install.sh          the milter, in ./.venv
#   bash packaging/install.sh --test   the milter plus its test dependencies
#   bash packaging/install.sh --link   also /usr/local/bin/trustmilter -> ./.venv
#                                      (a production install from source: the
#                                      command on every administrator's PATH)
# Idempotent: a second run only updates. Never asks a question (CI has no stdin).
# The Debian package (packaging/build-deb.sh) is the other production install.

# link_command SOURCE TARGET: TARGET becomes a symlink to SOURCE; only a
# symlink is ever replaced, never a file someone else put there.
link_command() {
    local source=$1 target=$2
    if [ -e "$target" ] && [ ! -L "$target" ]; then
        echo "install.sh: $target exists and is not a symlink; left alone" >&2
        return 1
    fi
    ln -sfn "$source" "$target"
    echo "trustmilter on PATH: $target -> $source"
}

# Sourced (by tests/test_install_link.py) it only defines the function above.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    return 0
fi

set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
link=0
for argument in "$@"; do
    case $argument in
        --test) with_tests=1 ;;
        --link) link=1 ;;
        *) echo "install.sh: unknown argument $argument (--test, --link)" >&2; exit 2 ;;
    esac
done

export DEBIAN_FRONTEND=noninteractive
packages=(python3 python3-venv python3-dev gcc libmilter-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# --test: a real Postfix for tests/test_postfix_*.py, which run private
# instances only. The package must not configure or start the system's own
# Postfix: "No configuration" for debconf, and a policy-rc.d that denies
# every service start while apt runs (removed again if we made it).
if [ "$with_tests" = 1 ] && ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "ok installed"; then
    made_policy_rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy_rc=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postfix </dev/null
    [ "$made_policy_rc" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# --test: Debian's miltertest (OpenDKIM's Lua-scripted MTA simulator) drives
# trustmilter as Sendmail would, for tests/test_miltertest.py. It starts no service.
if [ "$with_tests" = 1 ] && ! dpkg-query -W -f='${Status}' miltertest 2>/dev/null | grep -q "ok installed"; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends miltertest </dev/null
fi

# --test: m4, which builds the private Sendmail's sendmail.cf for
# tests/test_sendmail_*.py (Sendmail itself is fetched below, not installed).
if [ "$with_tests" = 1 ] && ! dpkg-query -W -f='${Status}' m4 2>/dev/null | grep -q "ok installed"; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends m4 </dev/null
fi

# --test: Debian's Chromium and its chromedriver, which the review page's
# browser tests drive headless through Selenium (tests/test_review_browser*.py);
# no browser is downloaded at test time.
if [ "$with_tests" = 1 ] && ! dpkg-query -W -f='${Status}' chromium-driver 2>/dev/null | grep -q "ok installed"; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-noto-cjk </dev/null
fi

# --test: a real redis-server for tests/test_state_*.py, which start private
# servers on free loopback ports (trustmilter.testing.redisserver). The
# system's own redis must not start: a policy-rc.d denies every service
# start while apt runs (removed again if we made it), as for Postfix above.
if [ "$with_tests" = 1 ] && ! dpkg-query -W -f='${Status}' redis-server 2>/dev/null | grep -q "ok installed"; then
    made_policy_rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy_rc=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server </dev/null
    [ "$made_policy_rc" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The exact versions the project is tested with (README: "Upgrading the pinned
# libraries"); the library patches in trustmilter/compat/ are written for them.
if [ "$with_tests" = 1 ]; then
    .venv/bin/python -m pip install -q -c packaging/constraints.txt -e '.[test]'
else
    .venv/bin/python -m pip install -q -c packaging/constraints.txt -e .
fi
# --test: Debian's Sendmail for tests/test_sendmail_*.py, downloaded with
# apt-get download and unpacked with dpkg-deb -x into
# ~/.cache/trustmilter-test/sendmail, once: never installed, because the
# sendmail and postfix packages conflict (trustmilter/testing/sendmailpkg.py).
if [ "$with_tests" = 1 ]; then
    .venv/bin/python -m trustmilter.testing.sendmailpkg fetch
fi
echo "trustmilter installed: $(.venv/bin/trustmilter --version)"

# --link: the command on PATH. /usr/local/bin, not /usr/bin, which is the
# package manager's (the Debian package puts its own /usr/bin/trustmilter there).
if [ "$link" = 1 ]; then
    link_command "$PWD/.venv/bin/trustmilter" /usr/local/bin/trustmilter
    if [ -e /usr/bin/trustmilter ]; then
        echo "install.sh: the Debian package's /usr/bin/trustmilter is installed too;" \
             "/usr/local/bin/trustmilter comes first on root's PATH" >&2
    fi
fi
