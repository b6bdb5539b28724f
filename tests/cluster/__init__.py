"""No single node: the suite on a 3-node RabbitMQ cluster, a PostgreSQL primary with a
synchronous standby, and two producers behind HAProxy — all started here by the fixtures."""
