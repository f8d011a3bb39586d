"""Dev tools beside the service: a fake Sinch, the sandbox, the demo, the `make run` launcher.

The production image does not install this package, and `app` never imports it."""
