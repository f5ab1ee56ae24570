/** SASL PLAIN (RFC 4616) message parsing: [authzid] NUL authcid NUL passwd. */
export function parsePlain(message: Buffer): { authzid: string; authcid: string; password: string } | undefined {
  const parts = message.toString('utf8').split('\0');
  if (parts.length !== 3) return undefined;
  const [authzid, authcid, password] = parts as [string, string, string];
  if (!authcid || !password) return undefined;
  return { authzid, authcid, password };
}
