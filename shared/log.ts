/**
 * Structured JSON log lines (one object per line), what Lambda's JSON log format and CloudWatch
 * Logs Insights expect. Kept to a few lines instead of Powertools' Logger to keep the stream
 * handler's cold start small; the shape (level, message, timestamp, extra keys) is the same.
 */
type Level = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
const ORDER: Record<Level, number> = { DEBUG: 10, INFO: 20, WARN: 30, ERROR: 40 };
const threshold = ORDER[(process.env.XMPP_LOG_LEVEL?.toUpperCase() as Level) ?? 'INFO'] ?? ORDER.INFO;

function write(level: Level, message: string, extra?: Record<string, unknown>): void {
  if (ORDER[level] < threshold) return;
  const line = JSON.stringify({ level, message, timestamp: new Date().toISOString(), ...extra });
  (level === 'ERROR' || level === 'WARN' ? process.stderr : process.stdout).write(line + '\n');
}

export const log = {
  debug: (m: string, e?: Record<string, unknown>) => write('DEBUG', m, e),
  info: (m: string, e?: Record<string, unknown>) => write('INFO', m, e),
  warn: (m: string, e?: Record<string, unknown>) => write('WARN', m, e),
  error: (m: string, e?: Record<string, unknown>) => write('ERROR', m, e),
};
