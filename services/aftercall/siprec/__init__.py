"""SIPREC (RFC 7866) recording server: SIP, SDP and recording-metadata parsing for calls forked by an SBC or PBX."""
