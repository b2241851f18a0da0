#!/usr/bin/env python3
"""Development key and peer tokens for the `cluster` profile of docker-compose.yml (Python 3 standard
library only; docs/CLUSTER.md, "Deploying a mesh").

    peer-tokens.py [--dir DIR] [--key NAME] [--kid KID] [--peer NAME]... [--ttl SECONDS] [--every SECONDS] [--once]

Creates DIR/KEY (default /cluster/origin.jwk) once: an HS256 JWK with 32 random bytes and key id --kid
(default cluster-dev), the key the origin trusts with --auth-key (the file itself, or a copy named KID.jwk in
an --auth-key directory). Then, at start and every --every seconds (default 12 h), signs one token per --peer
NAME into DIR/NAME.jwt, the file that peer presents with --cluster-token:

    {"sub": NAME, "peer": true, "put": [""], "get": [""], "iat": now, "exp": now + --ttl}

(`put`/`get` [""] is everything, as `**`; a legacy put/get prefix cannot hold a wildcard.) --ttl defaults
to 24 h, so a token is replaced long before it expires: the origin re-reads its key file when it changes
and each edge re-reads its token file at every dial, so nothing restarts. Files are replaced atomically
(write, then rename). --once writes them and exits.

For development only: every container that mounts DIR can read the key. In production the signing key
stays with whoever issues tokens, and only the verifying side (`--auth-key`, or an auth server) is on the
relays. SIGTERM and SIGINT stop it cleanly (exit 0).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_atomically(path, text, mode=0o644):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_or_create_key(path, kid):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            jwk = json.load(f)
        if jwk.get("kty") != "oct" or jwk.get("alg") != "HS256" or not jwk.get("k"):
            sys.exit(f"peer-tokens: {path} is not an HS256 JWK; remove it to have a new one generated")
        return jwk
    jwk = {"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(os.urandom(32))}
    # The relay image runs as an unprivileged user: the files must be readable by it.
    write_atomically(path, json.dumps(jwk) + "\n")
    print(f"peer-tokens: new key {path} (kid {jwk['kid']})", flush=True)
    return jwk


def sign(jwk, claims):
    header = {"alg": "HS256", "typ": "JWT"}
    if jwk.get("kid"):
        header["kid"] = jwk["kid"]
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(b64url_decode(jwk["k"]), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def mint(args, jwk):
    now = int(time.time())
    for peer in args.peer:
        claims = {"sub": peer, "peer": True, "put": [""], "get": [""], "iat": now, "exp": now + args.ttl}
        write_atomically(os.path.join(args.dir, f"{peer}.jwt"), sign(jwk, claims) + "\n")
    print(f"peer-tokens: signed {', '.join(args.peer)} (expire in {args.ttl} s)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/cluster", help="where the key and tokens go (default %(default)s)")
    ap.add_argument("--key", default="origin.jwk", help="key file name in --dir (default %(default)s)")
    ap.add_argument("--kid", default="cluster-dev", help="key id of a new key (default %(default)s)")
    ap.add_argument("--peer", action="append", default=[], help="a token subject (repeatable)")
    ap.add_argument("--ttl", type=int, default=86400, help="token lifetime in seconds (default %(default)s)")
    ap.add_argument("--every", type=int, default=43200, help="seconds between re-signings (default %(default)s)")
    ap.add_argument("--once", action="store_true", help="sign once and exit")
    args = ap.parse_args()
    if not args.peer:
        ap.error("give at least one --peer NAME")
    if args.every >= args.ttl:
        ap.error("--every must be shorter than --ttl, or tokens expire between signings")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    os.makedirs(args.dir, exist_ok=True)
    jwk = load_or_create_key(os.path.join(args.dir, args.key), args.kid)
    while True:
        mint(args, jwk)
        if args.once:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
