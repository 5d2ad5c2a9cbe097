// A cron rule read in a timezone: which instants are its slots. croner does the calendar
// (daylight-saving gaps and repeats included: a 02:30 rule fires at 03:00 on the day the clock
// skips 02:30, and once on the day 02:30 happens twice); this file only says what we accept
// and which slot is due.
import { Cron } from 'croner';
import { invalid } from '../../../shared/errors.ts';

export const DEFAULT_TIMEZONE = 'UTC';
/** How many missed slots a late firing counts, at most (a long outage under a frequent rule). */
const COUNT_LIMIT = 1000;

export interface Rule {
  cron: string;
  timezone: string;
  /** The first slot strictly after `after`, or null when the rule names no more. */
  next(after: Date): Date | null;
  /** The next `n` slots strictly after `after`. */
  upcoming(n: number, after: Date): Date[];
  /** The latest slot at or before `at`. */
  latest(at: Date): Date | null;
}

/** The IANA zone as the platform spells it; a clear 400 for anything else. */
export function timezoneOf(zone: string | undefined, field = 'body.timezone'): string {
  if (zone === undefined) return DEFAULT_TIMEZONE;
  // Offsets ("+01:00") are valid to Intl but are not a place: they would ignore daylight saving.
  if (/^[A-Za-z]/.test(zone)) {
    try {
      return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
    } catch {
      // not a zone: said below
    }
  }
  throw invalid(`unknown timezone '${zone}': give an IANA zone such as Europe/Berlin, America/New_York or UTC`, field);
}

/** The rule, checked: five cron fields (or a nickname such as @daily) that croner understands. */
export function ruleOf(cron: string, zone: string | undefined, field = 'body.cron'): Rule {
  const timezone = timezoneOf(zone);
  const pattern = cron.trim().replace(/\s+/g, ' ');
  let job: Cron;
  try {
    job = new Cron(pattern, { timezone, paused: true, mode: '5-part' });
  } catch (err) {
    const why = (err as Error).message.replace(/^CronPattern: /, '');
    throw invalid(`cron rule '${pattern}' is not valid (${why}): give five fields, minute hour day-of-month month day-of-week, such as '0 3 * * 1-5' (03:00 on weekdays)`, field);
  }
  if (!job.nextRun(new Date())) throw invalid(`cron rule '${pattern}' never fires: check its day and month`, field);
  return {
    cron: pattern,
    timezone,
    next: (after) => job.nextRun(after),
    upcoming: (n, after) => job.nextRuns(n, after),
    // croner counts a slot earlier in the same second as the reference: one millisecond on includes `at` itself.
    latest: (at) => job.previousRuns(1, new Date(at.getTime() + 1))[0] ?? null,
  };
}

/**
 * The slot to fire now, given the one on record as next: the latest slot at or before `now`
 * (after downtime, one firing stands for every slot missed), how many earlier ones it stands
 * for, and the slot after it. Null when nothing is due.
 */
export function dueSlot(rule: Rule, recordedNext: Date, now: Date): { slot: Date; missed: number; next: Date | null } | null {
  if (recordedNext > now) return null;
  const latest = rule.latest(now);
  const slot = latest && latest > recordedNext ? latest : recordedNext;
  let missed = 0;
  for (let n: Date | null = recordedNext; n && n < slot && missed < COUNT_LIMIT; n = rule.next(n)) missed++;
  return { slot, missed, next: rule.next(slot) };
}
