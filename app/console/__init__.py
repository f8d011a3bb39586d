"""The operator console (`/console`): server-rendered pages for people (docs/console.md)."""
