"""Tokens of the internal API kept in the database (`api_tokens`), beside INTERNAL_API_TOKENS.

`service` makes and revokes them (`python -m app token ...`); `directory.TokenDirectory` is each
API process's view of them, read again at most `TOKEN_CACHE_SECONDS` after the last read, so that
a revocation reaches every process within that (and the 5 seconds the contract allows).
"""
