/**
 * The service's TLS credentials and certificate checks. In the cloud the certificate comes from
 * Secrets Manager (XMPP_TLS_SECRET, JSON {"cert", "key"}; empty values = no certificate, so no
 * TLS is offered); locally a self-signed certificate for the domain is generated once with the
 * `selfsigned` package and kept under the data directory.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { generate } from 'selfsigned';

export interface TlsCredentials {
  /** PEM chain, leaf first. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** Extra trusted roots (PEM) besides the system's, e.g. a private CA in tests. */
  ca?: string[];
}

/** Reads XMPP_TLS_SECRET (`{"cert": "...", "key": "..."}`); undefined when absent or empty. */
export function tlsFromSecret(secret: string | undefined): TlsCredentials | undefined {
  if (!secret) return undefined;
  let parsed: { cert?: unknown; key?: unknown };
  try {
    parsed = JSON.parse(secret) as typeof parsed;
  } catch {
    throw new Error('XMPP_TLS_SECRET is not JSON ({"cert": "<PEM>", "key": "<PEM>"})');
  }
  if (typeof parsed.cert !== 'string' || typeof parsed.key !== 'string' || !parsed.cert.trim() || !parsed.key.trim()) return undefined;
  return { cert: parsed.cert, key: parsed.key };
}

/** Reads the PEM files given by XMPP_TLS_CERT_FILE / XMPP_TLS_KEY_FILE. */
export function tlsFromFiles(certFile: string | undefined, keyFile: string | undefined): TlsCredentials | undefined {
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) throw new Error('XMPP_TLS_CERT_FILE and XMPP_TLS_KEY_FILE go together');
  return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
}

/**
 * A self-signed certificate for `domain` (subjectAltName DNS:domain and DNS:*.domain), created
 * in `dir` on first use and reused afterwards (`<domain>.crt`, `<domain>.key`).
 */
export async function selfSignedCertificate(domain: string, dir: string): Promise<TlsCredentials> {
  const certFile = join(dir, `${domain}.crt`);
  const keyFile = join(dir, `${domain}.key`);
  if (existsSync(certFile) && existsSync(keyFile)) return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  const generated = await generateCertificate(domain);
  mkdirSync(dir, { recursive: true });
  writeFileSync(keyFile, generated.key, { mode: 0o600 });
  writeFileSync(certFile, generated.cert);
  return generated;
}

/** A certificate for `domain`, self-signed or signed by `issuer` (a CA made with `ca: true`). */
export async function generateCertificate(
  domain: string,
  options: { issuer?: TlsCredentials; ca?: boolean; days?: number } = {},
): Promise<TlsCredentials> {
  const notAfterDate = new Date(Date.now() + (options.days ?? 3650) * 86_400_000);
  const extensions = options.ca
    ? [
        { name: 'basicConstraints' as const, cA: true, critical: true },
        { name: 'keyUsage' as const, keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
      ]
    : [
        { name: 'basicConstraints' as const, cA: false },
        { name: 'keyUsage' as const, digitalSignature: true, keyEncipherment: true },
        // Servers present it both ways: as TLS server (inbound) and as TLS client (outbound, SASL EXTERNAL).
        { name: 'extKeyUsage' as const, serverAuth: true, clientAuth: true },
        { name: 'subjectAltName' as const, altNames: [{ type: 2 as const, value: domain }, { type: 2 as const, value: `*.${domain}` }] },
      ];
  const pems = await generate([{ name: 'commonName', value: domain }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notAfterDate,
    extensions,
    ...(options.issuer ? { ca: { key: options.issuer.key, cert: options.issuer.cert } } : {}),
  });
  return { cert: pems.cert, key: pems.private };
}

/** Trusted roots: the system's plus the extra ones. */
export function trustedRoots(credentials?: TlsCredentials): string[] | undefined {
  return credentials?.ca?.length ? [...tls.rootCertificates, ...credentials.ca] : undefined;
}

/**
 * Whether the peer's certificate chains to a trusted root (the system's plus `extraCa`) and names
 * `domain` (RFC 6125 DNS-ID checks as Node implements them for HTTPS).
 */
export function certificateValidFor(socket: tls.TLSSocket, domain: string, extraCa?: string[]): boolean {
  const cert = socket.getPeerCertificate(true);
  if (!cert || Object.keys(cert).length === 0) return false;
  // A TLSSocket made by hand on the server side (STARTTLS) never sets `authorized`: check the chain here.
  if (!socket.authorized && !chainTrusted(cert, extraCa)) return false;
  return tls.checkServerIdentity(domain, cert) === undefined;
}

const anchorCache = new Map<string, X509Certificate[]>();

function anchors(extraCa: string[] = []): X509Certificate[] {
  const key = extraCa.join('');
  let list = anchorCache.get(key);
  if (!list) {
    list = [...tls.rootCertificates, ...extraCa].map((pem) => new X509Certificate(pem));
    anchorCache.set(key, list);
  }
  return list;
}

function currentlyValid(cert: X509Certificate): boolean {
  const now = Date.now();
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/** Walks the presented chain (leaf first) up to a trust anchor, checking each signature and validity period. */
function chainTrusted(peer: tls.DetailedPeerCertificate, extraCa?: string[]): boolean {
  const roots = anchors(extraCa);
  let current: tls.DetailedPeerCertificate | undefined = peer;
  for (let depth = 0; current?.raw && depth < 10; depth++) {
    const cert = new X509Certificate(current.raw);
    if (!currentlyValid(cert)) return false;
    if (roots.some((root) => cert.checkIssued(root) && cert.verify(root.publicKey) && currentlyValid(root))) return true;
    const issuer: tls.DetailedPeerCertificate | undefined = current.issuerCertificate;
    if (!issuer?.raw || issuer === current) return false;
    const issuerCert = new X509Certificate(issuer.raw);
    if (!cert.checkIssued(issuerCert) || !cert.verify(issuerCert.publicKey) || !issuerCert.ca) return false;
    current = issuer;
  }
  return false;
}
