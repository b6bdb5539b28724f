#!/bin/bash
# docker-entrypoint.sh of the rabbitmq stand-in, on PATH and behaving as the official image's as
# far as the compose files use it: `docker-entrypoint.sh rabbitmq-server` run as root gives
# /var/lib/rabbitmq to the rabbitmq user and runs itself again as that user; any other command runs
# as given. The stand-in's own part: RABBITMQ_DEFAULT_USER/PASS and the listeners written to a
# conf.d file (the official image's server reads the variables itself).
set -euo pipefail

if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
    if [ "$1" = rabbitmq-server ]; then
        find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
    fi
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$BASH_SOURCE" "$@"
fi

if [ "$1" = rabbitmq-server ]; then
    {
        echo "loopback_users = none"
        echo "listeners.tcp.default = 5672"
        echo "management.tcp.port = 15672"
        if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
        if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
    } >/etc/rabbitmq/conf.d/10-standin.conf
    # Debian's /usr/sbin/rabbitmq-server is a wrapper that stays the parent: exec the server script
    # itself so that it is PID 1 and `docker stop`'s SIGTERM reaches it.
    shift
    set -- /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
