/*
 * berth-agent: PID 1 of every Berth environment, and the server that runs commands in it.
 *
 * Why: `crun exec` costs about 7 ms on a cgroup v1 host, most of it moving the new
 * process into each of ten cgroup hierarchies, plus setns into every namespace. A
 * process forked by the environment's own PID 1 is already in every namespace and
 * cgroup, under the seccomp filter, the capabilities and no_new_privs the runtime gave
 * PID 1, so a command costs a fork and an exec.
 *
 * As init it reaps every child and orphan (SIGCHLD through a signalfd), and on SIGTERM
 * or SIGINT it kills everything and exits.
 *
 * It listens on a unix stream socket (`--listen PATH`, default below) in a directory
 * the runner bind-mounts from the host; the runner connects to the host-side path,
 * and once the socket exists takes the directory back, so nothing inside can remove
 * or replace it. Processes inside the environment that run as its root can connect
 * too (the socket is theirs, mode 0600): that grants nothing new, since running a
 * command as root in the environment is exactly what they can already do. The runner
 * still treats whatever answers on the socket as untrusted input.
 *
 * Build: cc -O2 -static -Wall -Wextra -o berth-agent agent.c
 *
 * Protocol, version 2 (the version is in the socket's name, agent-v2.sock, so a runner
 * never speaks a protocol an older agent does not know; src/runner/agent/protocol.ts
 * is the other side). One connection carries one command. Every message is a frame:
 *
 *   u32 length (big-endian; counts the type byte and the payload) | u8 type | payload
 *
 * Integers are big-endian; a string is a u32 byte length and that many bytes (no NUL).
 *
 * client -> agent
 *   0x01 START      u8 flags (bit 0: tty; bit 1: a user follows) | u16 rows | u16 cols |
 *                   string cwd | u32 argc | argc strings | u32 envc | envc strings ("K=V") |
 *                   with bit 1: u32 uid | u32 gid | u32 ngroups | ngroups u32 gids, the
 *                   user the command runs as (setgroups, setgid, setuid before the cwd is
 *                   entered); without it, as the agent's own root.
 *                   First frame, exactly once, payload at most 4 MiB.
 *   0x02 STDIN      bytes for the command's standard input (at most 64 KiB a frame)
 *   0x03 STDIN_EOF  no more input (a terminal gets its EOF character instead)
 *   0x04 RESIZE     u16 rows | u16 cols (terminal only; the kernel sends SIGWINCH)
 *   0x05 SIGNAL     u32 signal number, sent to the command's process group (and to a
 *                   terminal's foreground group)
 * agent -> client
 *   0x81 STARTED    u32 pid (inside the environment)
 *   0x82 STDOUT     bytes (a terminal's only output stream)
 *   0x83 STDERR     bytes
 *   0x84 EXIT       i32 code (128 + signal when killed by one) | i32 signal (0 if none)
 *   0x85 ERROR      UTF-8 message. Before an EXIT: the command could not be run (exec
 *                   or chdir failed: exit 127 for a command not found, 126 otherwise,
 *                   as a shell does). Without an EXIT: the request was refused or
 *                   malformed, and the agent closes the connection.
 *
 * EXIT is the last frame: the agent then shuts down its side of the connection and
 * discards whatever still arrives until the client closes. It is sent once the command
 * has exited and its output pipes have reached end of file (a terminal: once the
 * command has exited and what it wrote has been read). If the client hangs up first,
 * the command's process group is killed with SIGKILL. A malformed frame gets an ERROR
 * and closes that connection only.
 *
 * Output is flow-controlled: the agent reads a command's pipe only while the client's
 * socket has taken what was read before, so a slow client stops a fast writer rather
 * than growing a buffer. Input likewise: while the command's stdin is full, the agent
 * stops reading that socket.
 *
 * Relay mode: `berth-agent --relay ADDR:PORT SOCKET` (ADDR an IPv4 address, in practice
 * 127.0.0.1) is not init. The runner starts it as an ordinary command in an environment
 * (`/.berth/init --relay 127.0.0.1:7411 /.berth/agent/llm.sock`) so that programs in
 * there, which have no network, can reach a server the runner listens on at SOCKET in
 * the agent directory: Berth's LLM gateway (src/runner/gateway). Programs speak TCP to
 * ADDR:PORT; the relay forwards each connection byte for byte to a new connection to
 * SOCKET, and passes a half-close on (end of file one way shuts down writing that way
 * only). It prints one line, "listening on ADDR:PORT", to standard output once clients
 * can connect, and exits with status 0 on SIGTERM or SIGINT, 1 when it cannot listen,
 * 2 on bad arguments. One process, one poll loop, a 64 KiB buffer each way per
 * connection: a slow reader stops its writer instead of growing a buffer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

extern char **environ;

enum {
  F_START = 0x01,
  F_STDIN = 0x02,
  F_STDIN_EOF = 0x03,
  F_RESIZE = 0x04,
  F_SIGNAL = 0x05,
  F_STARTED = 0x81,
  F_STDOUT = 0x82,
  F_STDERR = 0x83,
  F_EXIT = 0x84,
  F_ERROR = 0x85,
};

#define DEFAULT_SOCKET "/.berth/agent/agent-v2.sock"
#define MAX_GROUPS 64u
#define HDR 5u
#define MAX_START (4u << 20)
#define MAX_DATA (64u << 10)
#define CHUNK (64u << 10)
/* Room always left in the output buffer for STARTED, ERROR and EXIT. */
#define RESERVE 1024u
#define MAX_MESSAGE 512u
/* One output frame being sent while the next is read, no more. */
#define OUT_CAP (2u * (HDR + CHUNK) + RESERVE)
#define IN_CAP (HDR + MAX_DATA)

/* Where a child failed before exec, reported to the agent through a close-on-exec pipe. */
enum { STAGE_SETUP = 1, STAGE_CHDIR = 2, STAGE_EXEC = 3, STAGE_USER = 4 };

struct conn {
  struct conn *next;
  int sock;
  unsigned char *in;
  size_t in_off, in_len, in_cap; /* unconsumed input is in[in_off, in_len) */
  size_t stdin_done;             /* bytes of the current STDIN frame already written */
  int stdin_blocked;             /* the command's stdin is full: the socket waits */
  unsigned char *out;
  size_t out_off, out_len; /* unsent output is out[out_off, out_len) */
  int started;
  pid_t pid; /* the command; also its process group (and session, with a tty) */
  int tty;
  int in_fd;     /* command's stdin: pipe, or a dup of the terminal's master */
  int out_fd;    /* command's stdout: pipe, or the terminal's master; -1 at EOF */
  int err_fd;    /* command's stderr pipe; -1 at EOF or with a terminal */
  int status_fd; /* reads why the child failed before exec; EOF if exec succeeded */
  char *argv0, *cwd; /* for error messages */
  int reaped, wstatus;
  int finished; /* EXIT or a final ERROR is queued: close once it is sent */
  int refused;  /* ... and it was an ERROR: close at once, whatever the client still sends */
  int draining; /* EXIT sent and our side shut: discard input until the client closes */
  int dead;     /* free at the end of this pass */
};

static struct conn *conns;
static int listen_fd = -1, signal_fd = -1;
static int accept_paused;
static const char *socket_path = DEFAULT_SOCKET;

/* Who speaks in messages: the agent, or the relay (the same binary in relay mode). */
static const char *me = "berth-agent";

static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", me);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static int set_nonblock(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* ---- output to the client ---- */

static size_t out_room(struct conn *c) {
  if (c->out_off == c->out_len) {
    c->out_off = c->out_len = 0;
  } else if (c->out_off > 0 && OUT_CAP - c->out_len < HDR + CHUNK + RESERVE) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
  }
  return OUT_CAP - c->out_len;
}

/* Queues a small control frame; RESERVE guarantees it fits. */
static void queue(struct conn *c, int type, const void *payload, size_t n) {
  if (out_room(c) < HDR + n) return; /* cannot happen: data reads leave RESERVE free */
  put32(c->out + c->out_len, (uint32_t)n + 1);
  c->out[c->out_len + 4] = (unsigned char)type;
  if (n) memcpy(c->out + c->out_len + HDR, payload, n);
  c->out_len += HDR + n;
}

static void queue_error(struct conn *c, const char *fmt, ...) {
  char msg[MAX_MESSAGE];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  queue(c, F_ERROR, msg, (size_t)n);
}

static void kill_group(struct conn *c, int sig) {
  if (c->pid <= 0) return;
  if (c->tty) {
    /* A shell with job control runs its foreground job in a group of its own. */
    int fd = c->out_fd >= 0 ? c->out_fd : c->in_fd;
    pid_t fg;
    if (fd >= 0 && ioctl(fd, TIOCGPGRP, &fg) == 0 && fg > 0 && fg != c->pid) kill(-fg, sig);
  }
  /* Before the child has made its group (or session) there is none to signal. */
  if (kill(-c->pid, sig) < 0 && errno == ESRCH && !c->reaped) kill(c->pid, sig);
}

static void hang_up(struct conn *c) {
  if (c->dead) return;
  if (!c->finished) kill_group(c, SIGKILL);
  c->dead = 1;
}

static void flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->sock, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out_off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      hang_up(c);
      return;
    }
  }
  c->out_off = c->out_len = 0;
}

/* Stops the command's side of the connection and queues a final ERROR. */
static void refuse(struct conn *c, const char *message) {
  if (c->finished) return;
  queue_error(c, "%s", message);
  kill_group(c, SIGKILL);
  c->finished = 1;
  c->refused = 1;
  c->stdin_blocked = 0;
  close_fd(&c->in_fd);
  close_fd(&c->out_fd);
  close_fd(&c->err_fd);
  close_fd(&c->status_fd);
}

/* Reads one chunk of a command's output into a frame. Returns 0 at end of file. */
static int read_output(struct conn *c, int *fd, int type) {
  if (*fd < 0) return 0;
  if (out_room(c) < HDR + CHUNK + RESERVE) return 1;
  ssize_t n = read(*fd, c->out + c->out_len + HDR, CHUNK);
  if (n > 0) {
    put32(c->out + c->out_len, (uint32_t)n + 1);
    c->out[c->out_len + 4] = (unsigned char)type;
    c->out_len += HDR + (size_t)n;
    flush(c);
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return -1;
  /* 0: end of file; EIO: every holder of the terminal has closed it. */
  close_fd(fd);
  return 0;
}

static void maybe_finish(struct conn *c) {
  if (c->finished || !c->reaped || c->out_fd >= 0 || c->err_fd >= 0) return;
  unsigned char p[8];
  int code = 0, sig = 0;
  if (WIFEXITED(c->wstatus)) {
    code = WEXITSTATUS(c->wstatus);
  } else if (WIFSIGNALED(c->wstatus)) {
    sig = WTERMSIG(c->wstatus);
    code = 128 + sig;
  }
  put32(p, (uint32_t)code);
  put32(p + 4, (uint32_t)sig);
  queue(c, F_EXIT, p, sizeof p);
  c->finished = 1;
  c->stdin_blocked = 0;
  close_fd(&c->in_fd);
  close_fd(&c->status_fd);
}

/* ---- starting a command ---- */

struct reader {
  const unsigned char *p;
  size_t n;
  int bad;
};

static uint32_t rd32(struct reader *r) {
  if (r->n < 4) {
    r->bad = 1;
    return 0;
  }
  uint32_t v = get32(r->p);
  r->p += 4;
  r->n -= 4;
  return v;
}

static uint16_t rd16(struct reader *r) {
  if (r->n < 2) {
    r->bad = 1;
    return 0;
  }
  uint16_t v = (uint16_t)(r->p[0] << 8 | r->p[1]);
  r->p += 2;
  r->n -= 2;
  return v;
}

/* Copies a string into *heap (which has room for it and its NUL) and advances both. */
static char *rdstr(struct reader *r, char **heap) {
  uint32_t len = rd32(r);
  if (r->bad || len > r->n || memchr(r->p, 0, len)) {
    r->bad = 1;
    return NULL;
  }
  char *s = *heap;
  memcpy(s, r->p, len);
  s[len] = 0;
  *heap += len + 1;
  r->p += len;
  r->n -= len;
  return s;
}

static int child_status_fd = -1;

static void child_fail(int stage, int err) {
  int msg[2] = {stage, err};
  if (write(child_status_fd, msg, sizeof msg) < 0) {
    /* the agent will report the exit code alone */
  }
  _exit(stage == STAGE_EXEC && err == ENOENT ? 127 : 126);
}

static void close_from(int first) {
  if (syscall(SYS_close_range, first, ~0U, 0) == 0) return;
  struct rlimit rl;
  int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (int)rl.rlim_cur : 65536;
  for (int fd = first; fd < max; fd++) close(fd);
}

/* Who a command runs as: set = 0 keeps the agent's own root. */
struct run_as {
  int set;
  uint32_t uid, gid, ngroups;
  gid_t groups[MAX_GROUPS];
};

/* In the child, between fork and exec. `fds` are its stdin, stdout and stderr. */
static void run_child(int tty, const int fds[3], int status_w, const char *cwd, char **argv, char **envp, const struct run_as *user) {
  child_status_fd = status_w;
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (tty) {
    if (setsid() < 0 || ioctl(fds[0], TIOCSCTTY, 0) < 0) child_fail(STAGE_SETUP, errno);
  } else {
    setpgid(0, 0);
  }
  for (int i = 0; i < 3; i++)
    if (dup2(fds[i], i) < 0) child_fail(STAGE_SETUP, errno);
  /* Keep only stdio and the status pipe (moved to 3, still close-on-exec). */
  if (status_w != 3) {
    if (dup3(status_w, 3, O_CLOEXEC) < 0) child_fail(STAGE_SETUP, errno);
    child_status_fd = 3;
  }
  close_from(4);
  /* Groups first, then the gid, then the uid: once the uid is dropped the others cannot change. */
  if (user->set && (setgroups(user->ngroups, user->groups) < 0 || setgid(user->gid) < 0 || setuid(user->uid) < 0)) child_fail(STAGE_USER, errno);
  if (chdir(cwd) < 0) child_fail(STAGE_CHDIR, errno);
  environ = envp;
  execvp(argv[0], argv);
  child_fail(STAGE_EXEC, errno);
}

static int open_pty(unsigned short rows, unsigned short cols, int *master, int *slave) {
  *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (*master < 0) return -1;
  char name[128];
  if (grantpt(*master) < 0 || unlockpt(*master) < 0 || ptsname_r(*master, name, sizeof name) != 0) goto fail;
  *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (*slave < 0) goto fail;
  struct winsize ws = {.ws_row = rows, .ws_col = cols};
  ioctl(*master, TIOCSWINSZ, &ws);
  return 0;
fail:
  close_fd(master);
  return -1;
}

static void start_command(struct conn *c, const unsigned char *payload, size_t n) {
  struct reader r = {payload, n, 0};
  /* Every string has a 4-byte length, so n / 4 bounds how many there can be. */
  char *heap = malloc(n + n / 4 + 1);
  char **ptrs = malloc((n / 4 + 2) * sizeof *ptrs);
  char *block = heap;
  char **argv = NULL, **envp = NULL;
  int pipes[4][2] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
  int master = -1, slave = -1;
  if (!heap || !ptrs) {
    refuse(c, "out of memory");
    goto done;
  }

  int flags = r.n >= 1 ? r.p[0] : (r.bad = 1, 0);
  if (!r.bad) r.p++, r.n--;
  unsigned short rows = rd16(&r), cols = rd16(&r);
  char *cwd = rdstr(&r, &heap);
  uint32_t argc = rd32(&r);
  if (r.bad || argc < 1 || argc > n / 4) {
    refuse(c, "malformed START frame");
    goto done;
  }
  argv = ptrs;
  for (uint32_t i = 0; i < argc && !r.bad; i++) argv[i] = rdstr(&r, &heap);
  argv[argc] = NULL;
  uint32_t envc = rd32(&r);
  if (r.bad || argc + envc > n / 4) {
    refuse(c, "malformed START frame");
    goto done;
  }
  envp = argv + argc + 1;
  for (uint32_t i = 0; i < envc && !r.bad; i++) envp[i] = rdstr(&r, &heap);
  envp[envc] = NULL;
  struct run_as user = {0};
  if (!r.bad && (flags & 2)) {
    user.set = 1;
    user.uid = rd32(&r);
    user.gid = rd32(&r);
    user.ngroups = rd32(&r);
    if (user.ngroups > MAX_GROUPS) r.bad = 1;
    for (uint32_t i = 0; i < user.ngroups && !r.bad; i++) user.groups[i] = rd32(&r);
  }
  if (r.bad || r.n != 0) {
    refuse(c, "malformed START frame (a string may not contain a NUL byte)");
    goto done;
  }
  c->tty = flags & 1;
  c->argv0 = strndup(argv[0], 256);
  c->cwd = strndup(cwd, 256);

  int fds[3];
  if (c->tty) {
    if (open_pty(rows ? rows : 24, cols ? cols : 80, &master, &slave) < 0) {
      refuse(c, "could not open a terminal");
      goto done;
    }
    fds[0] = fds[1] = fds[2] = slave;
  } else {
    for (int i = 0; i < 3; i++) {
      if (pipe2(pipes[i], O_CLOEXEC) < 0) {
        refuse(c, "could not make pipes for the command");
        goto done;
      }
    }
    fds[0] = pipes[0][0];
    fds[1] = pipes[1][1];
    fds[2] = pipes[2][1];
  }
  if (pipe2(pipes[3], O_CLOEXEC) < 0) {
    refuse(c, "could not make pipes for the command");
    goto done;
  }

  pid_t pid = fork();
  if (pid < 0) {
    char msg[MAX_MESSAGE];
    snprintf(msg, sizeof msg, "could not start the command: fork: %s", strerror(errno));
    refuse(c, msg);
    goto done;
  }
  if (pid == 0) run_child(c->tty, fds, pipes[3][1], cwd, argv, envp, &user);

  c->pid = pid;
  /* Also here, so a signal sent before the child runs finds the group (a shell's trick). */
  if (!c->tty) setpgid(pid, pid);
  if (c->tty) {
    c->out_fd = master;
    c->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
    master = -1;
    set_nonblock(c->out_fd);
  } else {
    c->in_fd = pipes[0][1];
    c->out_fd = pipes[1][0];
    c->err_fd = pipes[2][0];
    pipes[0][1] = pipes[1][0] = pipes[2][0] = -1;
    set_nonblock(c->in_fd);
    set_nonblock(c->out_fd);
    set_nonblock(c->err_fd);
  }
  c->status_fd = pipes[3][0];
  pipes[3][0] = -1;
  set_nonblock(c->status_fd);
  unsigned char p[4];
  put32(p, (uint32_t)pid);
  queue(c, F_STARTED, p, sizeof p);

done:
  for (int i = 0; i < 4; i++) {
    close_fd(&pipes[i][0]);
    close_fd(&pipes[i][1]);
  }
  close_fd(&master);
  close_fd(&slave);
  free(block);
  free(ptrs);
}

/* After the child is reaped: did it fail before exec? */
static void read_status(struct conn *c) {
  if (c->status_fd < 0) return;
  int msg[2];
  ssize_t n = read(c->status_fd, msg, sizeof msg);
  close_fd(&c->status_fd);
  if (n != (ssize_t)sizeof msg) return;
  const char *a = c->argv0 ? c->argv0 : "";
  switch (msg[0]) {
    case STAGE_CHDIR:
      queue_error(c, "cd %s: %s", c->cwd ? c->cwd : "", strerror(msg[1]));
      break;
    case STAGE_USER:
      queue_error(c, "could not switch to the command's user: %s", strerror(msg[1]));
      break;
    case STAGE_EXEC:
      if (msg[1] == ENOENT && !strchr(a, '/')) queue_error(c, "%s: command not found", a);
      else queue_error(c, "%s: %s", a, strerror(msg[1]));
      break;
    default:
      queue_error(c, "could not set up the command: %s", strerror(msg[1]));
  }
}

/* ---- input from the client ---- */

/* Writes (more of) a STDIN payload. Returns 0 while the command's stdin is full. */
static int write_stdin(struct conn *c, const unsigned char *p, size_t n) {
  while (c->in_fd >= 0 && c->stdin_done < n) {
    ssize_t w = write(c->in_fd, p + c->stdin_done, n - c->stdin_done);
    if (w > 0) {
      c->stdin_done += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      c->stdin_blocked = 1;
      return 0;
    } else {
      close_fd(&c->in_fd); /* EPIPE: the command stopped reading; drop the rest */
    }
  }
  c->stdin_blocked = 0;
  return 1;
}

static void process_input(struct conn *c) {
  while (!c->dead && !c->finished) {
    size_t avail = c->in_len - c->in_off;
    if (avail < HDR) break;
    const unsigned char *f = c->in + c->in_off;
    uint32_t len = get32(f);
    int type = f[4];
    if (len < 1) {
      refuse(c, "malformed frame");
      return;
    }
    size_t plen = len - 1;
    if (plen > (type == F_START ? MAX_START : MAX_DATA)) {
      refuse(c, "frame too large");
      return;
    }
    if (avail < HDR + plen) {
      if (HDR + plen > c->in_cap) {
        /* Only a START frame can be larger than the usual buffer. */
        memmove(c->in, f, avail);
        c->in_len = avail;
        c->in_off = 0;
        unsigned char *bigger = realloc(c->in, HDR + plen);
        if (!bigger) {
          refuse(c, "out of memory");
          return;
        }
        c->in = bigger;
        c->in_cap = HDR + plen;
      }
      break;
    }
    const unsigned char *p = f + HDR;
    if (!c->started && type != F_START) {
      refuse(c, "the first frame must be START");
      return;
    }
    switch (type) {
      case F_START:
        if (c->started) {
          refuse(c, "START sent twice");
          return;
        }
        c->started = 1;
        start_command(c, p, plen);
        break;
      case F_STDIN:
        if (!write_stdin(c, p, plen)) return;
        break;
      case F_STDIN_EOF:
        if (c->tty && c->in_fd >= 0) {
          /* A terminal has no end of file of its own: type its EOF character, as
             script(1) does, when the line discipline would treat it as one. */
          struct termios t;
          unsigned char eof = 4;
          int canonical = 1;
          if (tcgetattr(c->in_fd, &t) == 0) {
            canonical = (t.c_lflag & ICANON) != 0;
            if (t.c_cc[VEOF]) eof = t.c_cc[VEOF];
          }
          if (canonical && !write_stdin(c, &eof, 1)) return;
        }
        close_fd(&c->in_fd);
        break;
      case F_RESIZE:
        if (plen != 4) {
          refuse(c, "malformed RESIZE frame");
          return;
        }
        if (c->tty) {
          struct winsize ws = {.ws_row = (unsigned short)(p[0] << 8 | p[1]), .ws_col = (unsigned short)(p[2] << 8 | p[3])};
          int fd = c->out_fd >= 0 ? c->out_fd : c->in_fd;
          if (fd >= 0) ioctl(fd, TIOCSWINSZ, &ws);
        }
        break;
      case F_SIGNAL: {
        if (plen != 4) {
          refuse(c, "malformed SIGNAL frame");
          return;
        }
        uint32_t sig = get32(p);
        if (sig < 1 || sig >= NSIG) {
          refuse(c, "no such signal");
          return;
        }
        kill_group(c, (int)sig);
        break;
      }
      default:
        refuse(c, "unknown frame type");
        return;
    }
    c->in_off += HDR + plen;
    c->stdin_done = 0;
  }
  /* Keep the unconsumed part at the front, so the buffer never looks full of nothing. */
  if (c->in_off > 0) {
    memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
    c->in_len -= c->in_off;
    c->in_off = 0;
  }
  /* A START frame's big buffer is not needed afterwards. */
  if (c->started && c->in_cap > IN_CAP && c->in_len <= IN_CAP) {
    unsigned char *smaller = realloc(c->in, IN_CAP);
    if (smaller) {
      c->in = smaller;
      c->in_cap = IN_CAP;
    }
  }
}

static void read_input(struct conn *c) {
  if (c->finished) c->in_off = c->in_len = 0; /* nothing more is acted on: discard */
  if (c->in_off > 0) {
    memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
    c->in_len -= c->in_off;
    c->in_off = 0;
  }
  ssize_t n = read(c->sock, c->in + c->in_len, c->in_cap - c->in_len);
  if (n > 0) {
    c->in_len += (size_t)n;
    process_input(c);
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    hang_up(c);
  }
}

/* ---- connections ---- */

static void accept_all(void) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      /* Out of descriptors: stop accepting until a connection closes. */
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) accept_paused = 1;
      return;
    }
    struct conn *c = calloc(1, sizeof *c);
    unsigned char *in = malloc(IN_CAP), *out = malloc(OUT_CAP);
    if (!c || !in || !out) {
      free(c);
      free(in);
      free(out);
      close(fd);
      continue;
    }
    c->sock = fd;
    c->in = in;
    c->in_cap = IN_CAP;
    c->out = out;
    c->in_fd = c->out_fd = c->err_fd = c->status_fd = -1;
    c->next = conns;
    conns = c;
  }
}

static void free_dead(void) {
  struct conn **pp = &conns;
  while (*pp) {
    struct conn *c = *pp;
    if (!c->dead) {
      pp = &c->next;
      continue;
    }
    *pp = c->next;
    close_fd(&c->sock);
    close_fd(&c->in_fd);
    close_fd(&c->out_fd);
    close_fd(&c->err_fd);
    close_fd(&c->status_fd);
    free(c->in);
    free(c->out);
    free(c->argv0);
    free(c->cwd);
    free(c);
    accept_paused = 0;
  }
}

static void reap(void) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (struct conn *c = conns; c; c = c->next) {
      if (c->pid == pid && !c->reaped) {
        c->reaped = 1;
        c->wstatus = st;
        read_status(c);
        break;
      }
    }
    /* Anything else was an orphan: reaping it was the whole job. */
  }
}

static void shut_down(void) {
  if (getpid() == 1) {
    kill(-1, SIGKILL);
  } else {
    for (struct conn *c = conns; c; c = c->next) kill_group(c, SIGKILL);
  }
  unlink(socket_path);
  exit(0);
}

static void handle_signals(void) {
  struct signalfd_siginfo si;
  while (read(signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGCHLD) reap();
    else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) shut_down();
  }
}

static int listen_on(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  char tmp[sizeof addr.sun_path];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
    note("socket path too long: %s", path);
    return -1;
  }
  memcpy(addr.sun_path, tmp, strlen(tmp) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  unlink(tmp);
  mode_t old = umask(0177);
  int r = bind(fd, (struct sockaddr *)&addr, sizeof addr);
  umask(old);
  /* Listen under a temporary name and rename: whoever sees the socket can connect. */
  if (r < 0 || chmod(tmp, 0600) < 0 || listen(fd, SOMAXCONN) < 0 || rename(tmp, path) < 0) {
    note("cannot listen on %s: %s", path, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  return fd;
}

/* ---- relay mode: TCP in the environment to a unix socket from the runner ---- */

#define RELAY_BUF (64u << 10)

/* Bytes read from one side and not yet written to the other. */
struct half {
  unsigned char *buf;
  size_t off, len; /* unsent bytes are buf[off, len) */
  int eof;         /* the source has ended; once drained, the other side's writing is shut */
};

struct link {
  struct link *next;
  int fd[2];       /* 0: the client's TCP connection, 1: the connection to the unix socket */
  struct half h[2]; /* h[i] carries fd[i] to fd[1 - i] */
  int hup[2];      /* fd[i] hung up while nothing was asked of it: leave it out of poll */
  int dead;
};

static struct link *links;
static const char *relay_target;

static int relay_wants_read(struct link *l, int i) {
  return !l->h[i].eof && l->h[i].len == 0;
}

static void relay_write(struct link *l, int i) {
  struct half *h = &l->h[i];
  int to = l->fd[1 - i];
  while (h->off < h->len) {
    ssize_t n = send(to, h->buf + h->off, h->len - h->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      h->off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      l->dead = 1; /* the other side is gone: nothing more can be delivered */
      return;
    }
  }
  h->off = h->len = 0;
  if (h->eof) shutdown(to, SHUT_WR);
}

static void relay_read(struct link *l, int i) {
  struct half *h = &l->h[i];
  ssize_t n = read(l->fd[i], h->buf, RELAY_BUF);
  if (n > 0) {
    h->len = (size_t)n;
    relay_write(l, i);
  } else if (n == 0) {
    h->eof = 1;
    relay_write(l, i); /* nothing buffered: passes the end of file on */
  } else if (errno != EAGAIN && errno != EINTR) {
    l->dead = 1;
  }
}

/* A new connection to the unix socket, or -1 (and the client is turned away). */
static int relay_connect(void) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  memcpy(addr.sun_path, relay_target, strlen(relay_target) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  /* A unix socket connects at once or fails (EAGAIN: its backlog is full); never blocks. */
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    note("cannot reach %s: %s", relay_target, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

static void relay_accept(void) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) accept_paused = 1;
      return;
    }
    int up = relay_connect();
    struct link *l = calloc(1, sizeof *l);
    unsigned char *a = malloc(RELAY_BUF), *b = malloc(RELAY_BUF);
    if (up < 0 || !l || !a || !b) {
      if (up >= 0) close(up);
      free(l);
      free(a);
      free(b);
      close(fd);
      continue;
    }
    l->fd[0] = fd;
    l->fd[1] = up;
    l->h[0].buf = a;
    l->h[1].buf = b;
    l->next = links;
    links = l;
  }
}

static void relay_free_dead(void) {
  struct link **pp = &links;
  while (*pp) {
    struct link *l = *pp;
    /* Done both ways: each side has ended and what it sent has been delivered. */
    int done = 1;
    for (int i = 0; i < 2; i++) done &= l->h[i].eof && l->h[i].len == 0;
    if (!l->dead && !done) {
      pp = &l->next;
      continue;
    }
    *pp = l->next;
    for (int i = 0; i < 2; i++) {
      close(l->fd[i]);
      free(l->h[i].buf);
    }
    free(l);
    accept_paused = 0;
  }
}

static int relay_listen(const char *spec) {
  const char *colon = strrchr(spec, ':');
  char host[INET_ADDRSTRLEN];
  struct sockaddr_in addr = {.sin_family = AF_INET};
  char *end;
  long port = colon ? strtol(colon + 1, &end, 10) : 0;
  if (!colon || (size_t)(colon - spec) >= sizeof host || !colon[1] || *end || port < 1 || port > 65535) return -2;
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = 0;
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return -2;
  addr.sin_port = htons((uint16_t)port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  /* A relay restarted for the next task must not wait out the last one's TIME_WAIT. */
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, SOMAXCONN) < 0) {
    note("cannot listen on %s: %s", spec, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

static int relay_main(const char *spec, const char *target) {
  me = "berth-relay";
  /* A message nobody reads is lost rather than allowed to stop every connection. */
  set_nonblock(2);
  struct sockaddr_un probe;
  if (strlen(target) >= sizeof probe.sun_path) {
    note("socket path too long: %s", target);
    return 2;
  }
  relay_target = target;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    note("signalfd: %s", strerror(errno));
    return 1;
  }
  listen_fd = relay_listen(spec);
  if (listen_fd == -2) {
    note("--relay wants ADDR:PORT (an IPv4 address and a port), not %s", spec);
    return 2;
  }
  if (listen_fd < 0) return 1;
  printf("listening on %s\n", spec);
  fflush(stdout);

  size_t cap = 0;
  struct pollfd *pfds = NULL;
  struct link **owners = NULL;
  int *sides = NULL;
  for (;;) {
    size_t count = 0;
    for (struct link *l = links; l; l = l->next) count++;
    if (2 + 2 * count > cap) {
      cap = 2 * (2 + 2 * count);
      pfds = realloc(pfds, cap * sizeof *pfds);
      owners = realloc(owners, cap * sizeof *owners);
      sides = realloc(sides, cap * sizeof *sides);
      if (!pfds || !owners || !sides) {
        note("out of memory");
        return 1;
      }
    }
    size_t n = 0;
    pfds[n] = (struct pollfd){.fd = listen_fd, .events = accept_paused ? 0 : POLLIN};
    owners[n++] = NULL;
    pfds[n] = (struct pollfd){.fd = signal_fd, .events = POLLIN};
    owners[n++] = NULL;
    for (struct link *l = links; l; l = l->next) {
      for (int i = 0; i < 2; i++) {
        short ev = 0;
        if (relay_wants_read(l, i)) ev |= POLLIN;
        if (l->h[1 - i].len > l->h[1 - i].off) ev |= POLLOUT;
        /* Polled even when nothing is asked, to hear of a reset; but a side that has
           hung up would then wake poll forever: it waits until it is asked something. */
        if (!ev && l->hup[i]) continue;
        pfds[n] = (struct pollfd){.fd = l->fd[i], .events = ev};
        sides[n] = i;
        owners[n++] = l;
      }
    }
    if (poll(pfds, n, -1) < 0) {
      if (errno != EINTR) note("poll: %s", strerror(errno));
      continue;
    }
    for (size_t k = 0; k < n; k++) {
      short re = pfds[k].revents;
      if (!re) continue;
      struct link *l = owners[k];
      if (!l) {
        if (pfds[k].fd == signal_fd) {
          struct signalfd_siginfo si;
          /* Only SIGTERM and SIGINT are in the mask: either one means stop. */
          if (read(signal_fd, &si, sizeof si) == (ssize_t)sizeof si) exit(0);
        } else {
          relay_accept();
        }
        continue;
      }
      int i = sides[k];
      if (l->dead) continue;
      if (re & POLLERR) {
        l->dead = 1;
        continue;
      }
      if ((re & POLLOUT) && l->h[1 - i].len > l->h[1 - i].off) relay_write(l, 1 - i);
      if (!l->dead && (re & (POLLIN | POLLHUP)) && (pfds[k].events & POLLIN)) relay_read(l, i);
      if ((re & POLLHUP) && !(pfds[k].events & POLLIN)) l->hup[i] = 1;
    }
    relay_free_dead();
  }
}

enum { ROLE_LISTEN, ROLE_SIGNAL, ROLE_SOCK, ROLE_OUT, ROLE_ERR, ROLE_IN };

struct slot {
  struct conn *c;
  int role;
};

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--relay") == 0) {
    if (argc != 4) {
      note("usage: %s --relay ADDR:PORT SOCKET", argv[0]);
      return 2;
    }
    return relay_main(argv[2], argv[3]);
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      socket_path = argv[++i];
    } else {
      note("usage: %s [--listen PATH] | --relay ADDR:PORT SOCKET", argv[0]);
      return 2;
    }
  }
  /* Children's stdio are dup2'd onto 0-2, so those must never be our own pipes. */
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0) {
      int null = open("/dev/null", O_RDWR);
      if (null >= 0 && null != fd) {
        dup2(null, fd);
        close(null);
      }
    }
  }
  if (getpid() != 1) prctl(PR_SET_CHILD_SUBREAPER, 1); /* run by hand, for testing */
  /* Not dumpable: processes inside run as the same uid (the environment's root) but
     without CAP_SYS_PTRACE, so they can neither ptrace this process (a stopped agent
     would hang every command), nor open /proc/1/fd, /proc/1/mem or take its descriptors
     (pidfd_getfd), nor read its memory. Commands are not affected: exec makes them
     dumpable again. */
  if (prctl(PR_SET_DUMPABLE, 0) != 0) {
    note("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
    return 1;
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    note("signalfd: %s", strerror(errno));
    return 1;
  }
  listen_fd = listen_on(socket_path);
  if (listen_fd < 0) return 1;

  size_t cap = 0;
  struct pollfd *pfds = NULL;
  struct slot *slots = NULL;
  for (;;) {
    size_t count = 0;
    for (struct conn *c = conns; c; c = c->next) count++;
    if (2 + 4 * count > cap) {
      cap = 2 * (2 + 4 * count);
      pfds = realloc(pfds, cap * sizeof *pfds);
      slots = realloc(slots, cap * sizeof *slots);
      if (!pfds || !slots) {
        note("out of memory");
        shut_down();
      }
    }
    size_t n = 0;
#define ADD(fd_, ev_, c_, role_) (pfds[n] = (struct pollfd){.fd = (fd_), .events = (ev_)}, slots[n++] = (struct slot){(c_), (role_)})
    ADD(listen_fd, accept_paused ? 0 : POLLIN, NULL, ROLE_LISTEN);
    ADD(signal_fd, POLLIN, NULL, ROLE_SIGNAL);
    for (struct conn *c = conns; c; c = c->next) {
      short ev = 0;
      if (!c->stdin_blocked && (!c->finished || c->draining) && c->in_len < c->in_cap) ev |= POLLIN;
      if (c->out_len > c->out_off) ev |= POLLOUT;
      /* Always polled: a hang-up is reported even while nothing is asked for. */
      ADD(c->sock, ev, c, ROLE_SOCK);
      if (out_room(c) >= HDR + CHUNK + RESERVE) {
        if (c->out_fd >= 0) ADD(c->out_fd, POLLIN, c, ROLE_OUT);
        if (c->err_fd >= 0) ADD(c->err_fd, POLLIN, c, ROLE_ERR);
      }
      if (c->stdin_blocked && c->in_fd >= 0) ADD(c->in_fd, POLLOUT, c, ROLE_IN);
    }
#undef ADD
    if (poll(pfds, n, -1) < 0) {
      if (errno != EINTR) note("poll: %s", strerror(errno));
      continue;
    }
    for (size_t i = 0; i < n; i++) {
      short re = pfds[i].revents;
      if (!re) continue;
      struct conn *c = slots[i].c;
      if (c && c->dead) continue;
      switch (slots[i].role) {
        case ROLE_LISTEN:
          accept_all();
          break;
        case ROLE_SIGNAL:
          handle_signals();
          break;
        case ROLE_SOCK:
          if (re & POLLOUT) flush(c);
          if (!c->dead && (re & (POLLIN | POLLHUP | POLLERR))) {
            if (pfds[i].events & POLLIN) read_input(c);
            else hang_up(c);
          }
          break;
        case ROLE_OUT:
          read_output(c, &c->out_fd, F_STDOUT);
          break;
        case ROLE_ERR:
          read_output(c, &c->err_fd, F_STDERR);
          break;
        case ROLE_IN:
          c->stdin_blocked = 0;
          process_input(c);
          break;
      }
    }
    for (struct conn *c = conns; c; c = c->next) {
      if (c->dead) continue;
      /* A terminal's output ends when its command does: background processes that
         keep the terminal open do not hold the session. Read what is left, then stop. */
      if (c->reaped && c->tty && c->out_fd >= 0) {
        while (c->out_fd >= 0 && out_room(c) >= HDR + CHUNK + RESERVE) {
          if (read_output(c, &c->out_fd, F_STDOUT) != 1) close_fd(&c->out_fd);
        }
      }
      maybe_finish(c);
      if (c->out_len > c->out_off) flush(c);
      if (!c->dead && c->finished && !c->draining && c->out_len == c->out_off) {
        /* After EXIT only our side closes: the client may still be writing (say, the
           end of input for a command that has already exited), and closing both ways
           would fail its write and could lose EXIT before the client reads it. */
        if (c->refused || shutdown(c->sock, SHUT_WR) < 0) c->dead = 1;
        else c->draining = 1;
      }
    }
    free_dead();
  }
}
