// The runner's own certificate authority, for the hosts whose requests get credentials
// added: the proxy terminates TLS for them with a certificate this CA signs, and the
// environment trusts it. Made once per data dir; its key stays there (0600).
//
// node-forge builds the certificates: widely used, no dependencies, no global polyfills
// (@peculiar/x509 wants reflect-metadata installed globally). Keys come from Node's own
// crypto, which makes RSA keys natively in milliseconds.
import { generateKeyPair } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import forge from 'node-forge';

const DAY = 86_400_000;

async function rsaKey(): Promise<string> {
  const { privateKey } = await promisify(generateKeyPair)('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return privateKey as unknown as string;
}

export interface LeafCertificate {
  cert: string;
  key: string;
}

export class CertificateAuthority {
  /** The CA certificate (PEM), for the environment's trust bundle. */
  readonly certPem: string;
  readonly #cert: forge.pki.Certificate;
  readonly #key: forge.pki.rsa.PrivateKey;
  /** One key for every leaf: only the runner holds it, and only hosts with credentials get a certificate. */
  readonly #leafKeyPem: string;
  readonly #leafPublic: forge.pki.rsa.PublicKey;
  readonly #leaves = new Map<string, LeafCertificate>();

  private constructor(certPem: string, keyPem: string, leafKeyPem: string) {
    this.certPem = certPem;
    this.#cert = forge.pki.certificateFromPem(certPem);
    this.#key = forge.pki.privateKeyFromPem(keyPem);
    this.#leafKeyPem = leafKeyPem;
    const leafKey = forge.pki.privateKeyFromPem(leafKeyPem);
    this.#leafPublic = forge.pki.setRsaPublicKey(leafKey.n, leafKey.e);
  }

  /** Loads the CA from `dir` (ca.crt, ca.key), making it on first use (named `commonName`: tests make other CAs with it). */
  static async open(dir: string, commonName = 'Berth runner egress CA'): Promise<CertificateAuthority> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const certPath = join(dir, 'ca.crt');
    const keyPath = join(dir, 'ca.key');
    const leafKey = rsaKey();
    if (!existsSync(certPath) || !existsSync(keyPath)) {
      const keyPem = await rsaKey();
      const key = forge.pki.privateKeyFromPem(keyPem);
      const cert = forge.pki.createCertificate();
      cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
      cert.serialNumber = serial();
      cert.validity.notBefore = new Date(Date.now() - DAY);
      cert.validity.notAfter = new Date(Date.now() + 3650 * DAY);
      const name = [{ name: 'commonName', value: commonName }, { name: 'organizationName', value: 'Berth' }];
      cert.setSubject(name);
      cert.setIssuer(name);
      cert.setExtensions([
        { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
        { name: 'subjectKeyIdentifier' },
      ]);
      cert.sign(key, forge.md.sha256.create());
      // The key first, private from its first byte; the certificate last, so a crash
      // between the two leaves no certificate without its key.
      writeFileSync(`${keyPath}.tmp`, keyPem, { mode: 0o600 });
      chmodSync(`${keyPath}.tmp`, 0o600);
      renameSync(`${keyPath}.tmp`, keyPath);
      writeFileSync(`${certPath}.tmp`, forge.pki.certificateToPem(cert), { mode: 0o644 });
      renameSync(`${certPath}.tmp`, certPath);
    }
    return new CertificateAuthority(readFileSync(certPath, 'utf8'), readFileSync(keyPath, 'utf8'), await leafKey);
  }

  /** A certificate for `host`, signed by this CA (cached: signing takes milliseconds). */
  leaf(host: string): LeafCertificate {
    let leaf = this.#leaves.get(host);
    if (!leaf) {
      const cert = forge.pki.createCertificate();
      cert.publicKey = this.#leafPublic;
      cert.serialNumber = serial();
      cert.validity.notBefore = new Date(Date.now() - DAY);
      cert.validity.notAfter = new Date(Date.now() + 90 * DAY);
      cert.setSubject([{ name: 'commonName', value: host }]);
      cert.setIssuer(this.#cert.subject.attributes);
      cert.setExtensions([
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: host }] },
      ]);
      cert.sign(this.#key, forge.md.sha256.create());
      leaf = { cert: forge.pki.certificateToPem(cert), key: this.#leafKeyPem };
      this.#leaves.set(host, leaf);
    }
    return leaf;
  }
}

/** A positive random serial number, in hex. */
function serial(): string {
  return `01${forge.util.bytesToHex(forge.random.getBytesSync(15))}`;
}
