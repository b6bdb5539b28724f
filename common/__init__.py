"""Shared building blocks of the lastseen services: settings, logging, AMQP, PostgreSQL."""
