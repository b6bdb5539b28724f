"""The brokers lastseen can run on, side by side: RabbitMQ (the default) and Google Pub/Sub."""
