"""The ASGI application: transports, the server API, static files and pages."""
