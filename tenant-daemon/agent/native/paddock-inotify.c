/*
 * paddock-inotify: the guest agent's window on inotify(7), for `GET /v1/fs/watch`
 * (tenant-daemon/agent/fs-watch.ts). Node's fs.watch folds IN_MOVED_FROM, IN_MOVED_TO,
 * IN_CREATE and IN_DELETE into one "rename" event and hides the mask and the move cookie; this
 * helper passes them through so a move can be told from a delete (docs/slicer-api.md#filesystem-watch).
 *
 * It runs inside the VM, as the agent's child, with the agent's privileges; it never touches
 * the host. Built by scripts/build-agent-bundle.ts into dist/toolbox (bound read-only into
 * every guest), statically linked so it does not depend on the guest's libc.
 *
 * Protocol (binary, native byte order, both ends on the same machine):
 *   stdin  — commands, each one byte of opcode, a NUL-terminated argument:
 *              'A' <path> NUL   add a watch on directory <path> (IN_ONLYDIR, IN_DONT_FOLLOW)
 *              'R' <wd>   NUL   remove watch descriptor <wd> (decimal)
 *   stdout — records of five uint32 (kind, wd, mask, cookie, name length) then the name bytes:
 *              kind 1: the answer to an 'A', in command order; wd is the watch descriptor, or
 *                      minus errno (as int32) when inotify_add_watch failed
 *              kind 2: one inotify event (name length 0 when the event has no name)
 * It exits 0 when stdin reaches EOF (the agent closed it or died), 1 on a fatal error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | \
                    IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

static int write_all(const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int emit(uint32_t kind, int32_t wd, uint32_t mask, uint32_t cookie, const char *name, uint32_t len) {
  uint32_t head[5] = {kind, (uint32_t)wd, mask, cookie, len};
  if (write_all(head, sizeof head) < 0) return -1;
  return len > 0 ? write_all(name, len) : 0;
}

/* Run one NUL-terminated command (opcode + argument). */
static int command(int ifd, const char *cmd) {
  if (cmd[0] == 'A') {
    int wd = inotify_add_watch(ifd, cmd + 1, WATCH_MASK);
    return emit(1, wd < 0 ? -errno : wd, 0, 0, NULL, 0);
  }
  if (cmd[0] == 'R') {
    char *end;
    long wd = strtol(cmd + 1, &end, 10);
    if (*end == '\0' && wd >= 0 && wd <= INT_MAX) inotify_rm_watch(ifd, (int)wd);
    return 0;
  }
  return 0; /* unknown opcodes are ignored */
}

int main(void) {
  int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ifd < 0) {
    perror("inotify_init1");
    return 1;
  }
  /* Commands: a path is at most PATH_MAX bytes plus the opcode and the NUL. */
  static char in[2 * (PATH_MAX + 2)];
  size_t have = 0;
  static char ev[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = ifd, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      ssize_t n = read(ifd, ev, sizeof ev);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        perror("read inotify");
        return 1;
      }
      for (char *p = ev; n > 0 && p < ev + n;) {
        const struct inotify_event *e = (const struct inotify_event *)p;
        uint32_t len = e->len > 0 ? (uint32_t)strnlen(e->name, e->len) : 0;
        if (emit(2, e->wd, e->mask, e->cookie, e->name, len) < 0) return 0; /* the agent went away */
        p += sizeof *e + e->len;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, in + have, sizeof in - have);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return 1;
      }
      if (n == 0) return 0;
      have += (size_t)n;
      size_t start = 0;
      for (size_t i = 0; i < have; i++) {
        if (in[i] != '\0') continue;
        if (command(ifd, in + start) < 0) return 0;
        start = i + 1;
      }
      if (start == 0 && have == sizeof in) {
        fprintf(stderr, "paddock-inotify: command longer than %zu bytes\n", sizeof in);
        return 1;
      }
      memmove(in, in + start, have - start);
      have -= start;
    }
  }
}
