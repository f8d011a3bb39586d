"""The Sinch Registrations API client (docs/sinch.md: what the API does and does not document).

Imported from its modules, as everything else in app/ is: `client` (`SinchClient`,
`create_http_client`), `errors` (the exception tree), `schemas` (Sinch's documents), `auth` (the
OAuth2 token).
"""
