"""A plain SIP call from a real user agent (PJSIP's pjsua2): it calls the recording server the way a PBX dials a
recorder, plays a WAV (PCM16 mono 8 kHz) into the call as PCMU, and hangs up. Run as a subprocess by the tests:

    python pjsua_call.py SIP_URI WAV SECONDS

Exit 0 when the call was answered, carried audio for SECONDS and ended cleanly; prints the negotiated codec."""

from __future__ import annotations

import sys
import time

import pjsua2 as pj


class RecordedCall(pj.Call):
    def __init__(self, account: pj.Account):
        super().__init__(account)
        self.media_ready = False
        self.disconnected = False

    def onCallState(self, prm) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True

    def onCallMediaState(self, prm) -> None:
        info = self.getInfo()  # kept alive: its media list points into it
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_ready = True


def wait_for(endpoint: pj.Endpoint, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        endpoint.libHandleEvents(20)
    return condition()


def main(uri: str, wav: str, seconds: float) -> int:
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.logConfig.level = config.logConfig.consoleLevel = 2
    config.medConfig.clockRate = config.medConfig.sndClockRate = 8000  # no resampling between WAV and PCMU
    config.medConfig.noVad = True
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.boundAddress = "127.0.0.1"
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.audDevManager().setNullDev()
    for codec in endpoint.codecEnum2():
        endpoint.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU/") else 0)
    endpoint.libStart()
    account_config = pj.AccountConfig()
    account_config.idUri = "sip:pbx@127.0.0.1"
    account = pj.Account()
    account.create(account_config)
    call = RecordedCall(account)
    call.makeCall(uri, pj.CallOpParam(True))
    status = 1
    if wait_for(endpoint, lambda: call.media_ready or call.disconnected, 15) and call.media_ready:
        player = pj.AudioMediaPlayer()
        player.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(call.getAudioMedia(-1))
        print("codec", call.getStreamInfo(0).codecName, flush=True)
        wait_for(endpoint, lambda: call.disconnected, seconds)
        if not call.disconnected:
            call.hangup(pj.CallOpParam(True))
            status = 0 if wait_for(endpoint, lambda: call.disconnected, 10) else 1
        del player
    else:
        print("the call was not answered with audio", file=sys.stderr)
    del call
    endpoint.libDestroy()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
