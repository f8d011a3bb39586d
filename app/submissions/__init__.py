"""Creating, updating and deleting registrations at Sinch through this service (issue 27)."""
