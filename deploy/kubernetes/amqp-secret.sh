#!/bin/sh
# Creates (or replaces) the Secret lastseen-amqp that the producer, the consumers and KEDA read:
# key AMQP_URI = amqp://<user>:<password>@lastseen-rabbitmq.<namespace>.svc:5672/, with the user
# the RabbitMQ Cluster Operator generated (Secret lastseen-rabbitmq-default-user). No credential
# is written to a file. Run it once the RabbitmqCluster is ready (README.md here, step 4).
#
# The Service lastseen-rabbitmq spreads connections over the three nodes, and a client whose node
# dies reconnects through it to a live one. (Outside Kubernetes AMQP_URI may instead list every
# node, comma-separated: see the "no single node" work; KEDA needs one URI either way.)
set -eu
namespace="${1:-lastseen}"
secret() {
    kubectl -n "$namespace" get secret lastseen-rabbitmq-default-user -o "jsonpath={.data.$1}" | base64 -d
}
user="$(secret username)"
password="$(secret password)"
# The operator generates URL-safe credentials; with python3 at hand, escape anyway so that any
# password (one you set yourself) still makes a valid URI.
quote() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
    else
        printf '%s' "$1"
    fi
}
uri="amqp://$(quote "$user"):$(quote "$password")@lastseen-rabbitmq.$namespace.svc:5672/"
kubectl -n "$namespace" create secret generic lastseen-amqp \
    --from-literal=AMQP_URI="$uri" --dry-run=client -o yaml | kubectl apply -f -
echo "secret/lastseen-amqp ready in namespace $namespace"
