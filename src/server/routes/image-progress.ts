// How far a pull or import is, for the CLI to draw while its request is open: the request names
// an id (`progress` in its body), and GET /api/images/progress/:id answers with the latest event.
// In memory, per caller (their token): one caller cannot read another's, whatever the id.
import type { ImageProgress, ImageProgressEvent } from '../../runner/images/index.ts';

export class ImageProgressBoard {
  readonly #latest = new Map<string, ImageProgressEvent | null>();

  /** A listener that keeps the latest event under `id` until `done` runs. */
  track(owner: string, id: string | undefined): { onProgress: ImageProgress | undefined; done: () => void } {
    if (id === undefined) return { onProgress: undefined, done: () => {} };
    const key = `${owner}\0${id}`;
    // A second request under an id in use keeps its own progress to itself.
    if (this.#latest.has(key)) return { onProgress: undefined, done: () => {} };
    this.#latest.set(key, null);
    return {
      onProgress: (event) => void this.#latest.set(key, event),
      done: () => void this.#latest.delete(key),
    };
  }

  /** The latest event under `id` (null before the first); undefined when no request of `owner`'s is open under it. */
  read(owner: string, id: string): ImageProgressEvent | null | undefined {
    return this.#latest.get(`${owner}\0${id}`);
  }
}
