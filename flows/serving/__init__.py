"""Serving: the HTTP API, the web page and its figures."""
