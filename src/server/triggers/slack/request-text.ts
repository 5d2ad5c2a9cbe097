// `/berth <goal> [in <project>]` and `@berth <goal> [in <project>]`: Slack's message text
// (mrkdwn, https://api.slack.com/reference/surfaces/formatting#retrieving-messages) made into
// a goal as a person would read it, and the project it may name.

/** Slack's `<…>` forms and escapes as plain text: a link its URL, a mention its name or id. */
export function plainText(text: string, botUserId?: string | null): string {
  return text
    .replace(/<@([A-Z0-9]+)(?:\|([^>]*))?>/g, (_m, user: string, name?: string) => (user === botUserId ? '' : `@${name || user}`))
    .replace(/<#[A-Z0-9]+\|([^>]*)>/g, '#$1')
    .replace(/<!(here|channel|everyone)>/g, '@$1')
    .replace(/<!subteam\^[A-Z0-9]+(?:\|([^>]*))?>/g, (_m, name?: string) => name ?? '@group')
    .replace(/<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>/g, (_m, url: string) => url.replace(/^mailto:/, ''))
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&')
    .replace(/[ \t]+/g, ' ')
    .replace(/ ?\n ?/g, '\n')
    .trim();
}

export interface AskedFor {
  /** The whole text as the goal: what is asked when `in …` names no project. */
  goal: string;
  /** The name after a trailing ` in `, and the goal without it; null when the text ends otherwise. */
  named: { project: string; goal: string } | null;
}

/**
 * The goal, and the project a trailing `in NAME` may name. Whether it does is the org's to
 * say ("fix the crash in parser" may mean the project parser or the parser of the only
 * project): the handler takes `named` only if such a project exists.
 */
export function askedFor(text: string): AskedFor {
  const m = /^(.*\S)\s+in\s+`?([a-z0-9][a-z0-9._-]{0,62})`?[.!]?$/is.exec(text);
  return { goal: text, named: m ? { project: m[2]!.toLowerCase(), goal: m[1]! } : null };
}

export const USAGE = 'Usage: `/berth <goal> [in <project>]` (or mention me with the same words), e.g. `/berth fix the flaky login test in web`.';
