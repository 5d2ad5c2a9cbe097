// A corporate repository manager, as far as npm and pip see it: an npm registry (packuments
// and tarballs) under /npm/ and a PyPI "simple" index (PEP 503) with its files under /pypi/,
// over HTTPS with a certificate of its own CA, refusing every request without its token
// (Bearer, or Basic with the token as the password, which is how pip sends one). Serves both
// a name (for environments, whose egress proxy resolves it) and 127.0.0.1 (for tools on the
// host). Also makes what it serves: npm tarballs and wheels, byte for byte the same each time.
import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import forge from 'node-forge';

export interface NpmPackage {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
  /** The .tgz npm would download (see npmTarball). */
  tarball: Buffer;
}

export interface PypiFile {
  /** The project's name as written (normalized per PEP 503 for the index). */
  project: string;
  filename: string;
  data: Buffer;
}

export interface PackageMirror {
  /** https://HOST:PORT, for environments (their proxy resolves HOST to 127.0.0.1). */
  url: string;
  /** https://127.0.0.1:PORT, for tools on the host. */
  hostUrl: string;
  /** The mirror's CA certificate (PEM): trust it to reach the mirror. */
  caPem: string;
  /** Requests as they arrived: path and whether they carried the token. */
  seen: { path: string; authorized: boolean }[];
  close(): Promise<void>;
}

const DAY = 86_400_000;
const sha = (algo: string, b: Buffer | string, enc: 'hex' | 'base64' = 'hex') => createHash(algo).update(b).digest(enc);
export const integrityOf = (b: Buffer) => `sha512-${sha('sha512', b, 'base64')}`;
/** PEP 503: runs of -, _ and . become one -, lower case. */
export const normalizeProject = (name: string) => name.toLowerCase().replace(/[-_.]+/g, '-');

export async function startPackageMirror(o: { host: string; token: string; npm?: NpmPackage[]; pypi?: PypiFile[] }): Promise<PackageMirror> {
  const { caPem, cert, key } = certificates(o.host);
  const packuments = new Map<string, NpmPackage[]>();
  for (const p of o.npm ?? []) packuments.set(p.name, [...(packuments.get(p.name) ?? []), p]);
  const tarballs = new Map((o.npm ?? []).map((p) => [`/npm/${p.name}/-/${tarballName(p)}`, p.tarball]));
  const projects = new Map<string, PypiFile[]>();
  for (const f of o.pypi ?? []) projects.set(normalizeProject(f.project), [...(projects.get(normalizeProject(f.project)) ?? []), f]);
  const files = new Map((o.pypi ?? []).map((f) => [`/pypi/packages/${f.filename}`, f.data]));
  const basic = `Basic ${Buffer.from(`token:${o.token}`).toString('base64')}`;
  const seen: PackageMirror['seen'] = [];

  const server: Server = createServer({ cert, key }, (req, res) => {
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'https://x').pathname);
    } catch {
      return void res.writeHead(400).end('bad path\n');
    }
    const auth = req.headers.authorization;
    const authorized = auth === `Bearer ${o.token}` || auth === basic || (auth?.startsWith('Basic ') === true && Buffer.from(auth.slice(6), 'base64').toString().endsWith(`:${o.token}`));
    seen.push({ path, authorized });
    if (!authorized) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="mirror"' }).end('a token is needed\n');
    // Links point back where the request came: the name for environments, 127.0.0.1 for the host.
    const origin = `https://${req.headers.host}`;
    const send = (type: string, body: string | Buffer) => res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body);

    const pkg = /^\/npm\/([^/]+)$/.exec(path)?.[1];
    if (pkg && packuments.has(pkg)) return send('application/json', JSON.stringify(packument(pkg, packuments.get(pkg)!, origin)));
    const tgz = tarballs.get(path);
    if (tgz) return send('application/octet-stream', tgz);
    const project = /^\/pypi\/simple\/([^/]+)\/$/.exec(path)?.[1];
    if (project && projects.has(project)) {
      const links = projects.get(project)!.map((f) => `<a href="${origin}/pypi/packages/${f.filename}#sha256=${sha('sha256', f.data)}">${f.filename}</a><br/>`);
      return send('text/html', `<!DOCTYPE html><html><body>\n${links.join('\n')}\n</body></html>\n`);
    }
    const file = files.get(path);
    if (file) return send('application/octet-stream', file);
    res.writeHead(404).end('not here\n');
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
  return {
    url: `https://${o.host}:${port}`,
    hostUrl: `https://127.0.0.1:${port}`,
    caPem,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

const tarballName = (p: NpmPackage) => `${p.name.split('/').at(-1)}-${p.version}.tgz`;

/** The registry's document for one package: every version, the newest as latest. */
function packument(name: string, versions: NpmPackage[], origin: string) {
  const sorted = [...versions].sort((a, b) => a.version.localeCompare(b.version, 'en', { numeric: true }));
  return {
    name,
    'dist-tags': { latest: sorted.at(-1)!.version },
    versions: Object.fromEntries(
      sorted.map((p) => [
        p.version,
        { name, version: p.version, main: 'index.js', dependencies: p.dependencies ?? {}, dist: { tarball: `${origin}/npm/${name}/-/${tarballName(p)}`, shasum: sha('sha1', p.tarball), integrity: integrityOf(p.tarball) } },
      ]),
    ),
  };
}

/** A CA and a certificate for `host` and 127.0.0.1 signed by it, made with node-forge. */
function certificates(host: string) {
  const make = (subject: string, publicKey: forge.pki.PublicKey, extensions: object[]) => {
    const c = forge.pki.createCertificate();
    c.publicKey = publicKey;
    c.serialNumber = `01${createHash('sha1').update(`${subject}${Math.random()}`).digest('hex').slice(0, 16)}`;
    c.validity.notBefore = new Date(Date.now() - DAY);
    c.validity.notAfter = new Date(Date.now() + 30 * DAY);
    c.setSubject([{ name: 'commonName', value: subject }]);
    c.setExtensions(extensions);
    return c;
  };
  // Node's crypto makes the keys (natively, in milliseconds); forge only signs.
  const rsa = () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const privateKey = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
    return { privateKey, publicKey: forge.pki.setRsaPublicKey(privateKey.n, privateKey.e) };
  };
  const caKeys = rsa();
  const ca = make('Package mirror test CA', caKeys.publicKey, [{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }, { name: 'subjectKeyIdentifier' }]);
  ca.setIssuer(ca.subject.attributes);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());
  const keys = rsa();
  const leaf = make(host, keys.publicKey, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
    { name: 'subjectAltName', altNames: [{ type: 2, value: host }, { type: 7, ip: '127.0.0.1' }] },
  ]);
  leaf.setIssuer(ca.subject.attributes);
  leaf.sign(caKeys.privateKey, forge.md.sha256.create());
  return { caPem: forge.pki.certificateToPem(ca), cert: forge.pki.certificateToPem(leaf), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

/** An npm tarball (everything under package/), the same bytes for the same files: sorted, owned by 0, dated 1970. */
export function npmTarball(files: Record<string, string>): Buffer {
  const blocks: Buffer[] = [];
  for (const path of Object.keys(files).sort()) {
    const body = Buffer.from(files[path]!);
    const h = Buffer.alloc(512);
    const put = (s: string, at: number, len: number) => h.write(s.slice(0, len), at, len, 'utf8');
    const octal = (n: number, at: number, len: number) => put(`${n.toString(8).padStart(len - 1, '0')}\0`, at, len);
    put(`package/${path}`, 0, 100);
    octal(0o644, 100, 8);
    octal(0, 108, 8);
    octal(0, 116, 8);
    octal(body.length, 124, 12);
    octal(0, 136, 12);
    put('        ', 148, 8);
    put('0', 156, 1);
    put('ustar\x0000', 257, 8);
    let sum = 0;
    for (const b of h) sum += b;
    put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
    blocks.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  // gzip's header from zlib carries no time or name.
  return gzipSync(Buffer.concat([...blocks, Buffer.alloc(1024)]));
}

export interface WheelSpec {
  name: string;
  version: string;
  files: Record<string, string>;
  requires?: string[];
}

/** Pure-Python wheels of `files` (paths inside the wheel) with their dist-info, the same bytes each time; one python3 for all. */
export function wheels(specs: WheelSpec[]): { filename: string; data: Buffer }[] {
  const made = specs.map((o) => {
    const dist = `${o.name.replace(/[-.]+/g, '_')}-${o.version}`;
    const info = `${dist}.dist-info`;
    const all: Record<string, string> = {
      ...o.files,
      [`${info}/METADATA`]: `Metadata-Version: 2.1\nName: ${o.name}\nVersion: ${o.version}\n${(o.requires ?? []).map((r) => `Requires-Dist: ${r}\n`).join('')}`,
      [`${info}/WHEEL`]: 'Wheel-Version: 1.0\nGenerator: berth-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    };
    const record = Object.entries(all).map(([p, c]) => `${p},sha256=${createHash('sha256').update(c).digest('base64url')},${Buffer.byteLength(c)}`);
    all[`${info}/RECORD`] = `${record.join('\n')}\n${info}/RECORD,,\n`;
    return { filename: `${dist}-py3-none-any.whl`, files: all };
  });
  // zipfile with fixed times and order: the same wheel, the same hash in the index.
  const script = 'import json,os,sys,zipfile\nfor w in json.load(sys.stdin):\n with zipfile.ZipFile(os.path.join(sys.argv[1],w["filename"]),"w") as z:\n  for p in sorted(w["files"]):\n   i=zipfile.ZipInfo(p,(1980,1,1,0,0,0)); i.external_attr=0o644<<16; i.compress_type=zipfile.ZIP_DEFLATED\n   z.writestr(i,w["files"][p])\n';
  const dir = mkdtempSync(join(tmpdir(), 'berth-wheels-'));
  try {
    execFileSync('python3', ['-c', script, dir], { input: JSON.stringify(made) });
    return made.map((w) => ({ filename: w.filename, data: readFileSync(join(dir, w.filename)) }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
