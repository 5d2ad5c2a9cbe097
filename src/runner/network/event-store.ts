// What the proxy saw, kept for whoever asks: the last events of each environment in
// memory (denials are what a user wants explained), passed on to the real sink.
import type { NetworkEvent, NetworkEventSink } from './types.ts';

export class NetworkEventStore implements NetworkEventSink {
  readonly #next: NetworkEventSink | undefined;
  readonly #limit: number;
  readonly #byEnvironment = new Map<string, NetworkEvent[]>();

  /** @param next the sink every event goes on to (the audit log); @param limit events kept per environment. */
  constructor(opts: { next?: NetworkEventSink | undefined; limit?: number } = {}) {
    this.#next = opts.next;
    this.#limit = opts.limit ?? 1_000;
  }

  record(e: NetworkEvent): void {
    let list = this.#byEnvironment.get(e.environmentId);
    if (!list) this.#byEnvironment.set(e.environmentId, (list = []));
    list.push(e);
    if (list.length > this.#limit) list.splice(0, list.length - this.#limit);
    this.#next?.record(e);
  }

  events(environmentId: string): readonly NetworkEvent[] {
    return this.#byEnvironment.get(environmentId) ?? [];
  }

  /** What was refused: the violations. */
  denied(environmentId: string): NetworkEvent[] {
    return this.events(environmentId).filter((e) => !e.allowed);
  }

  forget(environmentId: string): void {
    this.#byEnvironment.delete(environmentId);
  }
}
