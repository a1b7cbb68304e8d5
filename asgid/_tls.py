"""TLS for the listeners: the server context built from the ``ssl_*`` settings.

Built in each worker after the fork (so a reload picks up renewed
certificates, and a key only root can read still loads before privileges
are dropped) and once by the master's preflight to fail early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ServerSettings

if TYPE_CHECKING:
    import ssl


def make_ssl_context(settings: ServerSettings, *, http2: bool = False) -> ssl.SSLContext | None:
    """The TLS context for ``ssl_*`` settings, or None when TLS is off.

    ALPN offers ``h2`` before ``http/1.1`` when ``http2`` is on; a client that
    offers neither (or no ALPN at all) gets HTTP/1.1.

    TLS 1.2 is the oldest version offered; renegotiation is refused (HTTP/1.1
    never needs it, and a client could use it to make the server repeat the
    costly handshake at will; OpenSSL 3 refuses it by default, 1.1.1 does
    not). Errors name the files they come from.
    """
    if not settings.ssl_certfile:
        return None
    import ssl  # only workers of TLS listeners need it

    if settings.ssl_cert_reqs and not settings.ssl_ca_certs:
        raise ValueError(
            "ssl_cert_reqs asks for client certificates: set ssl_ca_certs to verify them"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    keyfile = settings.ssl_keyfile or settings.ssl_certfile
    try:
        context.load_cert_chain(
            settings.ssl_certfile,
            settings.ssl_keyfile or None,
            settings.ssl_keyfile_password or _no_password,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        wrong = settings.ssl_keyfile_password and isinstance(exc, ssl.SSLError)
        hint = " (wrong ssl_keyfile_password?)" if wrong else ""
        raise OSError(
            f"cannot load {settings.ssl_certfile} with key {keyfile}: {exc}{hint}"
        ) from exc
    context.verify_mode = ssl.VerifyMode(settings.ssl_cert_reqs)
    if settings.ssl_ca_certs:
        try:
            context.load_verify_locations(settings.ssl_ca_certs)
        except OSError as exc:
            raise OSError(f"cannot load ssl_ca_certs {settings.ssl_ca_certs}: {exc}") from exc
    if settings.ssl_ciphers:
        try:
            context.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError as exc:
            raise OSError(f"ssl_ciphers {settings.ssl_ciphers!r}: {exc}") from exc
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


def _no_password() -> str:
    # Without a password callback OpenSSL would prompt on the terminal, and a
    # worker would wait there for ever.
    raise ValueError("the TLS key is encrypted: set ssl_keyfile_password")


def certificate_expiry(certfile: str) -> float:
    """When the first (leaf) certificate in ``certfile`` expires: notAfter, Unix time.

    Raises ``OSError`` or ``ValueError`` when the file cannot be read or parsed.
    """
    import ssl

    # The standard library's own PEM/X.509 reader (what its tests use); asgid
    # has no X.509 dependency of its own.
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        raise ValueError("this Python cannot decode certificates")
    try:
        info = decode(certfile)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot read the certificate {certfile}: {exc}") from exc
    return float(ssl.cert_time_to_seconds(info["notAfter"]))
