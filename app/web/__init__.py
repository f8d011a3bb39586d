"""The HTTP edge shared by every route: resources and dependencies, authentication, limits, health,
the API documentation pages."""
