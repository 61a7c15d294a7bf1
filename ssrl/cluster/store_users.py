"""Scoped MinIO users for the bundled store, so no workload holds the root credentials.

The chart's (and ``k8s/``'s) bucket-init Job runs ``ssrl store provision s3://<bucket>`` with the root
credentials: it creates the bucket, one IAM policy per role below and one user per role whose keys it finds in the
environment (``SSRL_STORE_<ROLE>_ACCESS_KEY`` / ``_SECRET_KEY``, each from that role's own Secret), and attaches
the policy. Re-running it is harmless (same users, policies replaced, passwords reset to the Secrets').

Listing (``s3:ListBucket``) covers the whole bucket: key names are not secret, and a prefix condition would also
refuse the plain bucket probe the S3 client makes. Reads and writes are limited by prefix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ssrl.errors import ConfigError, SSRLError

#: role -> (prefixes it reads, prefixes it writes); "*" is the whole bucket.
ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generator": (("sources/", "tasks/"), ("tasks/",)),
    "trainer": (("tasks/", "models/", "checkpoints/"), ("checkpoints/",)),
    "eval": (("*",), ("evals/",)),
    "reader": (("*",), ()),
}
WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]


def role_env(role: str) -> tuple[str, str]:
    """The environment variables holding a role's access and secret key."""
    return f"SSRL_STORE_{role.upper()}_ACCESS_KEY", f"SSRL_STORE_{role.upper()}_SECRET_KEY"


def policy_name(bucket: str, role: str) -> str:
    return f"ssrl-{bucket}-{role}"


def policy(bucket: str, role: str) -> dict[str, Any]:
    """The IAM policy document of ``role`` on ``bucket`` (pure)."""
    reads, writes = ROLES[role]

    def arns(prefixes: tuple[str, ...]) -> list[str]:
        return [f"arn:aws:s3:::{bucket}/{'' if p == '*' else p}*" for p in prefixes]

    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
         "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": arns(reads)},
    ]
    if writes:
        statements.append({"Effect": "Allow", "Action": WRITE_ACTIONS, "Resource": arns(writes)})
    return {"Version": "2012-10-17", "Statement": statements}


def provision(url: str, env: Mapping[str, str] | None = None, admin: Any = None, attempts: int = 5,
              backoff: float = 1.0) -> list[str]:
    """Create the bucket, the role policies and the users whose keys ``env`` holds; returns what was set up.

    ``admin``: a ``minio.MinioAdmin`` (default: from SSRL_S3_ENDPOINT and the root AWS_* credentials)."""
    env = os.environ if env is None else env
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.path.strip("/"):
        raise ConfigError(f"ssrl store provision takes a bucket URL (s3://<bucket>), got {url!r}")
    bucket = parsed.netloc
    users = {}
    for role in ROLES:
        access_var, secret_var = role_env(role)
        access, secret = env.get(access_var, ""), env.get(secret_var, "")
        if bool(access) != bool(secret):
            raise ConfigError(f"{role}: set both {access_var} and {secret_var}, or neither")
        if access:
            if len(secret) < 8:
                raise ConfigError(f"{secret_var} must be at least 8 characters (MinIO's minimum)")
            users[role] = (access, secret)
    client, admin = _clients(env, admin)
    for attempt in range(attempts):
        try:
            return _apply(client, admin, bucket, users)
        except Exception as e:  # one line, never the keys
            if attempt + 1 < attempts:  # a MinIO that has just started may answer before its IAM is ready
                time.sleep(backoff * 2 ** attempt)
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise SSRLError(f"provisioning s3://{bucket} failed ({type(e).__name__}): {first[:300]}") from None
    raise AssertionError("unreachable")


def _apply(client: Any, admin: Any, bucket: str, users: dict[str, tuple[str, str]]) -> list[str]:
    """Bucket, policies, users, attachments; each step idempotent, so a retry redoes it safely."""
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    done = [f"bucket {bucket}"]
    for role, (access, secret) in users.items():
        name = policy_name(bucket, role)
        admin.policy_add(name, policy=policy(bucket, role))
        admin.user_add(access, secret)
        try:
            admin.attach_policy([name], user=access)
        except Exception as e:  # already attached: MinIO answers an error for a no-op attach
            if "already" not in str(e).lower() and "XMinioAdminPolicyChangeAlreadyApplied" not in str(e):
                raise
        done.append(f"user {access} ({role}: policy {name})")
    return done


def _clients(env: Mapping[str, str], admin: Any) -> tuple[Any, Any]:
    try:
        from minio import Minio, MinioAdmin
        from minio.credentials import StaticProvider
    except ImportError:
        raise SSRLError("ssrl store provision needs the s3 extra: pip install 'ssrl[s3]'") from None
    endpoint = env.get("SSRL_S3_ENDPOINT", "")
    access, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not (endpoint and access and secret):
        raise ConfigError("ssrl store provision needs SSRL_S3_ENDPOINT and the root AWS_ACCESS_KEY_ID / "
                          "AWS_SECRET_ACCESS_KEY in the environment")
    parsed = urlparse(endpoint)
    secure = parsed.scheme == "https"
    client = Minio(parsed.netloc, access, secret, secure=secure)
    if admin is None:
        admin = MinioAdmin(endpoint=parsed.netloc, credentials=StaticProvider(access, secret), secure=secure)
    return client, admin

