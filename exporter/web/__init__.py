"""The generic HTTP server: listening, HTTP/1.1 (h11), limits, TLS, basic auth, the landing
page and the one Jinja2 environment. It knows no page of the exporter's: the pages come as
routes from ``exporter.pages``.
"""
