"""The producer: takes the tester's callbacks and makes their ids durable (broker or spool)."""
