// Human units for flags and API fields: "2g", "512m", "30m", "24h".

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The longest delay a Node timer can wait (2^31-1 ms, 24.8 days): a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * The longest timeout a command or task may be given: 24 days, under what a timer can
 * wait. Longer ones are refused, not clamped ("off" runs a command without one).
 */
export const MAX_TIMEOUT_MS = 24 * 86_400_000;

/** A delay safe to give setTimeout: at most MAX_TIMER_MS, so an over-long one never fires at once. */
export function timerDelay(ms: number): number {
  return Math.min(Math.max(0, ms), MAX_TIMER_MS);
}

/** Parses "2g", "512M", "1.5GiB", "1048576" into bytes; undefined when it is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()]!;
  return Math.round(Number(m[1]) * unit);
}

/** Parses "30m", "24h", "1h30m", "90s", "250ms" into milliseconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const s = text.trim().toLowerCase();
  if (s === '' ) return undefined;
  if (/^\d+$/.test(s)) return finite(Number(s) * 1000); // bare numbers are seconds
  let total = 0;
  let rest = s;
  while (rest.length > 0) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return finite(Math.round(total));
}

// Four hundred digits of days is Infinity: not a duration. Large but finite ones are
// parsed, so that the field that takes them can say what its maximum is.
function finite(ms: number): number | undefined {
  return Number.isFinite(ms) ? ms : undefined;
}

export function formatSize(bytes: number): string {
  for (const [unit, size] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= size) return `${+(bytes / size).toFixed(1)}${unit}`;
  }
  return `${bytes}B`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}s`);
  return parts.join('');
}
