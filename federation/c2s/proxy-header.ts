/**
 * The PROXY protocol v2 header the Network Load Balancer puts before a client's first byte when
 * `proxy_protocol_v2.enabled` is set on the target group (XMPP_C2S_PROXY_PROTOCOL=true): the
 * client's own address, which the task would otherwise not see (behind an NLB with IP targets it
 * sees the NLB's), and which the brute-force limits count failures by (shared/sasl/auth-limits.ts).
 * Only the NLB can reach the task's ports (its security group admits the VPC only), so the header
 * cannot be forged by a client. Parsed with proxy-protocol-js.
 */
import type { Socket } from 'node:net';
import { Command, IPv4ProxyAddress, IPv6ProxyAddress, V2ProxyProtocol } from 'proxy-protocol-js';

/** Signature (12 bytes), version/command, family, length (2 bytes). */
const FIXED = 16;
/** Largest header accepted (addresses and TLVs: the NLB adds a VPC endpoint id at most). */
const MAX_HEADER = 1024;

export type ProxyHeaderResult = { source?: string } | { error: string };

/** Formats a 16-byte IPv6 address as eight hex groups (a form every IPv6 parser reads). */
function ipv6(bytes: readonly number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
}

/**
 * Reads the header off the socket and puts back what followed it. `source` is the client's address
 * (undefined for the NLB's own LOCAL connections, i.e. health checks).
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxyHeaderResult> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const finish = (result: ProxyHeaderResult, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      if (rest?.length) socket.unshift(rest);
      resolve(result);
    };
    const onClose = () => finish({ error: 'closed before the PROXY header' });
    const timer = setTimeout(() => finish({ error: 'no PROXY header in time' }), timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < FIXED) return;
      if (!V2ProxyProtocol.isValidProtocolSignature(buffered)) return finish({ error: 'not a PROXY v2 header' });
      const total = FIXED + buffered.readUInt16BE(14);
      if (total > MAX_HEADER) return finish({ error: 'PROXY header too long' });
      if (buffered.length < total) return;
      let header: V2ProxyProtocol;
      try {
        header = V2ProxyProtocol.parse(buffered.subarray(0, total));
      } catch (err) {
        return finish({ error: `bad PROXY header: ${(err as Error).message}` });
      }
      const rest = buffered.subarray(total);
      if (header.command === Command.LOCAL) return finish({}, rest);
      const address = header.proxyAddress;
      if (address instanceof IPv4ProxyAddress) return finish({ source: address.sourceAddress.address.join('.') }, rest);
      if (address instanceof IPv6ProxyAddress) return finish({ source: ipv6(address.sourceAddress.address) }, rest);
      finish({}, rest);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}
