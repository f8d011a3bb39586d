"""What every part of the service stands on: settings, the database and its tables, logs, problems,
pagination, metrics, job names, idempotency keys. Nothing here imports a domain package."""
