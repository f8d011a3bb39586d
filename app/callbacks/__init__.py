"""Callback ingestion: prove a callback is Sinch's, keep it durably, answer."""
