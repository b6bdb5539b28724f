"""The routine: deletes objects not seen for ``OBJECT_TTL``, every ``ROUTINE_INTERVAL``."""
