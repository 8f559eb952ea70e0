"""PDF (PAdES) signature verification engine: see :func:`verify_file` / :func:`verify_files`."""

from .certs import load_certificates
from .engine import VerifyOptions, verify_file, verify_files

__all__ = ["VerifyOptions", "load_certificates", "verify_file", "verify_files"]
