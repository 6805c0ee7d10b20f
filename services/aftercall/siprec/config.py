"""The [siprec] section: `aftercall serve siprec`, the SIPREC recording server."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aftercall.core.config import Section, parse_address, setting
from aftercall.core.errors import ConfigError
from aftercall.siprec.roles import parse_trunks


@dataclass(frozen=True)
class SiprecConfig(Section):
    """`aftercall serve siprec`: a SIPREC recording server (RFC 7866) feeding calls from an SBC or PBX into ingest."""

    # SIP over UDP and TCP on this address; empty: none (TLS only).
    listen: str = "127.0.0.1:5060"
    # SIP over TLS (needs tls_cert_file and tls_key_file); empty: none.
    tls_listen: str = ""
    # The TLS listener's certificate chain (PEM).
    tls_cert_file: str = ""
    # The certificate's private key (PEM), in a file only this user may read (mode 0600).
    tls_key_file: str = ""
    # Set: an SBC must present a certificate signed by this CA on the TLS listener.
    tls_client_ca_file: str = ""
    # Prometheus endpoint when siprec runs on its own (with ingest in one process: server.metrics_listen).
    metrics_listen: str = "127.0.0.1:9466"
    # The SBCs and PBXs that may record here (addresses or CIDR networks); SIP and RTP from anywhere else is refused.
    allowed_sources: tuple[str, ...] = ("127.0.0.1", "::1")
    # The address put in our SDP answers for RTP; empty: the SIP listen address (which must then not be a wildcard).
    media_address: str = ""
    # Local RTP ports, one even port per recorded stream (a call's streams take P, P+2, ...).
    rtp_port_min: int = setting(40000, between=(1024, 65534))
    # The last port of that range.
    rtp_port_max: int = setting(40999, between=(1025, 65535))
    # A recording that receives no RTP for this long (and is not on hold) is ended with our BYE and summarised.
    rtp_timeout_s: float = setting(30.0, between=(1.0, 3600.0))
    # Recordings at once; one more INVITE gets 503 with Retry-After.
    max_sessions: int = setting(200, between=(1, 10000))
    # G.711 flavours we accept (a stream offering neither is declined).
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    # Which stream is the agent's, per trunk: "NAME: source=ADDR|CIDR[,..] agent=label:L|aor:REGEX|first|second".
    trunks: tuple[str, ...] = ()
    # Accept a plain INVITE (no Require: siprec; a PBX dialling the recorder) as a recording of its one stream.
    accept_plain_calls: bool = True
    # Where calls go: the ingest service (empty: this process's own when it serves ingest, else server.listen).
    ingest_server: str = ""
    # TLS (a CA file) or mutual TLS (plus certificate and key) to ingest, and who we are to it (the pbx role).
    ingest_ca_file: str = ""
    # Our client certificate (PEM) for mutual TLS to ingest.
    ingest_cert_file: str = ""
    # The client certificate's private key (PEM).
    ingest_key_file: str = ""
    # Who we are to ingest from loopback (x-aftercall-user, believed with access.trust_loopback_user): a pbx
    # identity.
    ingest_user: str = ""

    def validate(self) -> None:
        for key in ("listen", "tls_listen", "metrics_listen", "ingest_server"):
            if getattr(self, key):
                parse_address(getattr(self, key), f"config siprec.{key}")
        if not self.listen and not self.tls_listen:
            raise ConfigError("config siprec.listen: set listen or tls_listen (or both)")
        if self.tls_listen and not (self.tls_cert_file and self.tls_key_file):
            raise ConfigError("config siprec.tls_listen: needs siprec.tls_cert_file and siprec.tls_key_file")
        if self.tls_client_ca_file and not self.tls_listen:
            raise ConfigError("config siprec.tls_client_ca_file: client certificates need siprec.tls_listen")
        if self.rtp_port_max - self.rtp_port_min < 3:
            raise ConfigError(f"config siprec.rtp_port_max: the range {self.rtp_port_min}-{self.rtp_port_max} holds "
                              "fewer than two RTP ports (one even port per stream)")
        for source in self.allowed_sources:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ConfigError(f"config siprec.allowed_sources: {source!r} is not an address or network") from None
        unknown = [codec for codec in self.codecs if codec not in ("PCMU", "PCMA")]
        if unknown or not self.codecs:
            raise ConfigError(f"config siprec.codecs: PCMU and/or PCMA, got {', '.join(self.codecs) or 'none'}")
        if bool(self.ingest_cert_file) != bool(self.ingest_key_file) or (self.ingest_cert_file
                                                                     and not self.ingest_ca_file):
            raise ConfigError("config siprec.ingest_cert_file: mutual TLS to ingest needs ingest_ca_file, "
                              "ingest_cert_file and ingest_key_file")
        parse_trunks(self.trunks)
