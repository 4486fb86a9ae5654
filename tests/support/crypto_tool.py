"""Keys, tokens and certificates for kinetic's end-to-end tests, made with PyJWT and `cryptography`
(implementations kinetic shares no code with).

  crypto_tool.py jwt-keys DIR [PREFIX]      RSA, P-256 and Ed25519 keys in DIR, and DIR/jwks.json
                                            (key ids PREFIX + rsa, ec, ed)
  crypto_tool.py jwt-sign DIR ALG CLAIMS    a token signed with DIR's key for ALG (RS256, ES256,
                                            EdDSA); CLAIMS is JSON; `kid` names the key
  crypto_tool.py tls DIR NAME               DIR/ca.pem and a server certificate NAME.pem / NAME.key
                                            for 127.0.0.1 and localhost, signed by the CA (made once)
  crypto_tool.py serial HOST PORT CA        the serial number of the certificate HOST:PORT serves
  crypto_tool.py jwt-verify ISSUER AUD JWT  verifies JWT as any OIDC client would: the issuer's
                                            discovery document, its jwks_uri, the audience; prints
                                            the claims
"""

import datetime
import json
import os
import sys

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

KEYS = {
    "RS256": ("rsa", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ES256": ("ec", lambda: ec.generate_private_key(ec.SECP256R1())),
    "EdDSA": ("ed", lambda: ed25519.Ed25519PrivateKey.generate()),
}


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def jwt_keys(directory, prefix=""):
    keys = []
    kids = {}
    for alg, (name, make) in KEYS.items():
        kid = prefix + name
        kids[alg] = kid
        key = make()
        with open(os.path.join(directory, kid + ".pem"), "wb") as f:
            f.write(pem(key))
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        keys.append(jwk)
    with open(os.path.join(directory, "kids.json"), "w") as f:
        json.dump(kids, f)
    # Renamed into place: a reader never sees half a key set.
    with open(os.path.join(directory, "jwks.json.tmp"), "w") as f:
        json.dump({"keys": keys}, f)
    os.replace(os.path.join(directory, "jwks.json.tmp"), os.path.join(directory, "jwks.json"))


def jwt_sign(directory, alg, claims):
    with open(os.path.join(directory, "kids.json")) as f:
        kid = json.load(f)[alg]
    key = load(os.path.join(directory, kid + ".pem"))
    print(jwt.encode(json.loads(claims), key, algorithm=alg, headers={"kid": kid}))


def tls(directory, name):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key_path = os.path.join(directory, "ca.key")
    ca_path = os.path.join(directory, "ca.pem")
    if os.path.exists(ca_path):
        ca_key = load(ca_key_path)
        with open(ca_path, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kinetic test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        with open(ca_key_path, "wb") as f:
            f.write(pem(ca_key))
        with open(ca_path, "wb") as f:
            f.write(ca.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Written to temporary names, then renamed: a reader never sees half a file.
    for suffix, data in ((".key", pem(key)), (".pem", cert.public_bytes(serialization.Encoding.PEM))):
        path = os.path.join(directory, name + suffix)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    print(cert.serial_number)


def serial(host, port, ca):
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls_socket:
            der = tls_socket.getpeercert(binary_form=True)
    print(x509.load_der_x509_certificate(der).serial_number)


def jwt_verify(issuer, audience, token):
    import urllib.request

    with urllib.request.urlopen(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10) as r:
        discovery = json.load(r)
    assert discovery["issuer"] == issuer, discovery
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience=audience,
        issuer=issuer,
    )
    print(json.dumps(claims))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "jwt-keys":
        jwt_keys(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    elif command == "jwt-sign":
        jwt_sign(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "tls":
        tls(sys.argv[2], sys.argv[3])
    elif command == "jwt-verify":
        jwt_verify(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "serial":
        serial(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown command " + command)
