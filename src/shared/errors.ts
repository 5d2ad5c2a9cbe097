// User-facing errors are values with a kind; the HTTP layer maps kinds to status
// codes in one place and the CLI prints the message. Messages say what to do next.

export type ErrorKind = 'invalid' | 'not_found' | 'conflict' | 'unauthorized' | 'forbidden' | 'rate_limited' | 'unavailable' | 'internal';

export class BerthError extends Error {
  readonly kind: ErrorKind;
  /** The request field the error is about, when there is one (`body.memory`). */
  readonly field: string | undefined;

  constructor(kind: ErrorKind, message: string, field?: string) {
    super(message);
    this.name = 'BerthError';
    this.kind = kind;
    this.field = field;
  }
}

export const invalid = (message: string, field?: string) => new BerthError('invalid', message, field);
export const notFound = (message: string) => new BerthError('not_found', message);
export const conflict = (message: string) => new BerthError('conflict', message);
export const unauthorized = (message: string) => new BerthError('unauthorized', message);
export const unavailable = (message: string) => new BerthError('unavailable', message);

export const STATUS_BY_KIND: Record<ErrorKind, number> = {
  invalid: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
};

export const KIND_BY_STATUS = Object.fromEntries(
  Object.entries(STATUS_BY_KIND).map(([kind, status]) => [status, kind as ErrorKind]),
) as Record<number, ErrorKind | undefined>;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { kind: ErrorKind; message: string; field?: string };
}
