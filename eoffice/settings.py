"""Configuration from the environment (prefix ``EOFFICE_``); a CLI flag wins over it."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev"}


class Settings(BaseSettings):
    """Every setting the service, workers and CLI read."""

    model_config = SettingsConfigDict(env_prefix="EOFFICE_", env_file=None, extra="ignore")
    _generated_secret: str | None = PrivateAttr(default=None)

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str = ""
    # Connections per engine. On PostgreSQL an API process has two engines (its request
    # threads' and its event loop's, see db.unit_engine_for): up to twice pool + overflow.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    broker_url: str = ""
    blob_dir: Path | None = None
    secret_key: str = ""
    secret_key_file: Path | None = None
    access_token_minutes: int = 30
    max_upload_mb: int = 250
    max_attachments: int = 20
    login_max_failures: int = 5
    login_window_seconds: int = 900
    routing_policy: Literal["province", "open", "hierarchy"] = "province"
    tasks_eager: bool = False
    broker_polling_interval: float = 0.2
    pki_dir: Path | None = None
    pki_base_url: str = "http://127.0.0.1:8000/pki"
    trust_dir: Path = Path("certs/trust")
    timezone: str = "Asia/Ho_Chi_Minh"
    holidays: list[str] = Field(default_factory=list)
    outbox_relay_seconds: float = 5.0
    seed_demo: bool = True
    log_json: bool = False
    broker_visibility_timeout: int = 3600
    requeue_queued_after_seconds: int = 120
    # --- signing jobs (issue 3): how long POST /documents/{id}/sign waits for the worker to
    # prepare, retry policy for TSA/OCSP outages, where the organisation seal keys live ---
    sign_prepare_wait_seconds: float = 30.0
    sign_max_retries: int = 5
    sign_retry_backoff_seconds: float = 10.0
    sign_retry_backoff_max_seconds: float = 600.0
    sign_remote_ttl_minutes: int = 60  # two-step jobs left unsigned this long are expired
    user_keys_dir: Path | None = None  # <username>.p12 of leaders; default <pki_dir>/users
    signature_images_dir: Path | None = None  # <username>.png; default <pki_dir>/images/signatures
    seal_images_dir: Path | None = None  # <agency_code>.png; default <pki_dir>/images/seals
    seal_keys_dir: Path | None = None  # <agency_code>.p12; default <pki_dir>/seals
    seal_passphrase_dir: Path | None = None  # <agency_code>.pass; default = seal_keys_dir
    pkcs11_module: str = ""  # set to use an HSM for seals instead of PKCS#12 files
    pkcs11_token: str = ""
    pkcs11_pin_file: Path | None = None
    pkcs11_key_label: str = "seal-{agency_code}"
    pkcs11_chain_file: Path | None = None  # PEM intermediates of the HSM seal certificates
    # Stats (issue 6): how often beat reconciles the aggregates with a full recomputation.
    stats_reconcile_seconds: float = 3600.0
    # --- verification, trust store, audit anchoring (issue 4) ---
    verify_revocation: Literal["require", "soft", "off"] = "soft"
    reverify_after_hours: int = 24 * 7
    reverify_batch: int = 200
    service_seal_p12: Path | None = None
    service_seal_pass_file: Path | None = None
    tsa_url: str = ""  # empty: <pki_base_url>/tsa (the development TSA)
    audit_anchor_minutes: float = 60.0
    # A process seals the audit chain after a commit at most this often (an API process with
    # a broker asks a worker to); commits in between leave their entries to the next seal or
    # to beat (audit_seal_beat_seconds). 0 = always.
    audit_seal_interval_seconds: float = 0.5
    audit_seal_beat_seconds: float = 2.0
    # Sends to at most this many new receivers are delivered within the request; larger
    # fan-outs are queued for a worker (0: always the worker). See bench/routing.py.
    inline_delivery_max: int = Field(default=10, ge=0)
    # Group commit of the units agency systems call per document (create and send): at most
    # this many requests share one transaction, in at most this many transactions at once.
    unit_batch_max: int = Field(default=32, ge=1, le=1000)
    unit_batches_running: int = Field(default=2, ge=1, le=64)
    # With a real broker, outbox rows committed within this window are published together
    # (one UPDATE; rows of a batchable task as one message). 0: publish each commit.
    outbox_batch_seconds: float = Field(default=0.02, ge=0, le=5)
    # Rows of a batchable task (statistics, arrival checks) gather this long instead: a
    # batch of a few documents costs the worker about what one costs (bench/routing.py).
    outbox_batch_task_seconds: float = Field(default=0.25, ge=0, le=30)
    # Worker processes add task outcomes to the shared counters at most this often.
    task_stats_flush_seconds: float = 5.0
    # Web UI: signed session cookie, idle expiry; Secure flag auto = only over https.
    web_session_idle_minutes: int = 30
    web_cookie_secure: Literal["auto", "always", "never"] = "auto"
    # --- platform: shared blob store, webhooks, metrics (issue 5) ---
    blob_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str = ""
    s3_bucket: str = "eoffice"
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_access_key_file: Path | None = None
    s3_secret_key: str = ""
    s3_secret_key_file: Path | None = None
    s3_create_bucket: bool = False
    database_password_file: Path | None = None
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 30.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_sweep_seconds: float = 5.0
    webhook_allow_private: bool = True

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'eoffice.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.pki_dir is None:
            self.pki_dir = self.data_dir / "pki"
        if self.database_password_file and not self.is_sqlite:
            # The URL names the server; the password comes from a secret file, never the env.
            from sqlalchemy.engine import make_url

            url = make_url(self.database_url).set(
                password=self.database_password_file.read_text().strip())
            self.database_url = url.render_as_string(hide_password=False)
        if self.s3_access_key_file and not self.s3_access_key:
            self.s3_access_key = self.s3_access_key_file.read_text().strip()
        if self.s3_secret_key_file and not self.s3_secret_key:
            self.s3_secret_key = self.s3_secret_key_file.read_text().strip()
        if self.secret_key_file and not self.secret_key:
            self.secret_key = self.secret_key_file.read_text().strip()
        if self.environment == "production" and self.secret_key in PLACEHOLDER_SECRETS:
            raise ValueError("EOFFICE_SECRET_KEY must be set to a real secret in production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_secret(self) -> str:
        """The token-signing secret; in development one is generated once per data dir.

        Read once per settings object: every API request checks a token with it, and
        reading the file each time cost about 1% of a create-and-send (py-spy).
        """
        if self.secret_key and self.secret_key not in PLACEHOLDER_SECRETS:
            return self.secret_key
        if self._generated_secret is None:
            self._generated_secret = self._read_or_make_secret()
        return self._generated_secret

    def _read_or_make_secret(self) -> str:
        path = self.data_dir / ".secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache to change them)."""
    return Settings()
