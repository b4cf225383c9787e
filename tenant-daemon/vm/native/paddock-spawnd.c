/*
 * paddock-spawnd: runs short commands (mkfs, mount, ip, runc) for the tenant daemon, so the
 * daemon does not fork itself for each. A fork of the daemon copies the page tables of a
 * ~90 MB process, and node's spawn blocks the daemon's event loop until the child has exec'd
 * (tenant-daemon/vm/spawn-server.ts measures what that costs a create); this process is small
 * and spawns with posix_spawn(3) (glibc: clone(CLONE_VM|CLONE_VFORK), no page-table copy).
 *
 *   paddock-spawnd        (no arguments; started by the daemon with stdin and stdout as pipes)
 *
 * Requests arrive on stdin, answers leave on stdout, as frames of little-endian 32-bit fields (as the daemon writes them):
 *
 *   request:  len id timeout_ms argc envc input_len | cwd\0 argv[0]\0 … env[0]\0 … input
 *   answer:   len id kind code flags out_len err_len | out err
 *
 * `len` counts the bytes after itself. `cwd` "" keeps this process's cwd; `envc` 0 keeps its
 * environment; `input_len` 0 gives the command /dev/null as stdin, else a pipe that gets
 * `input` and is closed. The command's stdout and stderr are pipes read here (at most 16 MiB
 * each is kept; `flags` bit 1 and 2 tell of a cut). `kind`: 0 exited (`code` = exit status),
 * 1 killed by signal `code`, 2 not started (`code` = errno of posix_spawnp). At `timeout_ms`
 * (0: none) the command gets SIGTERM, 2 s later SIGKILL, and `flags` bit 0 is set; a command
 * that exited while something it started still holds its stdout or stderr is answered at its
 * timeout with what was read. Commands run concurrently; answers come in the order they end.
 * When stdin reaches EOF (the daemon closed it or died), no new request is read and the process
 * exits once every command it started has been answered (or could not be: stdout is gone).
 *
 * References: posix_spawn(3), signalfd(2), poll(2), waitpid(2).
 *
 * Exit status: 0 after stdin's EOF; 1 on a failed system call of its own (message on stderr).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_FRAME (64u << 20)
#define MAX_OUT (16u << 20)
#define KILL_GRACE_MS 2000

struct buf {
  char *p;
  size_t len, cap;
  int cut;
};

struct job {
  uint32_t id;
  pid_t pid;
  int in_fd, out_fd, err_fd;
  char *frame; /* the request; input points into it */
  const char *input;
  size_t in_len, in_off;
  struct buf out, err;
  int64_t deadline, kill_at;
  int timed_out, exited, status;
  struct job *next;
};

static struct job *jobs;
static int out_ok = 1;

static void die(const char *what) {
  fprintf(stderr, "paddock-spawnd: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t get32(const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return le32toh(v);
}
static void put32(char *p, uint32_t v) {
  v = htole32(v);
  memcpy(p, &v, 4);
}

static void buf_add(struct buf *b, const char *p, size_t n) {
  if (b->len + n > MAX_OUT) {
    b->cut = 1;
    n = MAX_OUT - b->len;
  }
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) die("realloc");
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void write_all(const char *p, size_t n) {
  while (n > 0 && out_ok) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      out_ok = 0; /* the daemon is gone: keep reaping, answer nobody */
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

static void answer(uint32_t id, int32_t kind, int32_t code, uint32_t flags, const struct buf *o, const struct buf *e) {
  char head[32];
  size_t ol = o ? o->len : 0, el = e ? e->len : 0;
  put32(head, (uint32_t)(24 + ol + el));
  put32(head + 4, id);
  put32(head + 8, (uint32_t)kind);
  put32(head + 12, (uint32_t)code);
  put32(head + 16, flags);
  put32(head + 20, (uint32_t)ol);
  put32(head + 24, (uint32_t)el);
  write_all(head, 28);
  if (ol) write_all(o->p, ol);
  if (el) write_all(e->p, el);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Parse one request frame (owned by the new job, or freed) and start its command. */
static void start(char *frame, uint32_t len) {
  if (len < 20) {
    free(frame);
    return;
  }
  uint32_t id = get32(frame), timeout = get32(frame + 4), argc = get32(frame + 8), envc = get32(frame + 12), in_len = get32(frame + 16);
  char *p = frame + 20, *end = frame + len;
  if (in_len > (uint32_t)(end - p) || argc == 0 || argc > 65536 || envc > 65536) {
    answer(id, 2, EINVAL, 0, NULL, NULL);
    free(frame);
    return;
  }
  char *strings_end = end - in_len;
  char **argv = calloc(argc + 1, sizeof(char *));
  char **envp = envc ? calloc(envc + 1, sizeof(char *)) : NULL;
  if (!argv || (envc && !envp)) die("calloc");
  char *cwd = NULL;
  int bad = 0;
  for (uint32_t i = 0; i < 1 + argc + envc && !bad; i++) {
    char *z = memchr(p, 0, (size_t)(strings_end - p));
    if (!z) {
      bad = 1;
      break;
    }
    if (i == 0) cwd = p;
    else if (i <= argc) argv[i - 1] = p;
    else envp[i - 1 - argc] = p;
    p = z + 1;
  }
  if (bad) {
    answer(id, 2, EINVAL, 0, NULL, NULL);
    free(argv);
    free(envp);
    free(frame);
    return;
  }
  struct job *j = calloc(1, sizeof *j);
  if (!j) die("calloc");
  j->id = id;
  j->frame = frame;
  j->input = strings_end;
  j->in_len = in_len;
  j->in_fd = j->out_fd = j->err_fd = -1;
  int in_pipe[2] = {-1, -1}, out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) die("pipe2");
  if (in_len > 0) {
    if (pipe2(in_pipe, O_CLOEXEC) < 0) die("pipe2");
  } else {
    in_pipe[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_pipe[0] < 0) die("open /dev/null");
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  if (cwd && cwd[0]) posix_spawn_file_actions_addchdir_np(&fa, cwd);
  posix_spawnattr_init(&attr);
  /* This process blocks SIGCHLD for its signalfd and ignores SIGPIPE: the command starts clean. */
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int rc = posix_spawnp(&j->pid, argv[0], &fa, &attr, argv, envp ? envp : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  free(argv);
  free(envp);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    if (in_pipe[1] >= 0) close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    answer(id, 2, rc, 0, NULL, NULL);
    free(frame);
    free(j);
    return;
  }
  j->in_fd = in_pipe[1];
  if (j->in_fd >= 0) fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
  j->out_fd = out_pipe[0];
  j->err_fd = err_pipe[0];
  fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
  j->deadline = timeout ? now_ms() + timeout : 0;
  j->next = jobs;
  jobs = j;
}

static void drain(int *fd, struct buf *b) {
  char chunk[65536];
  for (;;) {
    ssize_t r = read(*fd, chunk, sizeof chunk);
    if (r > 0) {
      buf_add(b, chunk, (size_t)r);
      if ((size_t)r < sizeof chunk) return;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    close_fd(fd); /* EOF or error */
    return;
  }
}

int main(int argc, char **argv) {
  (void)argv;
  if (argc != 1) {
    fprintf(stderr, "usage: paddock-spawnd (requests on stdin, answers on stdout)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  /* An fd this process inherited past stdio (one its parent's parent left open) must not reach
     the commands: mark every fd from 3 up close-on-exec (close_range(2), Linux 5.11). */
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0 && errno != ENOSYS && errno != EINVAL) die("close_range");
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  fcntl(0, F_SETFL, O_NONBLOCK);
  int in_open = 1;
  char *in = NULL;
  size_t in_len = 0, in_cap = 0;
  struct pollfd *pfds = NULL;
  size_t pcap = 0;
  for (;;) {
    size_t njobs = 0;
    for (struct job *j = jobs; j; j = j->next) njobs++;
    if (!in_open && njobs == 0) return 0;
    if (pcap < 2 + 3 * njobs) {
      pcap = 2 + 3 * njobs + 16;
      pfds = realloc(pfds, pcap * sizeof *pfds);
      if (!pfds) die("realloc");
    }
    size_t n = 0;
    pfds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    pfds[n++] = (struct pollfd){.fd = in_open ? 0 : -1, .events = POLLIN};
    int64_t now = now_ms(), wake = -1;
    for (struct job *j = jobs; j; j = j->next) {
      pfds[n++] = (struct pollfd){.fd = j->out_fd, .events = POLLIN};
      pfds[n++] = (struct pollfd){.fd = j->err_fd, .events = POLLIN};
      pfds[n++] = (struct pollfd){.fd = j->in_fd, .events = POLLOUT};
      int64_t t = j->kill_at ? j->kill_at : (j->timed_out ? 0 : j->deadline);
      if (t && (wake < 0 || t < wake)) wake = t;
    }
    /* The jobs pfds[2..] describe, in order. start() below puts new jobs in front of this
       one, so from here on the list is exactly the polled jobs: their events must not be read
       as a new job's (a POLLHUP of an old job's stdin would close a new job's stdin unwritten). */
    struct job *polled = jobs;
    int timeout = wake < 0 ? -1 : (wake <= now ? 0 : (int)(wake - now));
    if (poll(pfds, n, timeout) < 0 && errno != EINTR) die("poll");
    if (pfds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
    }
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
      for (struct job *j = jobs; j; j = j->next) {
        if (j->pid == pid && !j->exited) {
          j->exited = 1;
          j->status = st;
        }
      }
    }
    if (pfds[1].revents) {
      for (;;) {
        if (in_cap - in_len < 65536) {
          in_cap = in_cap ? in_cap * 2 : 131072;
          in = realloc(in, in_cap);
          if (!in) die("realloc");
        }
        ssize_t r = read(0, in + in_len, in_cap - in_len);
        if (r > 0) {
          in_len += (size_t)r;
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 || (r < 0 && errno != EAGAIN)) in_open = 0;
        break;
      }
      size_t off = 0;
      while (in_len - off >= 4) {
        uint32_t len = get32(in + off);
        if (len > MAX_FRAME) {
          fprintf(stderr, "paddock-spawnd: request of %u bytes refused; stopping\n", len);
          in_open = 0;
          off = in_len;
          break;
        }
        if (in_len - off - 4 < len) break;
        char *frame = malloc(len ? len : 1);
        if (!frame) die("malloc");
        memcpy(frame, in + off + 4, len);
        off += 4 + (size_t)len;
        start(frame, len);
      }
      memmove(in, in + off, in_len - off);
      in_len -= off;
    }
    size_t k = 2;
    now = now_ms();
    for (struct job *j = polled; j; j = j->next, k += 3) {
      if (pfds[k].revents && j->out_fd >= 0) drain(&j->out_fd, &j->out);
      if (pfds[k + 1].revents && j->err_fd >= 0) drain(&j->err_fd, &j->err);
      if (pfds[k + 2].revents && j->in_fd >= 0) {
        if (pfds[k + 2].revents & (POLLERR | POLLHUP)) {
          close_fd(&j->in_fd);
        } else {
          ssize_t w = write(j->in_fd, j->input + j->in_off, j->in_len - j->in_off);
          if (w > 0) j->in_off += (size_t)w;
          else if (w < 0 && errno != EAGAIN && errno != EINTR) close_fd(&j->in_fd);
          if (j->in_off == j->in_len) close_fd(&j->in_fd);
        }
      }
      if (j->deadline && now >= j->deadline && !j->timed_out) {
        j->timed_out = 1;
        if (!j->exited) {
          kill(j->pid, SIGTERM);
          j->kill_at = now + KILL_GRACE_MS;
        }
      }
      if (j->kill_at && now >= j->kill_at) {
        if (!j->exited) kill(j->pid, SIGKILL);
        j->kill_at = 0;
      }
      /* Exited, and past its timeout: do not wait for a grandchild holding the pipes. */
      if (j->exited && j->timed_out) {
        close_fd(&j->out_fd);
        close_fd(&j->err_fd);
      }
    }
    for (struct job **pp = &jobs; *pp;) {
      struct job *j = *pp;
      if (!(j->exited && j->out_fd < 0 && j->err_fd < 0)) {
        pp = &j->next;
        continue;
      }
      close_fd(&j->in_fd);
      int32_t kind = WIFSIGNALED(j->status) ? 1 : 0;
      int32_t code = kind ? WTERMSIG(j->status) : WEXITSTATUS(j->status);
      uint32_t flags = (uint32_t)(j->timed_out ? 1 : 0) | (j->out.cut ? 2 : 0) | (j->err.cut ? 4 : 0);
      answer(j->id, kind, code, flags, &j->out, &j->err);
      *pp = j->next;
      free(j->out.p);
      free(j->err.p);
      free(j->frame);
      free(j);
    }
  }
}
