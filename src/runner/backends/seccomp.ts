// The seccomp profile every environment runs under. It allows what a developer's
// tool chain needs and refuses the syscalls that reach past the sandbox: kernel
// modules and kexec, new namespaces (no nested sandboxes that could hide from ours),
// keyrings, BPF, perf, io_uring, clock and swap changes, mount and pivot_root.
// Refused calls fail with EPERM rather than killing the process, so tools degrade
// gracefully; clone3 answers ENOSYS so libc falls back to clone, whose flags we can check.

const EPERM = 1;
const ENOSYS = 38;

const DENIED = [
  'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module',
  'finit_module', 'fsconfig', 'fsmount', 'fsopen', 'fspick', 'get_kernel_syms', 'init_module',
  'io_uring_enter', 'io_uring_register', 'io_uring_setup', 'ioperm', 'iopl', 'kexec_file_load',
  'kexec_load', 'keyctl', 'lookup_dcookie', 'mount', 'mount_setattr', 'move_mount', 'name_to_handle_at',
  'nfsservctl', 'open_by_handle_at', 'open_tree', 'perf_event_open', 'pivot_root', 'query_module',
  'quotactl', 'reboot', 'request_key', 'setns', 'settimeofday', 'stime', 'swapoff', 'swapon',
  'syslog', 'umount', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'ustat', 'vhangup', '_sysctl',
];

// The environment's PID 1 (the Berth agent, or catatonit) cannot be traced, nor its memory
// read or written, from inside: a stopped PID 1 would hang every command. The agent is
// also non-dumpable, which refuses these and /proc/1/fd and pidfd_getfd too; this filter
// covers catatonit as well. The pid is compared in its low 32 bits, as the kernel reads it.
const PID_1_ONLY = [
  { names: ['ptrace'], index: 1 },
  { names: ['process_vm_readv', 'process_vm_writev'], index: 0 },
];

// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
const NAMESPACE_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080];

export interface SeccompProfile {
  defaultAction: string;
  architectures: string[];
  syscalls: { names: string[]; action: string; errnoRet?: number; args?: { index: number; value: number; valueTwo?: number; op: string }[] }[];
}

export function seccompProfile(): SeccompProfile {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64'],
    syscalls: [
      { names: DENIED, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
      ...PID_1_ONLY.map(({ names, index }) => ({
        names,
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index, value: 0xffff_ffff, valueTwo: 1, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
      ...NAMESPACE_FLAGS.map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
    ],
  };
}
