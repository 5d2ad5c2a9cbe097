// Generates the OCI runtime config (config.json) for one environment. The same bundle
// runs under crun, runc or runsc.
import { readFileSync } from 'node:fs';
import type { EnvironmentLimits } from '../shared/environment.ts';
import { SOCKET_NAME } from './agent/protocol.ts';
import { seccompProfile } from './backends/seccomp.ts';
import { ID_BASE, ID_COUNT } from './idmap.ts';

export interface BundleInput {
  hostname: string;
  rootfs: string;
  /** Static init binary on the host, bind-mounted read-only as the environment's PID 1: the Berth agent, or catatonit. */
  initBinary: string;
  /**
   * With the agent as init: the host directory bind-mounted read-write at AGENT_DIR,
   * where the agent makes its socket. Without it, initBinary is catatonit.
   */
  agentDir?: string | undefined;
  env: string[];
  limits: EnvironmentLimits;
  cgroupsPath: string;
  /**
   * With a network (runner/network): the namespace made for the environment, joined
   * instead of a new empty one, and the CA bundle that trusts the egress proxy's
   * certificates, bind-mounted read-only. Without it, an empty namespace: no network.
   */
  network?: { netnsPath: string; caBundle: { source: string; destination: string } } | undefined;
  /** Host files and folders bound read-only into the environment (its package mirrors' configuration). */
  readOnly?: { source: string; destination: string }[] | undefined;
  /** Named volumes: host directories bind-mounted read-write (runner.ts makes them). */
  volumes?: { source: string; destination: string }[] | undefined;
}

export const INIT_PATH = '/.berth/init';
export const AGENT_DIR = '/.berth/agent';
export const WORKSPACE = '/workspace';

// Docker's default set minus NET_RAW and MKNOD: enough for package managers and build
// tools running as root inside, nothing that reaches the host.
export const CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_AUDIT_WRITE', 'CAP_SETFCAP',
];

const CPU_PERIOD = 100_000;

/** Open files per process: 65536, or the runner's own hard limit if that is lower (raising it needs privileges a runner may lack). */
const OPEN_FILES = Math.min(65_536, hardLimit('Max open files') ?? 65_536);

function hardLimit(name: string): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
    const hard = line?.slice(26).trim().split(/\s+/)[1];
    return hard === undefined || hard === 'unlimited' ? undefined : Number(hard);
  } catch {
    return undefined;
  }
}

export function ociConfig(input: BundleInput) {
  const { limits } = input;
  const idMap = [{ containerID: 0, hostID: ID_BASE, size: ID_COUNT }];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      // The agent: a reaping init that also runs commands sent to its socket. Or, without
      // it, catatonit -P: a reaping init that runs nothing; every command arrives through exec.
      args: input.agentDir ? [INIT_PATH, '--listen', `${AGENT_DIR}/${SOCKET_NAME}`] : [INIT_PATH, '-P'],
      env: input.env,
      cwd: '/',
      capabilities: {
        bounding: CAPABILITIES,
        effective: CAPABILITIES,
        permitted: CAPABILITIES,
        inheritable: [] as string[],
        ambient: [] as string[],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: OPEN_FILES, soft: OPEN_FILES }],
      noNewPrivileges: true,
      oomScoreAdj: 500,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=262144k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: INIT_PATH, type: 'bind', source: input.initBinary, options: ['bind', 'ro', 'nosuid', 'nodev'] },
      ...(input.agentDir
        ? [{ destination: AGENT_DIR, type: 'bind', source: input.agentDir, options: ['bind', 'rw', 'nosuid', 'nodev', 'noexec'] }]
        : []),
      ...(input.network
        ? [{ destination: input.network.caBundle.destination, type: 'bind', source: input.network.caBundle.source, options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] }]
        : []),
      ...(input.readOnly ?? []).map((m) => ({ destination: m.destination, type: 'bind', source: m.source, options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] })),
      ...(input.volumes ?? []).map((v) => ({ destination: v.destination, type: 'bind', source: v.source, options: ['bind', 'rw', 'nosuid', 'nodev'] })),
    ],
    linux: {
      uidMappings: idMap,
      gidMappings: idMap,
      // The network namespace is the runner's when the environment has a network (made
      // and owned by the host, so the environment's root cannot change its rules).
      namespaces: ['pid', 'network', 'ipc', 'uts', 'mount', 'user', 'cgroup'].map((type) =>
        type === 'network' && input.network ? { type, path: input.network.netnsPath } : { type }),
      cgroupsPath: input.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: limits.memoryBytes },
        cpu: { quota: Math.round(limits.cpus * CPU_PERIOD), period: CPU_PERIOD },
        pids: { limit: limits.pidsLimit },
      },
      seccomp: seccompProfile(),
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
        // A sysfs cannot be mounted for a network namespace the environment's user namespace
        // does not own, so the runtime binds the host's: hide the host's and the other
        // environments' interfaces there (netlink, which `ip` uses, shows the environment's own).
        ...(input.network ? ['/sys/class/net', '/sys/devices/virtual/net'] : []),
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
