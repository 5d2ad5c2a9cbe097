import { readFileSync } from 'node:fs';

export type CgroupLayout = 'v2' | 'v1' | 'hybrid';

/**
 * crun refuses a host that mounts cgroup v1 controllers and also an empty cgroup2 tree
 * at /sys/fs/cgroup/unified ("cgroups in hybrid mode not supported"). The runner starts
 * its commands in a mount namespace of their own without that one mount, where crun sees
 * a plain v1 host. The host's mounts are untouched; pure v1 and v2 hosts need nothing.
 */
export const HYBRID_UNIFIED_MOUNT = '/sys/fs/cgroup/unified';

let cached: CgroupLayout | undefined;

/** How the host mounts cgroups, read from /proc/self/mountinfo once. */
export function cgroupLayout(): CgroupLayout {
  if (cached) return cached;
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const fsType = (line: string) => line.split(' - ')[1]?.split(' ')[0];
  const mountPoint = (line: string) => line.split(' ')[4];
  const v2Root = mounts.some((l) => fsType(l) === 'cgroup2' && mountPoint(l) === '/sys/fs/cgroup');
  const v1 = mounts.some((l) => fsType(l) === 'cgroup');
  cached = v2Root ? 'v2' : v1 && mounts.some((l) => fsType(l) === 'cgroup2') ? 'hybrid' : 'v1';
  return cached;
}

export interface CgroupUsage {
  memoryBytes: number | null;
  cpuSeconds: number | null;
  pids: number | null;
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim().split(/\s+/)[0]);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

function readStat(path: string, key: string): number | null {
  try {
    const line = readFileSync(path, 'utf8').split('\n').find((l) => l.startsWith(`${key} `));
    return line ? Number(line.split(' ')[1]) : null;
  } catch {
    return null;
  }
}

/** Memory, CPU and process count of a container's cgroup (`cgroupsPath` as given to the runtime). */
export function cgroupUsage(cgroupsPath: string): CgroupUsage {
  if (cgroupLayout() === 'v2') {
    const dir = `/sys/fs/cgroup${cgroupsPath}`;
    const usec = readStat(`${dir}/cpu.stat`, 'usage_usec');
    return {
      memoryBytes: readNumber(`${dir}/memory.current`),
      cpuSeconds: usec === null ? null : usec / 1e6,
      pids: readNumber(`${dir}/pids.current`),
    };
  }
  const ns = readNumber(`/sys/fs/cgroup/cpuacct${cgroupsPath}/cpuacct.usage`);
  return {
    memoryBytes: readNumber(`/sys/fs/cgroup/memory${cgroupsPath}/memory.usage_in_bytes`),
    cpuSeconds: ns === null ? null : ns / 1e9,
    pids: readNumber(`/sys/fs/cgroup/pids${cgroupsPath}/pids.current`),
  };
}

/**
 * How many processes the kernel's OOM killer has killed in a container's cgroup since it
 * was made (the environment's last start): `oom_kill` in memory.events (v2) or in
 * memory.oom_control (v1, kernel 4.13 and later). Null where the host does not say.
 */
export function oomKillCount(cgroupsPath: string): number | null {
  const file = cgroupLayout() === 'v2' ? `/sys/fs/cgroup${cgroupsPath}/memory.events` : `/sys/fs/cgroup/memory${cgroupsPath}/memory.oom_control`;
  return readStat(file, 'oom_kill');
}
