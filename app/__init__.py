"""Sinch sender ID registration tracker: callbacks in, a converged local copy out."""
