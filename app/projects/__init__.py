"""Sinch projects: the `projects` table, the project the single-project settings define, and the
encryption of the projects' key secrets at rest."""
