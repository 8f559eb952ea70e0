"""Webhooks: pushing arrivals, status changes and recall requests to agency systems."""
