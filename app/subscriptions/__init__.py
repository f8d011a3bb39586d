"""The changes pushed to internal services: subscriptions and their deliveries (Standard
Webhooks)."""
