"""Trust store with history: which certificates the service trusts, and since when."""
