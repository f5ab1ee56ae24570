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

/** Whether debug lines are written: tracing that costs work (a regex per post) checks it first. */
export const debugOn = threshold <= ORDER.DEBUG;

/**
 * A debug line about one stanza, tagged with its XEP-0359 origin-id when it has one: following a
 * message through posts, numbering, acknowledgements and re-routing (the chaos test's traces).
 */
export function trace(message: string, frame: string | undefined, extra?: Record<string, unknown>): void {
  if (!debugOn) return;
  const id = frame ? /<origin-id[^>]*\bid="([^"]+)"/.exec(frame)?.[1] : undefined;
  // The element and its type: what an untagged line was (a presence, an <r/>, an iq result…).
  const head = frame ? /^<([^\s/>]+)(?:[^>]*?\stype="([^"]*)")?/.exec(frame) : undefined;
  write('DEBUG', message, { ...(id ? { stanza: id } : {}), ...(head ? { el: head[2] ? `${head[1]}/${head[2]}` : head[1] } : {}), ...extra });
}

export const log = {
  debug: (m: string, e?: Record<string, unknown>) => write('DEBUG', m, e),
  info: (m: string, e?: Record<string, unknown>) => write('INFO', m, e),
  warn: (m: string, e?: Record<string, unknown>) => write('WARN', m, e),
  error: (m: string, e?: Record<string, unknown>) => write('ERROR', m, e),
};
