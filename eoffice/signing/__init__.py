"""PDF signing engine (PAdES) and development PKI."""
