// How a request's body is framed on its way out of the proxy. The proxy never passes on
// the client's framing: Node's parser (strict: no obs-fold, no bare LF, no Content-Length
// beside Transfer-Encoding) has delimited the body, and the proxy frames it again itself,
// so the outside parses exactly the one request that was decided and recorded. Framing
// that two parsers could read two ways is refused here (RFC 9112 §6.1 and §6.3), not
// guessed at: a smuggled request hides in the difference.
import type { IncomingMessage } from 'node:http';

export type Framing =
  | { ok: true; /** Set on the upstream request in place of the client's. */ headers: { 'content-length'?: string; 'transfer-encoding'?: 'chunked' }; body: boolean }
  | { ok: false; /** For the 400: what was wrong, in words. */ reason: string };

export function requestFraming(req: Pick<IncomingMessage, 'headers' | 'httpVersion'>): Framing {
  const te = req.headers['transfer-encoding'];
  const cl = req.headers['content-length'];
  if (te !== undefined) {
    if (cl !== undefined) return { ok: false, reason: 'the request has both Transfer-Encoding and Content-Length' };
    if (req.httpVersion === '1.0') return { ok: false, reason: 'Transfer-Encoding is not HTTP/1.0' };
    // Node joins repeated Transfer-Encoding lines with ", ", so one exact value also rules out repeats.
    if (te.trim().toLowerCase() !== 'chunked') return { ok: false, reason: `Transfer-Encoding ${JSON.stringify(te)}: only a single "chunked" is accepted` };
    return { ok: true, headers: { 'transfer-encoding': 'chunked' }, body: true };
  }
  if (cl !== undefined) {
    if (!/^\d{1,15}$/.test(cl)) return { ok: false, reason: `Content-Length ${JSON.stringify(cl)} is not one number` };
    const n = Number(cl);
    return { ok: true, headers: { 'content-length': String(n) }, body: n > 0 };
  }
  return { ok: true, headers: {}, body: false };
}
