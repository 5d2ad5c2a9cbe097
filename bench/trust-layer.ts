// What company CAs cost a start: the trust layer (trust-layer.ts) is made on an image's
// first start with a given set of CAs and found again on every later one; a CA file is
// checked once per `berth up`. On the default image, with the runner's CA and two company CAs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { loadCompanyCas } from '../src/runner/network/company-ca.ts';
import { trustLayer } from '../src/runner/network/trust-layer.ts';
import { ImageStore } from '../src/runner/index.ts';
import { IMAGE_DIR } from '../test/helpers.ts';
import { summary } from './stats.ts';

const ROUNDS = Number(process.env.BENCH_TRUST_ROUNDS ?? 30);
const dir = mkdtempSync(join(tmpdir(), 'berth-bench-trust-'));
try {
  const image = await new ImageStore({ dir: IMAGE_DIR }).resolve('default');
  const cas = await Promise.all(['Runner', 'Corp Root', 'Corp Inspection'].map(async (name, i) => {
    const ca = await CertificateAuthority.open(join(dir, `ca-${i}`), name);
    return { name: `ca-${i}`, pem: ca.certPem };
  }));
  const made: number[] = [];
  const found: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const layers = join(dir, `layers-${i}`);
    let start = performance.now();
    await trustLayer(layers, image.rootfs, cas);
    made.push(performance.now() - start);
    start = performance.now();
    await trustLayer(layers, image.rootfs, cas);
    found.push(performance.now() - start);
  }
  summary('trust layer, first start of the image (made)', made);
  summary('trust layer, every later start (found)', found);

  const file = join(dir, 'corp.pem');
  writeFileSync(file, cas.slice(1).map((c) => c.pem).join(''));
  const checks: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const start = performance.now();
    loadCompanyCas([file]);
    checks.push(performance.now() - start);
  }
  summary('checking a CA file of two certificates', checks);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
