export type LocalStackErrorCode =
  | 'JAVA_MISSING'
  | 'JAVA_TOO_OLD'
  | 'PORT_IN_USE'
  | 'BIND_FAILED'
  | 'START_FAILED'
  | 'START_TIMEOUT';

/** An error the local stack reports to the user as is (a clear message, exit code 1). */
export class LocalStackError extends Error {
  readonly code: LocalStackErrorCode;
  constructor(code: LocalStackErrorCode, message: string) {
    super(message);
    this.name = 'LocalStackError';
    this.code = code;
  }
}
