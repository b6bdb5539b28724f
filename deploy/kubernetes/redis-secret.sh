#!/bin/sh
# Creates the Secret lastseen-redis for components/redis, BEFORE the RedisCluster is applied (the
# operator reads the password from it when it creates the nodes): key password = a new random
# password (hex, so it needs no escaping in a URL), key REDIS_URL = redis://:<password>@
# lastseen-redis-leader.<namespace>.svc:6379, the seed the consumers' cluster client starts
# from (REDIS_CLUSTER=true). No credential is written to a file. An existing Secret is kept: a new
# password would no longer match the running nodes.
set -eu
namespace="${1:-lastseen}"
if kubectl -n "$namespace" get secret lastseen-redis >/dev/null 2>&1; then
    echo "secret/lastseen-redis already exists in namespace $namespace: kept"
    exit 0
fi
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
url="redis://:$password@lastseen-redis-leader.$namespace.svc:6379"
kubectl -n "$namespace" create secret generic lastseen-redis \
    --from-literal=password="$password" --from-literal=REDIS_URL="$url" \
    --dry-run=client -o yaml | kubectl apply -f -
echo "secret/lastseen-redis ready in namespace $namespace"
