// Composes the network of every environment on this runner: its namespace and rules
// (netns.ts), its proxy (proxy.ts, deciding with request-filter.ts), the trust bundle
// for hosts whose TLS the proxy terminates (ca.ts), the counters, and the record of
// what the rules refused (firewall-log.ts).
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { getCACertificates } from 'node:tls';
import type { Logger } from 'pino';
import { unavailable } from '../../shared/errors.ts';
import { isMounted } from '../overlay.ts';
import type { RunOptions, Spawner } from '../spawner/index.ts';
import { CertificateAuthority } from './ca.ts';
import { hostCaBundle } from './company-ca.ts';
import { FirewallLog, refusalEvent, refusalRule } from './firewall-log.ts';
import { DEFAULT_SUBNET, hostBatch, insideBatch, netnsNames, netnsPrefix, pairAddresses, PROXY_PORT, ruleset, setupScript, teardownScript, type NetnsPlan } from './netns.ts';
import { EgressProxy } from './proxy.ts';
import { findKeytool } from './java-trust.ts';
import { trustLayer, type TrustCa } from './trust-layer.ts';
import { blockListOf, hostAddressesNow } from './request-filter.ts';
import type { NetworkUsage, RunnerNetworkOptions } from './types.ts';

/** Where the environment finds the trust bundle (system CAs + the runner's CA + company CAs), bind-mounted read-only. */
export const CA_BUNDLE_PATH = '/.berth/ca-certificates.crt';
/** Tries at a /31 the host does not already have. */
const ADDRESS_ATTEMPTS = 16;
const DEFAULT_WARM = 2;
/** How often running environments are checked for refused packets (cheap: see firewall-log.ts). */
const FIREWALL_POLL_MS = 1_000;
const FIREWALL_START_DELAY_MS = 2_000;

/** What the bundle needs to put an environment on its network. */
export interface PreparedNetwork {
  /** The network namespace crun joins instead of making an empty one. */
  netnsPath: string;
  /** Host file to bind-mount read-only at CA_BUNDLE_PATH. */
  caBundle: string;
  env: string[];
}

export class NetworkManager {
  readonly #o: RunnerNetworkOptions;
  readonly #dir: string;
  readonly #dataDir: string;
  readonly #spawner: Spawner;
  readonly #log: Logger;
  readonly #proxies = new Map<string, EgressProxy>();
  readonly #usage = new Map<string, NetworkUsage>();
  readonly #plans = new Map<string, NetnsPlan & { up?: boolean }>();
  #ca: Promise<CertificateAuthority> | undefined;
  readonly #restored: Promise<void>;
  readonly #warm: NetnsPlan[] = [];
  readonly #warmTarget: number;
  /** Host addresses handed out by this runner and not yet on an interface. */
  readonly #claimed = new Set<string>();
  #filling: Promise<void> | undefined;
  /** Readers of what each running environment's rules refused. */
  readonly #firewalls = new Map<string, FirewallLog>();
  readonly #firewallTimer: NodeJS.Timeout;
  #polling = false;
  #closed = false;
  #nftChecked = false;
  #bundleReady = false;
  /** What the proxy's own TLS upstream trusts besides Node's store: the host's store and the company CAs. */
  readonly #upstreamCa: string | undefined;
  /** For images with a Java keystore (java-trust.ts). */
  readonly #keytool = findKeytool();

  constructor(opts: RunnerNetworkOptions & { dataDir: string; spawner: Spawner; logger: Logger }) {
    this.#o = opts;
    this.#dataDir = resolve(opts.dataDir);
    this.#dir = join(this.#dataDir, 'network');
    this.#spawner = opts.spawner;
    this.#log = opts.logger;
    mkdirSync(join(this.#dir, 'environments'), { recursive: true, mode: 0o700 });
    mkdirSync(join(this.#dir, 'namespaces'), { recursive: true, mode: 0o700 });
    this.#warmTarget = opts.warm ?? DEFAULT_WARM;
    const company = opts.companyCas ?? [];
    this.#upstreamCa = company.length || opts.upstreamCa
      ? [...(company.length ? getCACertificates('system') : []), ...company, opts.upstreamCa ?? ''].join('\n')
      : undefined;
    this.#restored = this.#restore()
      .catch((err: unknown) => this.#log.warn({ err }, 'could not tidy the network namespaces an earlier runner left'))
      .then(() => this.refill());
    this.#firewallTimer = setInterval(() => void this.#pollFirewalls(), FIREWALL_POLL_MS);
    this.#firewallTimer.unref();
  }

  /**
   * After a runner restart, environments that kept running keep their namespaces (their
   * processes hold them) and the host ends of their veth pairs: their proxies listen
   * again at once, whether or not anyone calls start.
   */
  async #restore(): Promise<void> {
    const dir = join(this.#dir, 'environments');
    const inUse = new Set<string>();
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
      const plan = this.#plan(f.slice(0, -5));
      if (plan) inUse.add(plan.name);
    }
    // Names of warm namespaces an earlier runner process made: their mounts went with
    // its spawner, so they name nothing now.
    const prefix = netnsPrefix(this.#dataDir);
    for (const n of existsSync('/run/netns') ? readdirSync('/run/netns') : []) {
      if (!n.startsWith(prefix) || inUse.has(n)) continue;
      try {
        rmSync(join('/run/netns', n), { force: true });
      } catch {
        await this.#spawner.run('ip', ['netns', 'del', n]);
      }
    }
    for (const n of readdirSync(join(this.#dir, 'namespaces'))) if (!inUse.has(n.replace(/\.[a-z]+$/, ''))) rmSync(join(this.#dir, 'namespaces', n), { force: true });
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
      const id = f.slice(0, -5);
      const plan = this.#plan(id);
      if (!plan?.up || !existsSync(`/sys/class/net/${plan.hostIf}`)) continue;
      try {
        await this.#listen(id, plan);
      } catch (err) {
        this.#log.warn({ err, environment: id }, "cannot listen on the environment's proxy address; restart the environment to rebuild its network");
      }
    }
  }

  #statePath(id: string): string {
    return join(this.#dir, 'environments', `${id}.json`);
  }

  /** The plan kept for `id`, so a restarted runner finds the same addresses (cached: exec asks for it). */
  #plan(id: string): (NetnsPlan & { up?: boolean }) | undefined {
    let plan = this.#plans.get(id);
    if (!plan) {
      try {
        plan = JSON.parse(readFileSync(this.#statePath(id), 'utf8')) as NetnsPlan & { up?: boolean };
      } catch {
        return undefined;
      }
      this.#plans.set(id, plan);
    }
    return plan;
  }

  #save(id: string, plan: NetnsPlan & { up: boolean }): void {
    // Written before it is acted on: a runner killed mid-setup finds what to remove.
    writeFileSync(this.#statePath(id), JSON.stringify(plan));
    this.#plans.set(id, plan);
  }

  #newPlan(key: string): NetnsPlan {
    const { name, hostIf } = netnsNames(this.#dataDir, key);
    const taken = hostAddressesNow();
    for (let n = 0; n < ADDRESS_ATTEMPTS; n++) {
      const a = pairAddresses(this.#o.subnet ?? DEFAULT_SUBNET, this.#dataDir, key, n);
      if (!taken.has(a.hostAddress) && !taken.has(a.envAddress) && !this.#claimed.has(a.hostAddress)) {
        this.#claimed.add(a.hostAddress);
        return { name, path: `/run/netns/${name}`, hostIf, ...a, proxyPort: PROXY_PORT };
      }
    }
    throw unavailable(`no free address pair in ${this.#o.subnet ?? DEFAULT_SUBNET}`);
  }

  /** A namespace with its veth pair, addresses and rules: three programs in one shell. */
  async #build(key: string, opts: RunOptions = {}): Promise<NetnsPlan> {
    const plan = this.#newPlan(key);
    const base = join(this.#dir, 'namespaces', plan.name);
    const files = { host: `${base}.host`, inside: `${base}.inside`, rules: `${base}.nft` };
    writeFileSync(files.host, hostBatch(plan));
    writeFileSync(files.inside, insideBatch(plan));
    writeFileSync(files.rules, ruleset(plan));
    const r = await this.#spawner.run('sh', ['-c', setupScript(plan, files)], opts);
    if (r.code !== 0) {
      await this.#teardown(plan);
      throw new Error(`cannot set up a network namespace: ${(r.stderr || r.stdout).trim()}`);
    }
    return plan;
  }

  /** A warm namespace's name and files, without a process (unlinking the name detaches its mount). */
  #forget(plan: NetnsPlan): void {
    try {
      rmSync(plan.path, { force: true });
    } catch {
      // A live mount in this very mount namespace (a spawner without a private one):
      // ip unmounts it first.
      void this.#spawner.run('ip', ['netns', 'del', plan.name]).catch(() => {});
    }
    for (const ext of ['host', 'inside', 'nft']) rmSync(join(this.#dir, 'namespaces', `${plan.name}.${ext}`), { force: true });
  }

  async #teardown(plan: NetnsPlan): Promise<void> {
    await this.#spawner.run('sh', ['-c', teardownScript(plan)]);
    for (const ext of ['host', 'inside', 'nft']) rmSync(join(this.#dir, 'namespaces', `${plan.name}.${ext}`), { force: true });
    this.#claimed.delete(plan.hostAddress);
  }

  /**
   * Makes warm namespaces (RunnerNetworkOptions.warm) ahead, so a start takes one
   * instead of waiting for ip and nft (tens of milliseconds on a busy host). The runner
   * calls it once a start is done, so the work does not compete with that start. They
   * hold nothing of any environment until taken, and die with the spawner's mount
   * namespace if the runner does.
   */
  refill(): void {
    if (this.#filling || this.#closed) return;
    this.#filling = (async () => {
      while (this.#warm.length < this.#warmTarget && !this.#closed) {
        try {
          const plan = await this.#build(`warm:${randomBytes(8).toString('hex')}`, { background: true });
          if (this.#closed) this.#forget(plan);
          else this.#warm.push(plan);
        } catch (err) {
          if (!this.#closed) this.#log.warn({ err }, 'cannot make a warm network namespace; starts will make their own');
          return;
        }
      }
    })().finally(() => (this.#filling = undefined));
  }

  /**
   * Before the environment's init starts: its namespace, veth pair and rules, and its
   * proxy listening. Those an earlier run left (stop keeps them) are reused while they
   * are whole; else (a reboot, or a dead runner's namespace) what is left is removed and
   * a warm or fresh one taken. Idempotent.
   */
  async prepare(id: string): Promise<PreparedNetwork> {
    this.#checkNft();
    await this.#restored;
    const old = this.#plan(id);
    let plan: NetnsPlan;
    if (old && old.up !== false && this.#whole(old)) {
      plan = old;
      if (!this.#proxies.has(id)) await this.#listen(id, plan);
    } else {
      await this.#closeProxy(id);
      if (old && old.up !== false) await this.#teardown(old);
      plan = this.#warm.shift() ?? (await this.#build(`environment:${id}`));
      this.#save(id, { ...plan, up: true });
      await this.#listen(id, plan);
    }
    return { netnsPath: plan.path, caBundle: await this.#caBundle(), env: this.environment(id) };
  }

  /**
   * Whether a kept namespace can be joined as it is: its name still mounted where crun
   * runs (a dead spawner's private mount namespace took it) and the host end of its veth
   * pair still there (deleting the namespace deletes the pair). Its rules are the host's:
   * nothing in the environment could change them.
   */
  #whole(plan: NetnsPlan): boolean {
    return existsSync(`/sys/class/net/${plan.hostIf}`) && isMounted(this.#spawner, plan.path);
  }

  /**
   * The environment is running already (the runner restarted): its namespace lives on
   * in its processes; only the proxy needs to listen again.
   */
  async resume(id: string): Promise<void> {
    await this.#restored;
    if (this.#proxies.has(id)) return;
    const plan = this.#plan(id);
    if (!plan) return;
    try {
      await this.#listen(id, plan);
    } catch (err) {
      this.#log.warn({ err, environment: id }, "cannot listen on the environment's proxy address; restart the environment to rebuild its network");
    }
  }

  /** The variables that send the environment's clients through its proxy. */
  environment(id: string): string[] {
    const plan = this.#plan(id);
    if (!plan) return [];
    const proxy = `http://${plan.hostAddress}:${plan.proxyPort}`;
    const noProxy = 'localhost,127.0.0.1,::1';
    return [
      `HTTP_PROXY=${proxy}`, `HTTPS_PROXY=${proxy}`, `http_proxy=${proxy}`, `https_proxy=${proxy}`,
      `NO_PROXY=${noProxy}`, `no_proxy=${noProxy}`,
      // Node's fetch and http honour the variables only when asked to (Node 24).
      'NODE_USE_ENV_PROXY=1',
      `SSL_CERT_FILE=${CA_BUNDLE_PATH}`, `NODE_EXTRA_CA_CERTS=${CA_BUNDLE_PATH}`, `REQUESTS_CA_BUNDLE=${CA_BUNDLE_PATH}`,
      `CURL_CA_BUNDLE=${CA_BUNDLE_PATH}`, `GIT_SSL_CAINFO=${CA_BUNDLE_PATH}`, `PIP_CERT=${CA_BUNDLE_PATH}`,
    ];
  }

  /**
   * After the environment's processes are gone (stop): its proxy closes, so nothing of
   * its connections outlives them. The namespace, veth pair and rules hold no process
   * and stay for the next start.
   */
  async release(id: string): Promise<void> {
    await this.#closeProxy(id);
  }

  /** The environment is removed: its network and everything kept about it. */
  async remove(id: string): Promise<void> {
    await this.#closeProxy(id);
    const plan = this.#plan(id);
    if (plan) await this.#teardown(plan);
    rmSync(this.#statePath(id), { force: true });
    this.#plans.delete(id);
    this.#usage.delete(id);
  }

  usage(id: string): NetworkUsage {
    return this.#proxies.get(id)?.usage() ?? { ...(this.#usage.get(id) ?? emptyUsage()) };
  }

  /**
   * Packets the namespace's rules rejected (direct connections, DNS, IPv6 …), read from
   * the nftables counter. `pid`: a process in the environment, when the runner that made
   * the namespace's name is gone.
   */
  async blocked(id: string, pid?: number): Promise<{ packets: number; bytes: number } | undefined> {
    const plan = this.#plan(id);
    if (!plan) return undefined;
    const ns = pid ? `--net=/proc/${pid}/ns/net` : `--net=${plan.path}`;
    const r = await this.#spawner.run('nsenter', [ns, 'nft', '-j', 'list', 'counter', 'inet', 'berth', 'blocked']);
    if (r.code !== 0) return undefined;
    const parsed = JSON.parse(r.stdout) as { nftables: { counter?: { packets: number; bytes: number } }[] };
    const c = parsed.nftables.find((x) => x.counter)?.counter;
    return c ? { packets: c.packets, bytes: c.bytes } : undefined;
  }

  /** The proxy address of a prepared environment (tests, diagnostics). */
  proxyAddress(id: string): { host: string; port: number } | undefined {
    const plan = this.#plan(id);
    return plan ? { host: plan.hostAddress, port: plan.proxyPort } : undefined;
  }

  /**
   * Stops every proxy; namespaces stay with their running environments (and what their
   * rules refused stays in their sets, for the next runner).
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#firewallTimer);
    for (const log of this.#firewalls.values()) log.close();
    this.#firewalls.clear();
    // Warm namespaces: their names go now (before the runner closes the spawner), the
    // namespaces with the spawner's mount namespace.
    for (const plan of this.#warm.splice(0)) this.#forget(plan);
    await this.#restored;
    await Promise.all([...this.#proxies.keys()].map((id) => this.#closeProxy(id)));
  }

  async #listen(id: string, plan: NetnsPlan): Promise<void> {
    let usage = this.#usage.get(id);
    if (!usage) this.#usage.set(id, (usage = emptyUsage()));
    const proxy = new EgressProxy({
      environmentId: id,
      policies: this.#o.policies,
      events: this.#o.events,
      usage,
      resolver: this.#o.resolver,
      allowPrivate: this.#o.allowPrivateAddresses?.length ? blockListOf(this.#o.allowPrivateAddresses) : undefined,
      ca: () => this.#authority(),
      upstreamCa: this.#upstreamCa,
      clientAddress: plan.envAddress,
      egressNetwork: this.#o.egressNetwork,
    });
    await proxy.listen(plan.proxyPort, plan.hostAddress);
    this.#proxies.set(id, proxy);
    // Its refusals are read while it runs, like its proxy listens (from a few seconds on,
    // off the start's path). A runner restarted under a running environment finds its
    // namespace through one of its processes: the name's mount went with the earlier
    // runner's spawner.
    if (!this.#firewalls.has(id)) {
      const locate = () => (isMounted(this.#spawner, plan.path) ? plan.path : netnsHolding(plan.envAddress));
      this.#firewalls.set(id, new FirewallLog(this.#spawner, locate, { notBefore: Date.now() + FIREWALL_START_DELAY_MS, idleMs: this.#o.firewallIdleMs }));
    }
  }

  /** What the rules of environments whose packets were refused since the last look refused. */
  async #pollFirewalls(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      // One at a time: a flood in one environment costs one nft conversation a second.
      for (const [id, log] of this.#firewalls) if (await log.due()) await this.#recordRefusals(id, log);
    } finally {
      this.#polling = false;
    }
  }

  async #recordRefusals(id: string, log: FirewallLog, final = false): Promise<void> {
    const plan = this.#plan(id);
    if (!plan) return;
    try {
      const refusals = await log.read(final);
      if (!refusals.length) return;
      const ctx = { hostAddress: plan.hostAddress, subnet: this.#o.subnet ?? DEFAULT_SUBNET, hostAddresses: hostAddressesNow() };
      const at = new Date().toISOString();
      for (const r of refusals) this.#o.events.record(refusalEvent(id, r, refusalRule(r, ctx), at));
    } catch (err) {
      // The rules still refuse; only the record of it waits for the environment's next start.
      if (this.#firewalls.get(id) === log) this.#log.warn({ err, environment: id }, "cannot read what the environment's firewall refused: it still refuses, and counts, but records nothing more until the environment starts again");
      this.#firewalls.delete(id);
      log.close();
    }
  }

  async #closeProxy(id: string): Promise<void> {
    const log = this.#firewalls.get(id);
    if (log) {
      // The last refusals before its processes went.
      await this.#recordRefusals(id, log, true);
      this.#firewalls.delete(id);
      log.close();
    }
    const proxy = this.#proxies.get(id);
    if (!proxy) return;
    this.#proxies.delete(id);
    await proxy.close();
  }

  #authority(): Promise<CertificateAuthority> {
    this.#ca ??= CertificateAuthority.open(join(this.#dir, 'ca'));
    return this.#ca;
  }

  /** The CAs environments trust besides their image's: the runner's egress CA, then the company CAs. */
  async #trustedCas(): Promise<TrustCa[]> {
    const ca = await this.#authority();
    return [{ name: 'berth-egress-ca', pem: ca.certPem }, ...(this.#o.companyCas ?? []).map((pem, i) => ({ name: `berth-company-ca-${i + 1}`, pem }))];
  }

  /** System CAs, the runner's CA and the company CAs in one file (written once per runner process: the company CAs may have changed). */
  async #caBundle(): Promise<string> {
    const path = join(this.#dir, 'ca-bundle.pem');
    if (this.#bundleReady) return path;
    const added = (await this.#trustedCas()).map((c) => `# ${c.name}\n${c.pem.trim()}\n`).join('');
    writeFileSync(`${path}.tmp`, `${hostCaBundle().trimEnd()}\n${added}`, { mode: 0o644 });
    // Renamed into place: a running environment's bind mount keeps the file it had.
    renameSync(`${path}.tmp`, path);
    this.#bundleReady = true;
    return path;
  }

  /**
   * The overlay layer that puts the same CAs in the image's own trust store (trust-layer.ts),
   * for the tools that ignore SSL_CERT_FILE and the like (apt, wget); undefined when the
   * image has no store to extend.
   */
  async trustLayer(rootfs: string): Promise<string | undefined> {
    return trustLayer(join(this.#dir, 'trust-layers'), rootfs, await this.#trustedCas(), { keytool: this.#keytool, warn: (message) => this.#log.warn({ image: rootfs }, message) });
  }

  #checkNft(): void {
    if (this.#nftChecked) return;
    if (!['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].some((p) => existsSync(p))) {
      throw unavailable('environments with a network policy need nftables: apt-get install nftables (scripts/setup.sh installs it)');
    }
    this.#nftChecked = true;
  }
}

function emptyUsage(): NetworkUsage {
  return { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 };
}

/**
 * A namespace path for the network namespace in which `address` is a local address (an
 * environment's end of its pair), through any process in it; undefined if none is found.
 */
function netnsHolding(address: string): string | undefined {
  const local = new RegExp(`-- ${address.replace(/\./g, '\\.')}\n\\s+/32 host LOCAL`);
  const seen = new Set<string>();
  try {
    seen.add(readlinkSync('/proc/self/ns/net'));
  } catch {
    return undefined;
  }
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const ns = readlinkSync(`/proc/${pid}/ns/net`);
      if (seen.has(ns)) continue;
      seen.add(ns);
      if (local.test(readFileSync(`/proc/${pid}/net/fib_trie`, 'utf8'))) return `/proc/${pid}/ns/net`;
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return undefined;
}
