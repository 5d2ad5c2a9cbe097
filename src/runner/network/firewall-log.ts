// What the namespace's rules refused, as events: the rules note each refused packet's
// destination in a set with a counter (netns.ts); this reads those sets through one
// long-lived `nft -i` in the namespace and turns each destination into a NetworkEvent.
//
// Why a long-lived nft: starting nsenter + nft costs ~25 ms of CPU, too much to do every
// second for an environment whose packets are being refused; a waiting nft costs ~1.5 MB
// and a command ~0.3 ms. It ends after IDLE_CLOSE_MS without refusals, so an idle
// environment keeps no process (1.5 MB would be several times what it costs otherwise).
// Why the snmp gate: the namespace's /proc/PID/net counters move when the kernel refuses
// a packet. They are opened once, from the first nft's pid, and the open files go on
// reading the namespace's counters after that process is gone: a quiet environment
// costs two reads a second and no process at all. While an nft runs, a read every
// SAFETY_READ_MS catches what the gate might miss.
import { closeSync, openSync, readSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Spawner, SpawnedProcess } from '../spawner/index.ts';
import { blockListOf } from './request-filter.ts';
import type { NetworkEvent } from './types.ts';

/** One destination the rules refused since the last read. */
export interface Refusal {
  family: 4 | 6;
  address: string;
  /** nft's name for the protocol ('tcp', 'udp', 'icmp' …), or its number. */
  protocol: string;
  /** 0 for protocols without ports. */
  port: number;
  packets: number;
  bytes: number;
}

/** Where an environment's addresses are, to say which default-deny rule refused a packet. */
export interface RefusalContext {
  /** The host's end of the veth pair. */
  hostAddress: string;
  /** The range every environment's pair comes from. */
  subnet: string;
  /** This host's own addresses. */
  hostAddresses: ReadonlySet<string>;
}

export const SAFETY_READ_MS = 10_000;
const IDLE_CLOSE_MS = 30_000;
const ANSWER_TIMEOUT_MS = 5_000;

const LINK_LOCAL = blockListOf(['169.254.0.0/16', 'fe80::/10']);
const METADATA = new Set(['169.254.169.254', 'fd00:ec2::254']);
const DNS_PORTS = new Set([53, 853]);

/**
 * The default-deny rule that refused `r`, named for the reader: `deny:firewall:dns`,
 * `metadata`, `link-local`, `host` (the veth's host end or any address of the host),
 * `other-environment` (the pairs' range), `ipv6`, else `direct-connection`.
 */
export function refusalRule(r: Pick<Refusal, 'family' | 'address' | 'port' | 'protocol'>, ctx: RefusalContext): string {
  const type = r.family === 4 ? 'ipv4' : 'ipv6';
  const subnets = blockListOf([ctx.subnet]);
  const why = DNS_PORTS.has(r.port) && (r.protocol === 'udp' || r.protocol === 'tcp') ? 'dns'
    : METADATA.has(r.address) ? 'metadata'
    : LINK_LOCAL.check(r.address, type) ? 'link-local'
    : r.address === ctx.hostAddress ? 'host'
    // Before the host's addresses: the host ends of other environments' pairs are among them.
    : subnets.check(r.address, type) ? 'other-environment'
    : ctx.hostAddresses.has(r.address) ? 'host'
    : r.family === 6 ? 'ipv6'
    : 'direct-connection';
  return `deny:firewall:${why}`;
}

/** A refusal as an event: the protocol stands where a request's method would, the packets counted. */
export function refusalEvent(environmentId: string, r: Refusal, rule: string, at: string): NetworkEvent {
  return {
    environmentId,
    at,
    kind: 'firewall',
    host: r.address,
    port: r.port,
    method: r.protocol.toUpperCase(),
    path: null,
    allowed: false,
    rule,
    status: null,
    bytesUp: r.bytes,
    bytesDown: 0,
    durationMs: 0,
    packets: r.packets,
  };
}

interface NftSet {
  name?: string;
  elem?: { elem?: { val?: { concat?: unknown[] }; counter?: { packets?: number; bytes?: number } } }[];
}

/** The elements of one `nft -j list set` answer (refused4 or refused6). */
export function parseRefusedSet(line: string): Refusal[] {
  const doc = JSON.parse(line) as { nftables?: { set?: NftSet }[] };
  const set = doc.nftables?.find((o) => o.set)?.set;
  const family = set?.name === 'refused6' ? 6 : 4;
  const out: Refusal[] = [];
  for (const { elem } of set?.elem ?? []) {
    const [address, protocol, port] = elem?.val?.concat ?? [];
    // What goes back into a delete command is an address, a protocol name or number, a port.
    if (typeof address !== 'string' || isIP(address) !== family || !/^[a-z0-9-]+$/i.test(String(protocol))) continue;
    out.push({
      family,
      address,
      protocol: String(protocol),
      port: typeof port === 'number' ? port : Number(port) || 0,
      packets: elem?.counter?.packets ?? 0,
      bytes: elem?.counter?.bytes ?? 0,
    });
  }
  return out;
}

/**
 * Compares a listing with the counters seen at the last one (`seen`): what is new since
 * (`refusals`), the counters to remember, and the destinations idle since (to remove).
 * A counter below the one remembered belongs to an element that was removed and came back.
 */
export function sinceLastRead(listed: Refusal[], seen: ReadonlyMap<string, Refusal>): { refusals: Refusal[]; seen: Map<string, Refusal>; idle: Refusal[] } {
  const refusals: Refusal[] = [];
  const idle: Refusal[] = [];
  const next = new Map<string, Refusal>();
  for (const r of listed) {
    const key = `${r.address} ${r.protocol} ${r.port}`;
    const before = seen.get(key);
    if (before && before.packets === r.packets) {
      idle.push(r);
      continue;
    }
    const base = before && before.packets < r.packets ? before : undefined;
    refusals.push(base ? { ...r, packets: r.packets - base.packets, bytes: Math.max(0, r.bytes - base.bytes) } : r);
    next.set(key, r);
  }
  return { refusals, seen: next, idle };
}

/**
 * Counters in /proc/PID/net/snmp and snmp6 that move when the rules refuse a packet: a
 * refused TCP connect fails (the reset), anything else is discarded on the way out with
 * an ICMP unreachable sent back. Their sum is a change detector, nothing more.
 */
export function refusalSignal(snmp: string, snmp6: string): number {
  let sum = 0;
  const lines = snmp.split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    for (let j = 1; j < names.length; j++) {
      const key = `${names[0]}${names[j]}`;
      if (key === 'Tcp:AttemptFails' || key === 'Ip:OutDiscards' || key === 'Icmp:OutDestUnreachs') sum += Number(values[j]) || 0;
    }
  }
  for (const m of snmp6.matchAll(/^(Ip6OutDiscards|Icmp6OutDestUnreachs)\s+(\d+)$/gm)) sum += Number(m[2]);
  return sum;
}

/**
 * One environment's reader: a `nft -j -i` in its namespace, asked line by line. Each
 * batch of commands ends with `list tables`, whose answer always comes (a failed command
 * prints nothing on stdout), so every answer is framed. The nft starts at the first read,
 * not before `notBefore`: a start does not share its moment with it, and what is refused
 * meanwhile waits in the sets.
 */
export class FirewallLog {
  readonly #spawner: Spawner;
  readonly #locate: () => string | undefined;
  readonly #notBefore: number;
  readonly #idleMs: number;
  #proc: SpawnedProcess | undefined;
  #buffer = '';
  #lines: string[] = [];
  #waiting: (() => void) | undefined;
  #stderr = '';
  #dead: string | undefined;
  #busy: Promise<unknown> = Promise.resolve();
  /** Last snmp sum seen, when the sets were last read, and when they last held something new. */
  #signal: number | undefined;
  #readAt = 0;
  #refusedAt = 0;
  /** The namespace's snmp and snmp6, open (see above), once the first nft has started. */
  #counters: { snmp: number; snmp6: number | undefined } | undefined;
  /** The counters of the destinations left in the sets at the last read. */
  #seen = new Map<string, Refusal>();

  /** @param locate the namespace's path as the spawner sees it, asked when the nft starts. */
  constructor(spawner: Spawner, locate: () => string | undefined, opts: { notBefore?: number; idleMs?: number | undefined } = {}) {
    this.#spawner = spawner;
    this.#locate = locate;
    this.#notBefore = opts.notBefore ?? 0;
    this.#idleMs = opts.idleMs ?? IDLE_CLOSE_MS;
  }

  #start(): SpawnedProcess {
    const netns = this.#locate();
    if (!netns) throw new Error((this.#dead = 'cannot find the network namespace'));
    const proc = this.#spawner.spawn('nsenter', [`--net=${netns}`, 'nft', '-j', '-i'], { stdin: true });
    this.#buffer = '';
    this.#lines = [];
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk: string) => {
      this.#buffer += chunk;
      const parts = this.#buffer.split('\n');
      this.#buffer = parts.pop()!;
      for (const p of parts) if (p.trim()) this.#lines.push(p);
      this.#waiting?.();
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk: string) => (this.#stderr = (this.#stderr + chunk).slice(-2000)));
    void proc.exited.then(({ code }) => {
      // An nft ended for being idle is no failure.
      if (this.#proc === proc) this.#dead ??= `nft exited ${code}: ${this.#stderr.trim()}`;
      this.#waiting?.();
    });
    return proc;
  }

  /** Why it stopped answering, once it has. */
  get dead(): string | undefined {
    return this.#dead;
  }

  /** Whether the sets may hold something: the snmp gate moved, or a safety read is due. */
  async due(now = Date.now()): Promise<boolean> {
    if (now < this.#notBefore) return false;
    // The first read starts the nft, whose pid opens the counters.
    if (!this.#counters) return !this.#proc;
    // Nothing refused for a while (or ever: the first nft only opened the counters).
    if (this.#proc && now - this.#refusedAt >= this.#idleMs) this.#busy = this.#busy.then(() => this.#idle());
    const moved = this.#sample(this.#counters);
    return moved || (this.#proc !== undefined && now - this.#readAt >= SAFETY_READ_MS);
  }

  /** Reads the gate's counters; true when they moved since the last sample. */
  #sample(c: { snmp: number; snmp6: number | undefined }): boolean {
    const signal = refusalSignal(readAll(c.snmp), c.snmp6 === undefined ? '' : readAll(c.snmp6));
    const moved = signal !== this.#signal;
    this.#signal = signal;
    return moved;
  }

  /**
   * Opens the namespace's counters through `proc`, and takes their first sample. Only
   * once it has answered: until nsenter has entered the namespace, its /proc/PID/net is
   * the host's.
   */
  async #openCounters(proc: SpawnedProcess): Promise<void> {
    await this.#roundTrip([]);
    const pid = await proc.pid;
    const snmp = openSync(`/proc/${pid}/net/snmp`, 'r');
    this.#counters = { snmp, snmp6: optionalOpen(`/proc/${pid}/net/snmp6`) };
    this.#sample(this.#counters);
  }

  /** Ends the nft between refusals; the next read starts another. */
  #idle(): void {
    const proc = this.#proc;
    this.#proc = undefined;
    proc?.stdin.end();
  }

  /**
   * What was refused since the last read: each destination with the packets since then.
   * A destination still being hit stays in its set (its counter goes on, so a flood is
   * counted exactly); one idle since the last read is removed, which keeps the sets small.
   * `final` (the environment's processes are gone) removes everything read.
   */
  read(final = false): Promise<Refusal[]> {
    const next = this.#busy.then(async () => {
      // The last read of a stop, with no nft running and the gate still: the reads that
      // ended the nft emptied the sets, and nothing was refused since. A stop then starts
      // no process.
      if (final && !this.#proc && this.#counters && !this.#sample(this.#counters)) return [];
      this.#readAt = Date.now();
      const answers = await this.#ask(['list set inet berth refused4', 'list set inet berth refused6']);
      const { refusals, seen, idle } = sinceLastRead(answers.flatMap(parseRefusedSet), this.#seen);
      if (refusals.length) this.#refusedAt = this.#readAt;
      this.#seen = final ? new Map() : seen;
      const remove = final ? [...idle, ...refusals] : idle;
      // One command each: a removal that fails (the element timed out) leaves the others removed.
      if (remove.length) await this.#ask(remove.map((r) => `delete element inet berth refused${r.family} { ${r.address} . ${r.protocol} . ${r.port} }`));
      return refusals;
    });
    this.#busy = next.catch(() => {});
    return next;
  }

  /** Sends `commands` and a framing `list tables`; resolves with the answers before the frame. */
  async #ask(commands: string[]): Promise<string[]> {
    if (this.#dead) throw new Error(this.#dead);
    this.#proc ??= this.#start();
    // Sampled before the sets are listed: a refusal after the listing moves the gate.
    if (!this.#counters) await this.#openCounters(this.#proc);
    return this.#roundTrip(commands);
  }

  async #roundTrip(commands: string[]): Promise<string[]> {
    if (!this.#proc) throw new Error('nft is not running');
    this.#proc.stdin.write(`${[...commands, 'list tables'].join('\n')}\n`);
    const deadline = Date.now() + ANSWER_TIMEOUT_MS;
    const answers: string[] = [];
    for (;;) {
      const line = this.#lines.shift();
      if (line !== undefined) {
        if (line.includes('"set":')) answers.push(line);
        else return answers;
        continue;
      }
      if (this.#dead) throw new Error(this.#dead);
      const left = deadline - Date.now();
      if (left <= 0) {
        this.#dead = `nft did not answer within ${ANSWER_TIMEOUT_MS} ms`;
        this.close();
        throw new Error(this.#dead);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#waiting = undefined;
    }
  }

  /** Ends the nft (at end of input) and lets go of the counters; the namespace is not touched. */
  close(): void {
    this.#dead ??= 'closed';
    this.#proc?.stdin.end();
    if (this.#counters) {
      closeSync(this.#counters.snmp);
      if (this.#counters.snmp6 !== undefined) closeSync(this.#counters.snmp6);
      this.#counters = undefined;
    }
  }
}

/** The whole of a /proc seq file, from its start (the same descriptor reads it again and again). */
function readAll(fd: number): string {
  const buf = Buffer.allocUnsafe(16 * 1024);
  let text = '';
  for (let pos = 0; ; ) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) return text;
    text += buf.toString('utf8', 0, n);
    pos += n;
  }
}

/** snmp6 is absent where IPv6 is off. */
function optionalOpen(path: string): number | undefined {
  try {
    return openSync(path, 'r');
  } catch {
    return undefined;
  }
}
