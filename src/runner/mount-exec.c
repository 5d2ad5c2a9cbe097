// berth-mount-exec: the mounts of an environment's start, then exec of the OCI runtime,
// all in one process.
//
// Why it exists: every start used to run `sh -c 'mount --move …; exec sh -c "mount -t
// overlay …; exec crun run …"'`: four execs before the runtime's own. On a small VM a
// fork and exec costs 5–10 ms, more than the mounts themselves. The runner builds this
// like the agent (static, cached by source hash) and falls back to the shell without a
// compiler.
//
// Usage (the runner's spawner runs it as root, in its private mount namespace):
//   berth-mount-exec [--move FROM TO] [--dirs DISK UID] [--overlay OPTIONS TARGET] [--null-stdio] -- PROGRAM ARGS...
// Steps run in that order; any failure exits 1 with the reason on stderr. --null-stdio
// then gives PROGRAM /dev/null as its stdin, stdout and stderr: the runtime's container
// init inherits them for its whole life, and what runs inside can write to them.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path) {
  fprintf(stderr, "berth-mount-exec: %s %s: %s\n", what, path, strerror(errno));
  return 1;
}

// DISK/upper (the environment's "/", owned by its root) and DISK/work, unless there.
static int make_dirs(const char *disk, const char *uid_text) {
  char upper[4096], work[4096];
  uid_t uid = (uid_t)strtoul(uid_text, NULL, 10);
  if (snprintf(upper, sizeof upper, "%s/upper", disk) >= (int)sizeof upper) return fail("path too long:", disk);
  if (snprintf(work, sizeof work, "%s/work", disk) >= (int)sizeof work) return fail("path too long:", disk);
  if (mkdir(upper, 0755) == 0) {
    if (chown(upper, uid, uid) != 0) return fail("chown", upper);
  } else if (errno != EEXIST) return fail("mkdir", upper);
  if (mkdir(work, 0700) != 0 && errno != EEXIST) return fail("mkdir", work);
  return 0;
}

int main(int argc, char **argv) {
  int i = 1, null_stdio = 0;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    if (strcmp(argv[i], "--move") == 0 && i + 2 < argc) {
      if (mount(argv[i + 1], argv[i + 2], NULL, MS_MOVE, NULL) != 0) return fail("mount --move", argv[i + 1]);
      i += 2;
    } else if (strcmp(argv[i], "--dirs") == 0 && i + 2 < argc) {
      if (make_dirs(argv[i + 1], argv[i + 2]) != 0) return 1;
      i += 2;
    } else if (strcmp(argv[i], "--overlay") == 0 && i + 2 < argc) {
      if (mount("overlay", argv[i + 2], "overlay", 0, argv[i + 1]) != 0) return fail("mount overlay on", argv[i + 2]);
      i += 2;
    } else if (strcmp(argv[i], "--null-stdio") == 0) {
      null_stdio = 1;
    } else {
      fprintf(stderr, "berth-mount-exec: unexpected argument %s\n", argv[i]);
      return 2;
    }
  }
  if (i + 1 >= argc) {
    fprintf(stderr, "berth-mount-exec: no program after --\n");
    return 2;
  }
  if (null_stdio) {
    int null = open("/dev/null", O_RDWR);
    if (null < 0) return fail("open", "/dev/null");
    // From here on a failure has nowhere to be reported but the exit status.
    for (int fd = 0; fd < 3; fd++) {
      if (dup2(null, fd) < 0) return 1;
    }
    if (null > 2) close(null);
  }
  execvp(argv[i + 1], &argv[i + 1]);
  return fail("exec", argv[i + 1]);
}
