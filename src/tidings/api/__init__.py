"""The HTTP API: app factory, dependencies, auth and thin routers."""
