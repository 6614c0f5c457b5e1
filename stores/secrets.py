"""Secrets from AWS Secrets Manager (legacy shape: a JSON object in the SecretString)."""

from __future__ import annotations

import json
from typing import Any

from stores.errors import SettingsError


def read_secret(secret_name: str, region: str | None = None, client: Any = None) -> dict[str, Any]:
    """The JSON object stored in an AWS Secrets Manager secret (SecretString).

    ``client`` is an optional boto3 ``secretsmanager`` client (tests pass a stubbed one).
    Errors name the secret but never include its content.
    """
    # deferred: boto3 takes a quarter of a second to import and only a named secret needs it
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        client = boto3.client("secretsmanager", region_name=region)
    try:
        response = client.get_secret_value(SecretId=secret_name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise SettingsError(f"cannot read secret {secret_name!r} ({region or 'default region'}): {code}") from None
    except BotoCoreError as exc:
        raise SettingsError(f"cannot read secret {secret_name!r}: {type(exc).__name__}") from None
    text = response.get("SecretString")
    if text is None:
        raise SettingsError(f"secret {secret_name!r} has no SecretString (binary secrets are not supported)")
    try:
        data = json.loads(text)
    except ValueError:
        raise SettingsError(f"secret {secret_name!r} is not a JSON object") from None
    if not isinstance(data, dict):
        raise SettingsError(f"secret {secret_name!r} is not a JSON object")
    return data
