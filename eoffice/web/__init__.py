"""Web UI: Jinja2 pages with HTMX over the domain services."""
