"""A throwaway CA and a server certificate for localhost, made with the openssl command line."""

import subprocess
from pathlib import Path


def make_certificates(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca_key", "server", "server_key")}
    csr, ext = directory / "server.csr", directory / "server.ext"

    def openssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=electra-qa test CA",
        "-keyout",
        paths["ca_key"],
        "-out",
        paths["ca"],
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", paths["server_key"], "-out", csr
    )
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        paths["ca"],
        "-CAkey",
        paths["ca_key"],
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        paths["server"],
    )
    return paths
