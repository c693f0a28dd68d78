"""A TLS front for the plain-HTTP emulators, and a throwaway self-signed certificate for it.

`TlsFront(port, cert, key)` accepts TLS on 127.0.0.1 and relays each connection's bytes to the
emulator listening on `port`, so any emulator can be reached over https without changing it.
`handshake_failures` counts clients that hung up during the handshake (a refused certificate).
With `client_ca`, it requires a client certificate signed by it, as an http input with
`ssl_client_authentication => required` does. `TlsOnlyPort` hangs up on plain HTTP unanswered,
as Elasticsearch 8 does at its TLS port ("received plaintext http traffic on an https channel,
closing connection").
"""
from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Tuple

from tests.fakes.serving import StartedByWith, relay

LOOPBACK = "127.0.0.1"


class NoCertificateTool(Exception):
    """Neither the `cryptography` package nor the `openssl` program is available."""


def make_certificate(directory: Path) -> Tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and its key; return (certificate, key) paths."""
    certificate, key = directory / "selfsigned.pem", directory / "selfsigned.key"
    try:
        _with_cryptography(certificate, key)
    except ImportError:
        _with_openssl(certificate, key)
    return certificate, key


def _with_cryptography(certificate: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)])
    now = datetime.now(timezone.utc)
    public = key.public_key()
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
             .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                            critical=False)
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
             .sign(key, hashes.SHA256()))
    certificate.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _with_openssl(certificate: Path, key: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise NoCertificateTool("neither the cryptography package nor the openssl program is installed")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(certificate), "-days", "2",
                    "-subj", "/CN=" + LOOPBACK, "-addext", "subjectAltName=IP:" + LOOPBACK],
                   check=True, capture_output=True, timeout=60)


class TlsFront(StartedByWith):
    """TLS on 127.0.0.1:<port>, relayed in plain text to 127.0.0.1:<target port>."""

    def __init__(self, target_port: int, certificate: Path, key: Path, client_ca: Optional[Path] = None):
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(certificate), str(key))
        self.requires_client_certificate = client_ca is not None
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(str(client_ca))
        self.handshake_failures = 0
        self._listener: Optional[socket.socket] = None
        self._open: List[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return "https://%s:%d" % (LOOPBACK, self.port)

    def start(self) -> str:
        self._listener = socket.create_server((LOOPBACK, 0))
        threading.Thread(target=self._accept, name="tls-front-%d" % self.port, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.close()
                except OSError:
                    pass
            self._open.clear()


    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        secure: Optional[ssl.SSLSocket] = None
        try:
            # The handshake apart: a failed one in wrap_socket closes the socket at once.
            secure = self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            secure.do_handshake()
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshake_failures += 1
            if secure is not None and self.requires_client_certificate:
                _read_to_the_end(secure)
            (secure or connection).close()
            return
        try:
            plain = socket.create_connection((LOOPBACK, self.target_port), timeout=10)
        except OSError:
            secure.close()
            return
        with self._lock:
            self._open += [secure, plain]
        try:
            relay(secure, plain)
        except (OSError, ssl.SSLError, ValueError):  # ValueError: stop() closed a socket under select()
            pass
        finally:
            secure.close()
            plain.close()


class TlsOnlyPort(TlsFront):
    """A TlsFront that reads a plain HTTP request and closes the connection without an answer."""

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            first = connection.recv(1, socket.MSG_PEEK)
        except OSError:
            connection.close()
            return
        if first[:1] == b"\x16":  # a TLS handshake record
            super()._serve(connection)
            return
        try:
            connection.recv(65536)  # the plain request, read and dropped
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        connection.close()


def _read_to_the_end(connection: socket.socket) -> None:
    """Stop sending, then read what the client still sends until it hangs up. A TLS 1.3 client
    learns that its missing certificate was refused only after its handshake, from the alert it
    reads once it wrote its request: closed at once with that request unread, a loopback server
    resets the connection, and the client's write fails before it reads the alert, where over a
    network the request is on its way before the alert arrives."""
    try:
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(65536):
            pass
    except OSError:
        pass
