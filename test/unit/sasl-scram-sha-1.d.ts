/** The part of sasl-scram-sha-1 (the SCRAM client @xmpp/client uses; no published types) the tests use. */
declare module 'sasl-scram-sha-1' {
  interface Credentials {
    username: string;
    password: string;
  }
  export default class Mechanism {
    response(credentials: Credentials): string | Promise<string>;
    challenge(challenge: string): this;
  }
}
