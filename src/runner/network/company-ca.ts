// Company certificate authorities (`berth up --extra-ca FILE`, BERTH_EXTRA_CA_CERTS): companies
// that inspect TLS re-sign every connection with their own CA, which neither images nor
// Node's bundled store know. The files are checked once, at start, so a wrong one stops
// Berth with a message naming it rather than failing every TLS connection later. Their
// contents never reach a log or an error: only file names, positions and subjects.
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { BerthError, invalid } from '../../shared/errors.ts';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----\r?\n[\s\S]*?-----END CERTIFICATE-----/g;
/** A CA file is a few kilobytes; a bundle of a whole store a few hundred. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
const HOST_CA_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

export interface CompanyCa {
  /** The file it came from, as given. */
  file: string;
  subject: string;
  /** Normalised PEM, one certificate. */
  pem: string;
}

/** The host's own trust store as one PEM text (Node's bundled store when the host has none). */
export function hostCaBundle(): string {
  const system = HOST_CA_BUNDLES.find((p) => existsSync(p));
  return system ? readFileSync(system, 'utf8') : rootCertificates.join('\n');
}

/**
 * Reads and checks every certificate in `files`: each file must hold at least one PEM
 * certificate and no private key, and each certificate must be a CA (basicConstraints
 * CA:TRUE) valid at `now`. Throws `invalid` naming the file and the certificate.
 */
export function loadCompanyCas(files: readonly string[], now = new Date()): CompanyCa[] {
  const cas: CompanyCa[] = [];
  const seen = new Set<string>();
  for (const file of files) {
    let text: string;
    try {
      const bytes = readFileSync(file);
      if (bytes.length > MAX_FILE_BYTES) throw invalid(`extra CA file ${file} is larger than 4 MiB: give only the company's CA certificates (PEM)`);
      text = bytes.toString('utf8');
    } catch (e) {
      if (e instanceof BerthError) throw e;
      throw invalid(`cannot read extra CA file ${file} (${(e as NodeJS.ErrnoException).code ?? 'unreadable'}): give the path of a PEM file holding the company's CA certificate`);
    }
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
      throw invalid(`extra CA file ${file} holds a private key: give only the CA's certificate, and keep its key off this host`);
    }
    const blocks = text.match(PEM_BLOCK) ?? [];
    if (blocks.length === 0) {
      throw invalid(`extra CA file ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----): if it is DER, convert it with \`openssl x509 -inform der -in ${file} -out ca.pem\``);
    }
    blocks.forEach((block, i) => {
      const which = blocks.length > 1 ? `certificate ${i + 1} in ${file}` : `the certificate in ${file}`;
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(block);
      } catch {
        throw invalid(`${which} is not a valid X.509 certificate: export the company CA's certificate again as PEM`);
      }
      const subject = cert.subject.replace(/\n/g, ', ');
      if (!cert.ca) {
        throw invalid(`${which} (${subject}) is not a CA certificate (no basicConstraints CA:TRUE): give the certificate of the CA that issued it, not a server's`);
      }
      if (cert.validToDate.getTime() < now.getTime()) {
        throw invalid(`${which} (${subject}) expired on ${cert.validToDate.toISOString().slice(0, 10)}: ask for the company CA's current certificate`);
      }
      if (cert.validFromDate.getTime() > now.getTime()) {
        throw invalid(`${which} (${subject}) is not valid before ${cert.validFromDate.toISOString()}: check this host's clock, or the certificate`);
      }
      if (seen.has(cert.fingerprint256)) return;
      seen.add(cert.fingerprint256);
      cas.push({ file, subject, pem: `${cert.toString().trim()}\n` });
    });
  }
  return cas;
}

/** What host-side clients use to trust the company CAs upstream. */
export interface HostTrust {
  /** The company CAs' PEM, concatenated. */
  pem: string;
  /** The host's store plus the company CAs, one file: host-side git's http.sslCAInfo. */
  bundle: string;
  /** A directory holding the company CAs as *.crt: skopeo's --src-cert-dir (added to its system pool). */
  certDir: string;
}

/** Writes the host-side trust files under `dir` (rewritten on every start: the CAs may have changed). */
export function writeHostTrust(dir: string, cas: readonly CompanyCa[]): HostTrust {
  const certDir = join(dir, 'registry-certs');
  mkdirSync(certDir, { recursive: true, mode: 0o755 });
  const pem = cas.map((c) => c.pem).join('');
  const bundle = join(dir, 'host-ca-bundle.pem');
  replaceFile(bundle, `${hostCaBundle().trimEnd()}\n# Company CAs (berth up --extra-ca)\n${pem}`);
  replaceFile(join(certDir, 'company-ca.crt'), pem);
  return { pem, bundle, certDir };
}

function replaceFile(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o644 });
  renameSync(`${path}.tmp`, path);
}
