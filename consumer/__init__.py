"""The consumer: status lookups for queued ids, batched monotonic upserts, acks after commit."""
