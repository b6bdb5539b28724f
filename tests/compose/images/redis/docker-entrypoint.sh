#!/bin/sh
# docker-entrypoint.sh of the redis stand-in, as the official image's: a first argument that is an
# option or a .conf file means redis-server; started as root, it gives /data to the redis user and
# runs itself again as that user. The official image builds redis-server with protected mode off
# (it has no password by default and is reached from other containers); Debian's has it on, so it
# is turned off here, first, where a later argument still overrides it.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --clear-groups "$0" "$@"
fi
um=$(umask)
if [ "$um" = 0022 ]; then
    umask 0077
fi
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
