/*
 * paddock-nsutil: the two kernel operations Paddock needs for user namespaces that no tool in
 * Debian 12 performs (util-linux 2.38's mount(8) ignores X-mount.idmap, which arrived in 2.39;
 * unshare(1)'s --map-users needs newuidmap and /etc/subuid entries for root).
 *
 *   paddock-nsutil pin USERNS_FILE NETNS_FILE HOST_ID COUNT [noipv6]
 *       Create a user namespace mapping ids 0..COUNT-1 to HOST_ID..HOST_ID+COUNT-1 (uid and
 *       gid), and a network namespace owned by it; bind-mount both onto the two files (created
 *       here, O_EXCL) so they outlive this process, as `ip netns add` does for a netns. A VM
 *       joins both: its root is HOST_ID on the host, and because the netns belongs to the VM's
 *       own user namespace the VM can mount sysfs and bind low ports without host privileges.
 *       With `noipv6`: also set net.ipv6.conf.default.disable_ipv6=1 inside the new netns
 *       (skipped on a kernel without IPv6), so every link made in it later starts without
 *       IPv6 (ipv6_add_dev copies the netns's `default` conf); loopback, made with the netns,
 *       keeps ::1. On any failure both pins are removed again.
 *
 *   paddock-nsutil idmap SRC DST HOST_ID COUNT [COMMAND [ARG...]]
 *       Bind-mount directory SRC onto DST read-only, nosuid, nodev, with an idmapping that
 *       shows on-disk ids 0..COUNT-1 as HOST_ID..: the base image (owned by 0) appears owned
 *       by the tenant's range, so the VM's root owns it inside its user namespace. With
 *       COMMAND: exec it once the bind is in place (e.g. the `mount --fstab` of the overlay
 *       that uses DST as its lower layer), one process for both steps.
 *
 *   paddock-nsutil listen SOCKET_PATH COMMAND [ARG...]
 *       Bind a Unix stream socket at SOCKET_PATH (mode 0600; the path must not exist), listen
 *       on it, move it to fd 3 and exec COMMAND with it (e.g. `runc run --preserve-fds 1 …`).
 *       The VM's agent accepts on that inherited listener, so the host reaches the agent
 *       through a socket the host made in a directory the guest cannot see or write; nothing
 *       in the guest can move or replace it. On an exec failure the socket file is removed.
 *
 *   paddock-nsutil logcap FILE ROTATE_BYTES KEEP [COMMAND [ARG...]]
 *       Append what arrives on a pipe to FILE (created 0640 if missing), rotating it whenever
 *       it reaches ROTATE_BYTES: FILE.KEEP-1 → FILE.KEEP, …, FILE → FILE.1, so at most
 *       (KEEP + 1) × ROTATE_BYTES bytes are kept. With COMMAND: make a pipe, fork a reader in
 *       its own session (stdio on /dev/null, no other inherited fd, reparented to init so
 *       neither the caller's process group nor its exit touches it) and exec COMMAND with
 *       stdout and stderr on the pipe's write end. Everything that inherits them (a detached
 *       sandbox outliving its daemon) writes through the reader, which exits 0 once the last
 *       writer has closed the pipe. Without COMMAND: read stdin until EOF. The reader never
 *       stops reading before EOF (a write error drops that chunk), so a writer never gets
 *       EPIPE; when FILE disappears (its VM was deleted) it discards instead of recreating it.
 *       FILE's directory is opened once and every rename is relative to it.
 *
 *   paddock-nsutil hidesysctl SCRATCH_DIR COMMAND [ARG...]
 *       Exec COMMAND in a private mount namespace where /proc/sys is a tmpfs holding binds of
 *       every /proc/sys subdirectory except net/. runsc 0.0~20221219 refuses to start its
 *       netstack when /proc/sys/net/core/rmem_default exists, its test for "root network
 *       namespace" that every netns passes since Linux 6.11 (gVisor issue
 *       https://github.com/google/gvisor/issues/10704; docs/gvisor-findings.md §3.3). A fresh
 *       proc instance is mounted at SCRATCH_DIR/proc (an existing host-only directory) so the
 *       namespace keeps a fully visible proc, which the kernel requires before a sandbox may
 *       mount proc itself. Nothing changes outside the new mount namespace.
 *
 * References: user_namespaces(7); unix(7); mount_setattr(2); open_tree(2) and move_mount(2) in
 * https://man7.org/linux/man-pages/man2/open_tree.2.html; idmapped mounts
 * https://docs.kernel.org/filesystems/idmappings.html
 *
 * Exit status: 0 on success; 1 on a failed system call (message on stderr); 2 on bad usage.
 * Nothing is left behind on failure: files created here are unmounted and removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libgen.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#define PDK_MOUNT_ATTR_RDONLY 0x00000001
#define PDK_MOUNT_ATTR_NOSUID 0x00000002
#define PDK_MOUNT_ATTR_NODEV 0x00000004
#define PDK_MOUNT_ATTR_IDMAP 0x00100000

struct pdk_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

static void die(const char *what) {
  fprintf(stderr, "paddock-nsutil: %s: %s\n", what, strerror(errno));
  exit(1);
}

static unsigned long parse_id(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > 4294967294UL) {
    fprintf(stderr, "paddock-nsutil: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

static void write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  ssize_t n = write(fd, text, strlen(text));
  if (n < 0 || (size_t)n != strlen(text)) die(path);
  close(fd);
}

/*
 * Fork a child that unshares `flags` (CLONE_NEWUSER at least) and waits; map its user
 * namespace to host_id..host_id+count-1. Returns the child's pid; the child exits when
 * `release_fd` is closed.
 */
static pid_t spawn_namespaced(int flags, unsigned long host_id, unsigned long count, int *release_fd) {
  int ready[2], release[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(release, O_CLOEXEC) < 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(ready[0]);
    close(release[1]);
    char ok = unshare(flags) == 0 ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    char c;
    while (read(release[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  close(ready[1]);
  close(release[0]);
  char ok = 'n';
  if (read(ready[0], &ok, 1) != 1 || ok != 'y') {
    errno = ok == 'n' ? EPERM : EIO;
    die("unshare");
  }
  close(ready[0]);
  char path[64], map[96];
  snprintf(map, sizeof map, "0 %lu %lu\n", host_id, count);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  write_file(path, map);
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
  write_file(path, map);
  *release_fd = release[1];
  return pid;
}

static void reap(pid_t pid, int release_fd) {
  close(release_fd);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* Create an empty file at `path` (must not exist) and bind-mount `src` onto it. */
static int pin_one(const char *src, const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
  if (fd < 0) return -1;
  close(fd);
  if (mount(src, path, NULL, MS_BIND, NULL) < 0) {
    int saved = errno;
    unlink(path);
    errno = saved;
    return -1;
  }
  return 0;
}

/*
 * Enter the netns pinned at `netns_file` and write 1 to its
 * net.ipv6.conf.default.disable_ipv6 (/proc/sys/net is the caller's netns's, proc_sys(5)).
 * A missing file (no IPv6 in the kernel) is success. Returns -1 with errno on failure.
 * The caller is left in that netns: call last.
 */
static int netns_ipv6_default_off(const char *netns_file) {
  int fd = open(netns_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  if (setns(fd, CLONE_NEWNET) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  close(fd);
  int conf = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY | O_CLOEXEC);
  if (conf < 0) return errno == ENOENT ? 0 : -1;
  ssize_t n = write(conf, "1\n", 2);
  int saved = errno;
  close(conf);
  if (n != 2) {
    errno = n < 0 ? saved : EIO;
    return -1;
  }
  return 0;
}

static int cmd_pin(const char *userns_file, const char *netns_file, unsigned long host_id, unsigned long count, int no_ipv6) {
  int release_fd;
  pid_t pid = spawn_namespaced(CLONE_NEWUSER | CLONE_NEWNET, host_id, count, &release_fd);
  char src[64];
  snprintf(src, sizeof src, "/proc/%d/ns/user", (int)pid);
  if (pin_one(src, userns_file) < 0) {
    int saved = errno;
    reap(pid, release_fd);
    errno = saved;
    die(userns_file);
  }
  snprintf(src, sizeof src, "/proc/%d/ns/net", (int)pid);
  if (pin_one(src, netns_file) < 0) {
    int saved = errno;
    umount2(userns_file, MNT_DETACH);
    unlink(userns_file);
    reap(pid, release_fd);
    errno = saved;
    die(netns_file);
  }
  reap(pid, release_fd);
  if (no_ipv6 && netns_ipv6_default_off(netns_file) < 0) {
    int saved = errno;
    umount2(netns_file, MNT_DETACH);
    unlink(netns_file);
    umount2(userns_file, MNT_DETACH);
    unlink(userns_file);
    errno = saved;
    die("net.ipv6.conf.default.disable_ipv6");
  }
  return 0;
}

static int cmd_idmap(const char *src, const char *dst, unsigned long host_id, unsigned long count, char **command) {
  int release_fd;
  pid_t pid = spawn_namespaced(CLONE_NEWUSER, host_id, count, &release_fd);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
  int userns_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (userns_fd < 0) die(path);
  reap(pid, release_fd);
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | O_CLOEXEC);
  if (tree < 0) die("open_tree");
  struct pdk_mount_attr attr = {
      .attr_set = PDK_MOUNT_ATTR_IDMAP | PDK_MOUNT_ATTR_RDONLY | PDK_MOUNT_ATTR_NOSUID | PDK_MOUNT_ATTR_NODEV,
      .attr_clr = 0,
      .propagation = 0,
      .userns_fd = (uint64_t)userns_fd,
  };
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) die("mount_setattr (idmapped mounts need Linux 5.12+ and a filesystem that supports them)");
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("move_mount");
  if (command == NULL || command[0] == NULL) return 0;
  execvp(command[0], command);
  die(command[0]);
  return 1;
}

static int cmd_listen(const char *socket_path, char **command) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof addr.sun_path) {
    fprintf(stderr, "paddock-nsutil: socket path too long (max %zu bytes): %s\n", sizeof addr.sun_path - 1, socket_path);
    return 2;
  }
  strcpy(addr.sun_path, socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  mode_t old = umask(0177);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die(socket_path);
  umask(old);
  if (listen(fd, 512) < 0) {
    int saved = errno;
    unlink(socket_path);
    errno = saved;
    die("listen");
  }
  if (fd != 3) {
    if (dup2(fd, 3) < 0) {
      int saved = errno;
      unlink(socket_path);
      errno = saved;
      die("dup2");
    }
    close(fd);
  }
  execvp(command[0], command);
  int saved = errno;
  unlink(socket_path);
  errno = saved;
  die(command[0]);
  return 1;
}

/* Shift FILE.KEEP-1 → FILE.KEEP … FILE → FILE.1 (renameat(2) in `dirfd`) and open a new FILE.
 * Returns the new fd, or -1 when FILE is gone (deleted under the reader) or cannot be made. */
static int logcap_rotate(int dirfd, const char *base, unsigned long keep, int out) {
  char from[PATH_MAX], to[PATH_MAX];
  for (unsigned long i = keep; i > 1; i--) {
    snprintf(from, sizeof from, "%s.%lu", base, i - 1);
    snprintf(to, sizeof to, "%s.%lu", base, i);
    renameat(dirfd, from, dirfd, to);
  }
  snprintf(to, sizeof to, "%s.1", base);
  close(out);
  if (renameat(dirfd, base, dirfd, to) < 0) return -1;
  return openat(dirfd, base, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
}

/* Copy `in` to `out` until EOF, rotating at `rotate` bytes (the size is FILE's own, by fstat,
 * so other appenders to FILE are counted too). Never returns early: see the usage above. */
static void logcap_copy(int in, int dirfd, const char *base, unsigned long rotate, unsigned long keep, int out) {
  static char buf[65536];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    char *p = buf;
    while (n > 0 && out >= 0) {
      struct stat st;
      off_t size = fstat(out, &st) == 0 ? st.st_size : 0;
      if ((unsigned long)size >= rotate) {
        out = logcap_rotate(dirfd, base, keep, out);
        continue;
      }
      size_t room = rotate - (unsigned long)size;
      ssize_t w = write(out, p, (size_t)n < room ? (size_t)n : room);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break; /* ENOSPC, EIO: drop this chunk, keep draining */
      p += w;
      n -= w;
    }
  }
}

static int cmd_logcap(const char *file, unsigned long rotate, unsigned long keep, char **command) {
  if (rotate == 0 || keep == 0) {
    fprintf(stderr, "paddock-nsutil: ROTATE_BYTES and KEEP must be at least 1\n");
    return 2;
  }
  char dir_buf[PATH_MAX], base_buf[PATH_MAX];
  if (strlen(file) >= sizeof dir_buf - 16) {
    fprintf(stderr, "paddock-nsutil: log path too long: %s\n", file);
    return 2;
  }
  strcpy(dir_buf, file);
  strcpy(base_buf, file);
  const char *base = basename(base_buf);
  if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
    fprintf(stderr, "paddock-nsutil: bad log file name: %s\n", file);
    return 2;
  }
  int dirfd = open(dirname(dir_buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) die(file);
  int out = openat(dirfd, base, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (out < 0) die(file);
  if (command[0] == NULL) {
    logcap_copy(STDIN_FILENO, dirfd, base, rotate, keep, out);
    return 0;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    /* Double fork: the reader is reparented to init and is nobody's zombie. */
    pid_t reader = fork();
    if (reader != 0) _exit(reader < 0 ? 1 : 0);
    setsid();
    /* stdin = the pipe; fds 3 and 4 = dir and file; stdout, stderr = /dev/null; nothing else. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    int d = fcntl(dirfd, F_DUPFD_CLOEXEC, 10), o = fcntl(out, F_DUPFD_CLOEXEC, 10), r = fcntl(p[0], F_DUPFD_CLOEXEC, 10), z = fcntl(devnull, F_DUPFD_CLOEXEC, 10);
    if (d < 0 || o < 0 || r < 0 || z < 0) _exit(1);
    if (dup2(r, 0) < 0 || dup2(z, 1) < 0 || dup2(z, 2) < 0 || dup2(d, 3) < 0 || dup2(o, 4) < 0) _exit(1);
    if (syscall(SYS_close_range, 5U, ~0U, 0U) < 0) {
      for (int fd = 5; fd < 1024; fd++) close(fd);
    }
    logcap_copy(0, 3, base, rotate, keep, 4);
    _exit(0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    errno = EAGAIN;
    die("fork (log reader)");
  }
  close(p[0]);
  close(out);
  close(dirfd);
  if (dup2(p[1], STDOUT_FILENO) < 0 || dup2(p[1], STDERR_FILENO) < 0) die("dup2");
  close(p[1]);
  execvp(command[0], command);
  die(command[0]);
  return 1;
}

/* See the usage above: hide /proc/sys/net from COMMAND (runsc) in a private mount namespace. */
static int cmd_hidesysctl(const char *scratch, char **command) {
  static const char *const keep[] = {"abi", "debug", "dev", "fs", "kernel", "user", "vm"};
  char proc_dir[PATH_MAX], sys_dir[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];
  if (snprintf(proc_dir, sizeof proc_dir, "%s/proc", scratch) >= (int)sizeof proc_dir ||
      snprintf(sys_dir, sizeof sys_dir, "%s/sys", scratch) >= (int)sizeof sys_dir) {
    fprintf(stderr, "paddock-nsutil: scratch path too long: %s\n", scratch);
    return 2;
  }
  if (unshare(CLONE_NEWNS) < 0) die("unshare(CLONE_NEWNS)");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
  if (mkdir(proc_dir, 0700) < 0 && errno != EEXIST) die(proc_dir);
  if (mkdir(sys_dir, 0700) < 0 && errno != EEXIST) die(sys_dir);
  if (mount("proc", proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("mount proc");
  if (mount("/proc/sys", sys_dir, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind /proc/sys");
  if (mount("paddock-hide", "/proc/sys", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0) die("tmpfs on /proc/sys");
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
    if (snprintf(src, sizeof src, "%s/%s", sys_dir, keep[i]) >= (int)sizeof src) {
      fprintf(stderr, "paddock-nsutil: scratch path too long: %s\n", scratch);
      return 2;
    }
    snprintf(dst, sizeof dst, "/proc/sys/%s", keep[i]);
    struct stat st;
    if (stat(src, &st) < 0) continue;
    if (mkdir(dst, 0555) < 0) die(dst);
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0) die(dst);
  }
  if (umount2(sys_dir, MNT_DETACH) < 0) die("umount scratch sys");
  execvp(command[0], command);
  die(command[0]);
  return 1;
}

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "logcap") == 0) {
    return cmd_logcap(argv[2], parse_id(argv[3], "ROTATE_BYTES"), parse_id(argv[4], "KEEP"), argv + 5);
  }
  if (argc >= 4 && strcmp(argv[1], "listen") == 0) {
    return cmd_listen(argv[2], argv + 3);
  }
  if (argc >= 4 && strcmp(argv[1], "hidesysctl") == 0) {
    return cmd_hidesysctl(argv[2], argv + 3);
  }
  if ((argc == 6 || (argc == 7 && strcmp(argv[6], "noipv6") == 0)) && strcmp(argv[1], "pin") == 0) {
    return cmd_pin(argv[2], argv[3], parse_id(argv[4], "HOST_ID"), parse_id(argv[5], "COUNT"), argc == 7);
  }
  if (argc >= 6 && strcmp(argv[1], "idmap") == 0) {
    return cmd_idmap(argv[2], argv[3], parse_id(argv[4], "HOST_ID"), parse_id(argv[5], "COUNT"), argv + 6);
  }
  fprintf(stderr,
          "usage: paddock-nsutil pin USERNS_FILE NETNS_FILE HOST_ID COUNT [noipv6]\n"
          "       paddock-nsutil idmap SRC DST HOST_ID COUNT [COMMAND [ARG...]]\n"
          "       paddock-nsutil listen SOCKET_PATH COMMAND [ARG...]\n"
          "       paddock-nsutil logcap FILE ROTATE_BYTES KEEP [COMMAND [ARG...]]\n"
          "       paddock-nsutil hidesysctl SCRATCH_DIR COMMAND [ARG...]\n");
  return 2;
}
