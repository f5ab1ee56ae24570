/**
 * Channel binding data of a client's TLS connection, as the server side computes it:
 * - `tls-exporter` (RFC 9266): 32 bytes of keying material exported with the label
 *   "EXPORTER-Channel-Binding" and no context (on TLS 1.3 an empty context is the same, RFC 8446 §7.5); only on TLS 1.3 (on 1.2 it is safe only with the
 *   extended master secret, which Node does not report).
 * - `tls-server-end-point` (RFC 5929 §4.1): the hash of our certificate, with the hash of its
 *   signature algorithm (SHA-256 for MD5, SHA-1 and SHA-256 ones).
 */
import { createHash } from 'node:crypto';
import { TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { ChannelBindings } from '../../shared/sasl/channel-binding.ts';

// DER-encoded OIDs of the signature algorithms that call for a longer hash than SHA-256.
const SHA384_OIDS = ['2a864886f70d01010c', '2a8648ce3d040303'];
const SHA512_OIDS = ['2a864886f70d01010d', '2a8648ce3d040304'];

function endPointHash(der: Buffer): string {
  const hex = der.toString('hex');
  if (SHA512_OIDS.some((oid) => hex.includes(oid))) return 'sha512';
  if (SHA384_OIDS.some((oid) => hex.includes(oid))) return 'sha384';
  return 'sha256';
}

/** Computed once per TLS connection (they do not change while it lasts). */
const computed = new WeakMap<Socket, ChannelBindings>();

export function channelBindings(socket: Socket): ChannelBindings | undefined {
  if (!(socket instanceof TLSSocket) || !socket.encrypted) return undefined;
  let bindings = computed.get(socket);
  if (bindings) return bindings;
  bindings = {};
  if (socket.getProtocol() === 'TLSv1.3') bindings['tls-exporter'] = socket.exportKeyingMaterial(32, 'EXPORTER-Channel-Binding', Buffer.alloc(0));
  const cert = socket.getCertificate();
  if (cert && 'raw' in cert && cert.raw) bindings['tls-server-end-point'] = createHash(endPointHash(cert.raw)).update(cert.raw).digest();
  computed.set(socket, bindings);
  return bindings;
}
