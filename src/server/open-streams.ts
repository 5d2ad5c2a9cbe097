// Every response that stays open (a terminal, a streamed or long exec, a followed
// transcript, a file transfer, an export) is held here while it is open, and its caller is
// checked again about once a second against the database: the token still valid (not
// revoked, not expired, its user not disabled) and its role in the org, which falls with a
// demotion and goes with a removal, still enough for the route's permission. A stream
// whose caller no longer passes is ended with the reason. The checks read the database,
// not the one-second caches, so a change made on any replica ends the streams on every
// replica within about a second; a change made on this one also rechecks at once, before
// its caller hears it succeeded.
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { BerthError, unauthorized } from '../shared/errors.ts';
import type { TokenService } from './auth.ts';
import { atLeast, forbidden, PERMISSIONS, type Authorizer, type Caller, type Permission } from './authz.ts';

/** Ends a stream: close it with `why`, kill what it runs. Called at most once. */
export type EndStream = (why: BerthError) => void;

interface Open {
  caller: Caller;
  orgId: string;
  orgName: string;
  permission: Permission;
  end: EndStream;
}

/** Checks that could not be made in a row before a stream is ended anyway: fail closed, after a short grace. */
const MAX_FAILED_CHECKS = 3;

export class OpenStreams {
  readonly #tokens: TokenService;
  readonly #authz: Authorizer;
  readonly #logger: Logger;
  readonly #everyMs: number;
  readonly #open = new Set<Open>();
  readonly #failedChecks = new Map<Open, number>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;

  constructor(deps: { tokens: TokenService; authz: Authorizer; logger: Logger; everyMs?: number }) {
    this.#tokens = deps.tokens;
    this.#authz = deps.authz;
    this.#logger = deps.logger;
    this.#everyMs = deps.everyMs ?? 1_000;
  }

  get size(): number {
    return this.#open.size;
  }

  /**
   * Holds a stream for the caller of `req` (an org route with a permission) until the
   * returned release is called; `end` is called if the caller loses the right first.
   */
  watch(req: FastifyRequest, end: EndStream): () => void {
    const permission = req.routeOptions.config?.permission;
    if (!permission || !req.scope) throw new Error(`${req.method} ${req.routeOptions.url}: only an org route with a permission can hold a stream`);
    let done = false;
    const entry: Open = {
      caller: req.caller,
      orgId: req.scope.orgId,
      orgName: req.scope.orgName,
      permission,
      end: (why) => {
        if (done) return;
        done = true;
        release();
        try {
          end(why);
        } catch (err) {
          this.#logger.warn({ err }, 'ending a stream failed');
        }
      },
    };
    const release = () => {
      done = true;
      this.#open.delete(entry);
      this.#failedChecks.delete(entry);
      if (this.#open.size === 0 && this.#timer) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    };
    this.#open.add(entry);
    if (!this.#timer) {
      this.#timer = setInterval(() => {
        if (!this.#running) void this.recheck();
      }, this.#everyMs);
      this.#timer.unref();
    }
    return release;
  }

  /**
   * Checks every open stream now. Call it after revoking tokens or changing memberships on
   * this replica: when it resolves, the streams that lost their right have been ended.
   */
  recheck(): Promise<void> {
    // A check already running may have read the database before the change: run once more after it.
    if (this.#running) {
      this.#queued ??= this.#running.then(() => {
        this.#queued = undefined;
        return this.recheck();
      });
      return this.#queued;
    }
    const run = this.#sweep().finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
    this.#running = run;
    return run;
  }

  /** Stops checking; streams still open are left to the server's close. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #sweep(): Promise<void> {
    if (this.#open.size === 0) return;
    // One check per token and org, however many streams it holds open.
    const groups = new Map<string, Open[]>();
    for (const o of this.#open) {
      const key = `${o.caller.tokenId}\u0000${o.orgId}`;
      groups.set(key, [...(groups.get(key) ?? []), o]);
    }
    const all = [...groups.values()];
    for (let i = 0; i < all.length; i += 16) {
      await Promise.all(all.slice(i, i + 16).map((group) => this.#check(group)));
    }
  }

  async #check(group: Open[]): Promise<void> {
    const { caller, orgId, orgName } = group[0]!;
    let why: BerthError | undefined;
    try {
      if (!(await this.#tokens.stillValid(caller.tokenId))) {
        why = unauthorized('this API token was revoked or has expired (or its user was disabled), so the stream was closed: use a valid token');
      } else {
        const role = await this.#authz.roleNow(caller, orgId);
        if (!role) why = forbidden(`you no longer belong to org '${orgName}', so the stream was closed`);
        for (const o of group) {
          const need = PERMISSIONS[o.permission];
          if (role && !atLeast(role, need)) {
            o.end(forbidden(`your role in org '${orgName}' is now ${role}; this stream needs ${need} or above (${o.permission}), so it was closed`));
          }
        }
      }
      for (const o of group) this.#failedChecks.delete(o);
    } catch (err) {
      this.#logger.warn({ err }, 'checking an open stream failed');
      for (const o of group) {
        const failed = (this.#failedChecks.get(o) ?? 0) + 1;
        this.#failedChecks.set(o, failed);
        if (failed >= MAX_FAILED_CHECKS) o.end(new BerthError('unavailable', 'the control plane could not check this stream\'s token, so the stream was closed: try again'));
      }
      return;
    }
    if (why) for (const o of group) o.end(why);
  }
}

/** A WebSocket close reason: at most 123 bytes, the protocol's limit. */
export function closeReason(why: BerthError): string {
  const short = why.kind === 'unauthorized' ? 'token revoked or expired' : why.kind === 'forbidden' ? 'role no longer allows this' : 'stream closed';
  return short.slice(0, 123);
}
