#!/usr/bin/env python3
"""Register a runner with a muster coordinator using nothing but Python and `cryptography`.

The registration is signed by the runner's Ed25519 key: the signature covers the bytes
b"muster-register-v1\\n" followed by the canonical JSON of the request body without its
`signature` member (keys sorted, no spaces, non-ASCII escaped: exactly what
json.dumps(body, sort_keys=True, separators=(",", ":")) writes).

    python3 register_runner.py --server http://127.0.0.1:7070 --key runner.pem \\
        --name gpu-box-1 --kind bench --tag q4_k_m --resource vram_gb=24

A key file that does not exist is created (PEM PKCS#8, mode 0600), and its public key is
printed so an operator can put it on the allowlist (`muster runners keys add`). On success the
coordinator's answer is printed as JSON: the runner, its token and when the token expires.
"""

import argparse
import base64
import datetime
import json
import os
import socket
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_or_create_key(path):
    try:
        with open(path, "rb") as file:
            key = serialization.load_pem_private_key(file.read(), password=None)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        print(f"wrote a new key to {path}", file=sys.stderr)
    if not isinstance(key, Ed25519PrivateKey):
        sys.exit(f"{path}: not an Ed25519 private key")
    return key


def public_key_base64(key):
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


def signed_registration(key, name, hostname, kinds, labels, tags, resources, timestamp):
    body = {
        "name": name,
        "hostname": hostname,
        "public_key": public_key_base64(key),
        "kinds": kinds,
        "labels": labels,
        "tags": tags,
        "resources": resources,
        "timestamp": timestamp,
    }
    message = b"muster-register-v1\n" + canonical_json(body)
    body["signature"] = base64.b64encode(key.sign(message)).decode("ascii")
    return body


def pairs(values, convert):
    result = {}
    for value in values:
        name, separator, text = value.partition("=")
        if not separator:
            sys.exit(f"'{value}' is not NAME=VALUE")
        result[name] = convert(text)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the coordinator's URL")
    parser.add_argument("--key", required=True, help="the runner's PEM PKCS#8 key file")
    parser.add_argument("--name", required=True)
    parser.add_argument("--hostname", default=socket.gethostname())
    parser.add_argument("--kind", action="append", required=True, help="a kind it runs")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--resource", action="append", default=[], help="NAME=NUMBER")
    parser.add_argument(
        "--timestamp",
        help="sign as of this RFC 3339 time instead of now (for a coordinator on a test clock)",
    )
    parser.add_argument(
        "--print-public-key", action="store_true", help="print the public key and stop"
    )
    args = parser.parse_args()

    key = load_or_create_key(args.key)
    if args.print_public_key:
        print(public_key_base64(key))
        return 0
    timestamp = args.timestamp or datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    body = signed_registration(
        key,
        args.name,
        args.hostname,
        args.kind,
        pairs(args.label, str),
        args.tag,
        pairs(args.resource, float),
        timestamp,
    )
    request = urllib.request.Request(
        args.server.rstrip("/") + "/api/v1/runners/register",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
            answer["created"] = response.status == 201
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        print(f"registration refused: HTTP {error.code}: {detail}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
