#!/usr/bin/env bash
# The README's main command: on a fresh Debian 12, as root,
#     bash packaging/run.sh [--policy FILE] [--socket SPEC]
# installs what trustmilter needs (packaging/install.sh: Debian packages and
# ./.venv) and runs it in the foreground, logging to this terminal, with the
# shipped policy.yaml: the built-in defaults, no external service needed.
# It prints where it listens and the `postconf -e` lines that point Postfix
# at it. Ctrl-C (SIGINT) or SIGTERM stops it; SIGHUP re-reads the policy.
# For a permanent install see README, "Install for production".
set -euo pipefail

# postfix_spec SPEC: the socket as Postfix's smtpd_milters writes it.
# trustmilter and Sendmail write inet:PORT@HOST and inet6:PORT@HOST; Postfix
# writes inet:HOST:PORT and inet:[IPv6]:PORT (unix:/path is the same).
postfix_spec() {
    local spec=$1 rest host
    case $spec in
        inet:*@*)  rest=${spec#inet:}; echo "inet:${rest#*@}:${rest%%@*}" ;;
        inet6:*@*) rest=${spec#inet6:}; host=${rest#*@}; host=${host#[}; host=${host%]}
                   echo "inet:[$host]:${rest%%@*}" ;;
        local:*)   echo "unix:${spec#local:}" ;;
        *)         echo "$spec" ;;
    esac
}

main() {
    cd "$(dirname "$0")/.."

    policy=policy.yaml
    socket=""
    while [ $# -gt 0 ]; do
        case $1 in
            --policy) policy=${2:?--policy needs a file}; shift 2 ;;
            --socket) socket=${2:?--socket needs a spec like inet:8894@127.0.0.1}; shift 2 ;;
            -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
        esac
    done

    bash packaging/install.sh
    bin=.venv/bin

    # The socket: --socket, else the policy's milter.socket. Loading the policy
    # here also stops a broken one before anything is printed.
    if [ -z "$socket" ]; then
        socket=$("$bin/python" -c '
import sys
from trustmilter.config.load import ConfigError, load_settings
try:
    print(load_settings(sys.argv[1]).milter.socket)
except (ConfigError, OSError) as error:
    sys.exit(f"run.sh: {error}")
    ' "$policy")
    fi

    postfix_socket=$(postfix_spec "$socket")

    cat <<EOF

trustmilter will listen on $socket (policy: $policy).
Point Postfix at it (as root; Postfix writes the socket as $postfix_socket):

    postconf -e 'smtpd_milters = $postfix_socket'
    postconf -e 'non_smtpd_milters = $postfix_socket'
    postconf -e 'milter_default_action = tempfail'
    postconf -e 'milter_protocol = 6'
    postconf -e 'milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mailer}'
    postconf -e 'milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}'
    postconf -e 'milter_end_of_data_macros = i'
    postfix reload

EOF
    case $postfix_socket in
        unix:*) echo "A unix socket is not reachable from Debian's chrooted smtpd: see packaging/postfix/main.cf." ;;
    esac
    echo "Verdict lines follow here, one per message (Ctrl-C stops trustmilter)."
    echo

    exec "$bin/trustmilter" run --policy "$policy" --socket "$socket" --foreground-log
}

# Sourced (by tests/test_packaging.py) it only defines the functions above.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
