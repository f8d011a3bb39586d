"""Markets and policies as Sinch serves them (the catalog), and the check of a registration
request against its policy."""
