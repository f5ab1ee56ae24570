/** Reported by XEP-0092 and the CLI. */
export const SOFTWARE_NAME = 'serverless-xmpp';
export const SOFTWARE_VERSION = '0.1.0';
