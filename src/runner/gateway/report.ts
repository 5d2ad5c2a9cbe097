// Reads the usage out of a response's bytes as they pass: event by event from a stream,
// or from the whole body of a plain JSON answer.
import { StringDecoder } from 'node:string_decoder';
import { reportFromBody, StreamReport, type CallReport, type ModelApi } from './protocols.ts';
import { SseReader } from './sse.ts';

/** A JSON answer larger than this is passed on without being read for usage. */
const MAX_JSON_BYTES = 32 * 1024 * 1024;

export class ResponseReport {
  readonly #decoder = new StringDecoder('utf8');
  readonly #api: ModelApi;
  readonly #events: { reader: SseReader; report: StreamReport } | undefined;
  #json: Buffer[] = [];
  #jsonBytes = 0;
  #final: CallReport | undefined;

  constructor(api: ModelApi, contentType: string | undefined) {
    this.#api = api;
    if (contentType?.toLowerCase().startsWith('text/event-stream')) {
      const report = new StreamReport(api);
      this.#events = { reader: new SseReader((e) => report.event(e.data)), report };
    }
  }

  push(chunk: Buffer): void {
    if (this.#final) return;
    if (this.#events) {
      this.#events.reader.push(this.#decoder.write(chunk));
    } else if (this.#jsonBytes + chunk.length <= MAX_JSON_BYTES) {
      this.#json.push(chunk);
      this.#jsonBytes += chunk.length;
    } else {
      this.#json = [];
      this.#jsonBytes = Infinity;
    }
  }

  /** What the response said, as far as it got (a stream cut short may still have told its input). Idempotent. */
  end(): CallReport {
    if (this.#final) return this.#final;
    if (this.#events) {
      this.#events.reader.push(this.#decoder.end());
      this.#events.reader.end();
      this.#final = this.#events.report.report();
    } else {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(this.#json).toString('utf8'));
      } catch {
        body = undefined;
      }
      this.#final = reportFromBody(this.#api, body);
    }
    this.#json = [];
    return this.#final;
  }
}
