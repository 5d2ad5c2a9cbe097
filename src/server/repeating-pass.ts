// A job that runs on a timer and whenever asked: a call that comes while it runs folds into one
// more run after it, never two at once, and close() waits for the run under way. The warm
// pools' refill and the campaign scheduler are such jobs.
export class RepeatingPass {
  readonly #run: () => Promise<unknown>;
  readonly #intervalMs: number;
  readonly #onError: (err: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | null = null;
  #again = false;
  #closed = false;

  constructor(o: { run: () => Promise<unknown>; intervalMs: number; onError: (err: unknown) => void }) {
    this.#run = o.run;
    this.#intervalMs = o.intervalMs;
    this.#onError = o.onError;
  }

  get closed(): boolean {
    return this.#closed;
  }

  start(): void {
    this.#timer = setInterval(() => this.wake(), this.#intervalMs);
    this.#timer.unref();
    this.wake();
  }

  /** Runs soon; errors go to onError. */
  wake(): void {
    void this.run().catch(this.#onError);
  }

  /** A run after the one under way (if any): resolves when it has ended (what tests await). */
  run(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#pass) {
      this.#again = true;
      return this.#pass;
    }
    this.#pass = (async () => {
      try {
        do {
          this.#again = false;
          await this.#run();
        } while (this.#again && !this.#closed);
      } finally {
        this.#pass = null;
      }
    })();
    return this.#pass;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#pass?.catch(() => {});
  }
}
