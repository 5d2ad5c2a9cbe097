// What the network tests share: "outside" servers on the host's loopback (reachable
// only through the test escape hatch allowPrivateAddresses), a resolver that says where
// names point, and a policy the test can change while the proxy runs.
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../../src/runner/network/ca.ts';
import type { EgressPolicy, PolicySource, Resolver } from '../../src/runner/network/index.ts';

export interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  tls: boolean;
}

export interface Outside {
  httpPort: number;
  httpsPort: number;
  /** The CA that signed the HTTPS server's certificate (stands in for a public CA). */
  caPem: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** Names the test resolver knows: the outside servers, and names pointing where they should not. */
export const NAMES: Record<string, string[]> = {
  'outside.test': ['127.0.0.1'],
  'api.outside.test': ['127.0.0.1'],
  'other.outside.test': ['127.0.0.1'],
  'rebind.test': ['127.0.0.1'],
  'metadata.test': ['169.254.169.254'],
  'private.test': ['10.1.2.3'],
  'mapped.test': ['::ffff:127.0.0.1'],
  'six.test': ['::1'],
};

export const testResolver: Resolver = async (host) => {
  const a = NAMES[host];
  if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return a;
};

/**
 * The escape hatch the tests use: only 127.0.0.1 may be reached, for the outside
 * servers. rebind.test also points there and is *not* allowed by any policy: the tests
 * that use it check the other refusal, the private-address one, with the hatch shut.
 */
export const ALLOW_LOOPBACK = ['127.0.0.1/32'];

/** `address`: where the servers listen (a loopback address the test's escape hatch names). */
export async function startOutside(address = '127.0.0.1'): Promise<Outside> {
  const ca = await CertificateAuthority.open(mkdtempSync(join(tmpdir(), 'berth-test-public-ca-')));
  const seen: Seen[] = [];
  const handler = (tls: boolean) => (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, tls });
    req.resume();
    req.on('end', () => {
      if (req.url?.startsWith('/bytes/')) {
        const n = Number(req.url.slice(7));
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
        res.end(Buffer.alloc(n, 120));
        return;
      }
      const body = `hello ${req.method} ${req.url} host=${req.headers.host}\n`;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(body);
    });
  };
  const http = createHttpServer(handler(false));
  const leaf = ca.leaf('outside.test');
  // One certificate for every outside name, as a wildcard-free test needs.
  const names = ['outside.test', 'api.outside.test', 'other.outside.test', 'rebind.test'];
  const certs = Object.fromEntries(names.map((n) => [n, ca.leaf(n)]));
  const https = createHttpsServer({
    cert: leaf.cert,
    key: leaf.key,
    SNICallback: (name, cb) => {
      const c = certs[name] ?? leaf;
      cb(null, createSecureContext({ cert: c.cert, key: c.key }));
    },
  }, handler(true));
  const listen = (s: Server) => new Promise<number>((r) => s.listen(0, address, () => r((s.address() as AddressInfo).port)));
  const [httpPort, httpsPort] = await Promise.all([listen(http), listen(https)]);
  return {
    httpPort,
    httpsPort,
    caPem: ca.certPem,
    seen,
    close: async () => {
      http.closeAllConnections();
      https.closeAllConnections();
      await Promise.all([new Promise((r) => http.close(r)), new Promise((r) => https.close(r))]);
    },
  };
}

/** A policy source whose policy the test changes in place (a real one caches for at most a second). */
export class TestPolicies implements PolicySource {
  policy: EgressPolicy;
  asked = 0;
  constructor(policy: Partial<EgressPolicy> = {}) {
    this.policy = basePolicy(policy);
  }
  policyFor(): EgressPolicy {
    this.asked++;
    return this.policy;
  }
}

export function basePolicy(p: Partial<EgressPolicy> = {}): EgressPolicy {
  return { allowDomains: [], presets: [], allowPorts: null, allowMethods: null, maxConnections: 50, credentials: [], scope: 'environment', ...p };
}

/** curl on the host, through `proxy`; resolves with its exit code, stdout and stderr. */
export function hostCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-m', '10', ...args], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
