"""The audit trail: who did which write, when and from where (`audit_log`).

`repository.record` adds an entry to the caller's session, so that it commits (or rolls back) with
the write it records; `queries.recent` lists entries, newest first, for `GET /v1/audit` and the
console.
"""
