"""The sandbox's settings: one frozen object built at the entry point and passed down."""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field

#: The scope basicSync's ``Workflow_Execute`` policy asks for.
WORKFLOW_EXECUTE = "https://www.workfloplus.com/auth/workflow.execute"
#: A second scope the default client holds, so tests can get a token that lacks the one above.
JOB_READ = "https://www.workfloplus.com/auth/job.read"


class SandboxSettings(BaseModel):
    """How the sandbox listens and which single M2M client it knows.

    ``scopes`` are the scopes the client may be granted; a token request without ``scope`` gets
    all of them. ``record_limit`` and ``history_limit`` bound memory during long benchmarks: the
    oldest recorded requests (and, per job, the oldest accepted versions) are dropped first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    scopes: tuple[str, ...] = (WORKFLOW_EXECUTE, JOB_READ)
    token_lifetime_s: int = Field(default=3600, gt=0)
    record_limit: int = Field(default=10_000, ge=0)
    history_limit: int = Field(default=1_000, ge=1)
    reuse_port: bool = False
    signing_key: str = Field(
        default_factory=lambda: secrets.token_hex(16),
        repr=False,
        description="HMAC key of the JWT-like tokens; shared by all workers of one sandbox",
    )
