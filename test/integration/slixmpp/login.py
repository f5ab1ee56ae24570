#!/usr/bin/python3
"""A native client on slixmpp (Debian's python3-slixmpp), for the SCRAM tests over TCP.

usage: login.py PORT CA_PEM JID PASSWORD TO MODE
  MODE stock         slixmpp as shipped: it tries -PLUS with tls-unique (which TLS 1.3 lacks and this
                     server does not offer), then plain SCRAM
  MODE end-point     SCRAM-SHA-256-PLUS with tls-server-end-point (RFC 5929): the hash of the
                     certificate this client was shown
  MODE wrong-binding SCRAM-SHA-256-PLUS with the hash of another certificate (a man in the middle's
                     view): must fail
  MODE sha1-end-point SCRAM-SHA-1-PLUS with tls-server-end-point
Connects with STARTTLS to 127.0.0.1:PORT, trusting CA_PEM for the JID's domain, sends one chat
message to TO, prints "mechanism: <name>" and exits 0 once the message is out (1 otherwise).

slixmpp 1.8.3 computes SCRAM itself but names only tls-unique in its gs2 header: the two lines marked
PATCH give it the binding type and data (the library still does every SCRAM step).
"""
import asyncio, hashlib, ssl, sys
import slixmpp
from slixmpp.util.sasl import mechanisms

port, ca, jid, password, to, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
bind = mode != 'stock'

if bind:
    original = mechanisms.SCRAM.process_1

    def process_1(self, challenge):  # PATCH 1: "p=tls-server-end-point" instead of "p=tls-unique"
        original(self, challenge)
        flag = b'p=tls-server-end-point' if self.use_channel_binding else b'n'
        self.gs2_header = flag + self.gs2_header[self.gs2_header.index(b','):]
        self.client_first_message = self.gs2_header + self.client_first_message_bare
        return self.client_first_message

    mechanisms.SCRAM.process_1 = process_1

mechs = {'end-point': ['SCRAM-SHA-256-PLUS'], 'wrong-binding': ['SCRAM-SHA-256-PLUS'], 'sha1-end-point': ['SCRAM-SHA-1-PLUS']}.get(mode)
xmpp = slixmpp.ClientXMPP(jid, password, plugin_config={'feature_mechanisms': {'use_mechs': mechs}} if mechs else {})

if bind:
    def credentials(required, optional):  # PATCH 2: the tls-server-end-point data (our test certificates are ECDSA with SHA-256)
        out = xmpp['feature_mechanisms']._default_credentials(required, optional)
        if 'channel_binding' in out and isinstance(xmpp.socket, ssl.SSLObject):
            der = xmpp.socket.getpeercert(binary_form=True)
            out['channel_binding'] = hashlib.sha256(der if mode != 'wrong-binding' else der + b'x').digest()
        return out

    xmpp['feature_mechanisms'].sasl_callback = credentials

xmpp.ca_certs = ca
result = {}
xmpp.add_event_handler('auth_success', lambda _: result.update(mech=xmpp['feature_mechanisms'].mech.name))
xmpp.add_event_handler('failed_auth', lambda s: print('failure:', xmpp['feature_mechanisms'].mech.name, s['condition']))
xmpp.add_event_handler('failed_all_auth', lambda _: xmpp.disconnect())


async def session_start(_):
    xmpp.send_presence()
    xmpp.send_message(mto=to, mbody=f"slixmpp logged in with {result.get('mech')}", mtype='chat')
    result['sent'] = True
    await asyncio.sleep(0.5)
    xmpp.disconnect()


xmpp.add_event_handler('session_start', session_start)
xmpp.connect(('127.0.0.1', port), use_ssl=False, force_starttls=True)
try:
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(xmpp.disconnected, 20))
except asyncio.TimeoutError:
    print('timeout')
print('mechanism:', result.get('mech'))
sys.exit(0 if result.get('sent') else 1)
