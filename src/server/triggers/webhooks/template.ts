// A trigger's goal template filled in from one delivery. Values are data: each `{{path}}` is
// looked up and replaced in one pass over the template (a value holding `{{…}}` stays as
// written), nothing is evaluated, and every value and the goal are cut to a size.
import { MAX_TEMPLATE_VALUE, MAX_TRIGGER_GOAL, TEMPLATE_FIELD, TEMPLATE_PATH } from '../../../shared/api-webhook-triggers.ts';

/** What a template is filled from: the JSON body and the request's headers (lower-case names). */
export interface TemplateInput {
  body: unknown;
  headers: Readonly<Record<string, string>>;
}

export interface RenderedGoal {
  goal: string;
  /** Paths the delivery did not have: rendered empty, and said in the delivery's outcome. */
  missing: string[];
  /** Paths whose value was cut to MAX_TEMPLATE_VALUE. */
  truncated: string[];
}

const CUT = ' …[truncated]';

export function renderGoal(template: string, input: TemplateInput): RenderedGoal {
  const missing: string[] = [];
  const truncated: string[] = [];
  // String.replace with a function: its result is inserted as is, never scanned again.
  let goal = template.replace(TEMPLATE_FIELD, (_all, path: string) => {
    const value = lookup(path, input);
    if (value === undefined) {
      if (!missing.includes(path)) missing.push(path);
      return '';
    }
    const text = asText(value);
    if (text.length <= MAX_TEMPLATE_VALUE) return text;
    if (!truncated.includes(path)) truncated.push(path);
    return cut(text, MAX_TEMPLATE_VALUE);
  });
  if (goal.length > MAX_TRIGGER_GOAL) goal = cut(goal, MAX_TRIGGER_GOAL);
  return { goal, missing, truncated };
}

/** The value at `body.a.0.b` or `headers.name`; undefined when there is none. Own properties only. */
function lookup(path: string, input: TemplateInput): unknown {
  const m = TEMPLATE_PATH.exec(path);
  if (!m) return undefined;
  const keys = m[2] ? m[2].slice(1).split('.') : [];
  if (m[1] === 'headers') {
    return keys.length === 1 && Object.hasOwn(input.headers, keys[0]!.toLowerCase()) ? input.headers[keys[0]!.toLowerCase()] : undefined;
  }
  let at: unknown = input.body;
  for (const key of keys) {
    if (Array.isArray(at)) {
      if (!/^\d+$/.test(key) || Number(key) >= at.length) return undefined;
      at = at[Number(key)];
    } else if (at !== null && typeof at === 'object' && Object.hasOwn(at, key)) {
      at = (at as Record<string, unknown>)[key];
    } else {
      return undefined;
    }
  }
  return at;
}

function asText(value: unknown): string {
  if (value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

/** Cut to `max` characters, the marker included, without splitting a surrogate pair. */
function cut(text: string, max: number): string {
  return `${text.slice(0, max - CUT.length).toWellFormed()}${CUT}`;
}
