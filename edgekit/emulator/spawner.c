/* The process launcher that runs INSIDE an emulated phone's sandbox, as its init (PID 1).
 *
 * A phone has no Python, so neither has this: it is C, compiled on the host by edgekit/emulator/_spawner.py
 * and bound into the sandbox. For every shell command the phone's adb daemon connects to the unix socket
 * given as argv[1] and sends one request with the command's stdin/stdout/stderr attached as three file
 * descriptors (SCM_RIGHTS):
 *
 *     u32 little-endian length, then NUL-terminated strings:
 *     tty ("0"|"1"), cwd, argc, argv[0..argc), envc, env[0..envc) ("KEY=VALUE")
 *
 * and reads back "P <pid>\n" once the command runs (or "X 127\n" alone when it cannot be executed, with the
 * reason written to the command's stderr), then "X <status>\n" when it ends (128 + signal when killed).
 * Closing the connection early hangs up the command's process group (SIGHUP, as a phone's adbd does when its
 * shell session goes away), then kills what is left of it 2 s later. Every command starts here, in its own
 * session, so `ps` in one shell sees the device's other processes and background processes outlive the
 * shell that started them. As PID 1 it also reaps orphans.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

enum { kMaxRequest = 1 << 20, kMaxFields = 4096 };

static void reap_orphans(int signum) {
  (void)signum;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int write_all(int fd, const char *text) {
  size_t left = strlen(text);
  while (left > 0) {
    ssize_t n = write(fd, text, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    text += n;
    left -= (size_t)n;
  }
  return 0;
}

/* Reads the request; returns its payload (malloc'd) and the three descriptors, or NULL. */
static char *read_request(int conn, int fds[3], size_t *size) {
  char first[4096];
  char control[CMSG_SPACE(3 * sizeof(int))];
  struct iovec iov = {first, sizeof first};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (got < 4 || cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS || cmsg->cmsg_len != CMSG_LEN(3 * sizeof(int)))
    return NULL;
  memcpy(fds, CMSG_DATA(cmsg), 3 * sizeof(int));
  uint32_t length = (uint32_t)(unsigned char)first[0] | (uint32_t)(unsigned char)first[1] << 8 |
                    (uint32_t)(unsigned char)first[2] << 16 | (uint32_t)(unsigned char)first[3] << 24;
  if (length == 0 || length > kMaxRequest) return NULL;
  char *payload = malloc(length + 1);
  if (payload == NULL) return NULL;
  size_t have = (size_t)got - 4 < length ? (size_t)got - 4 : length;
  memcpy(payload, first + 4, have);
  while (have < length) {
    ssize_t n = read(conn, payload + have, length - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      free(payload);
      return NULL;
    }
    have += (size_t)n;
  }
  payload[length] = '\0';
  *size = length;
  return payload;
}

/* Splits the payload into its NUL-terminated fields; returns how many, or -1. */
static int split_fields(char *payload, size_t size, char **fields) {
  int count = 0;
  size_t start = 0;
  for (size_t i = 0; i < size; ++i) {
    if (payload[i] != '\0') continue;
    if (count == kMaxFields) return -1;
    fields[count++] = payload + start;
    start = i + 1;
  }
  return start == size ? count : -1;
}

static int exit_status(int status) {
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

static void serve(int conn) {
  int fds[3] = {-1, -1, -1};
  size_t size = 0;
  char *payload = read_request(conn, fds, &size);
  static char *fields[kMaxFields + 1];
  int n = payload ? split_fields(payload, size, fields) : -1;
  if (n < 4) return;
  int tty = strcmp(fields[0], "1") == 0;
  const char *cwd = fields[1];
  int argc = atoi(fields[2]);
  if (argc < 1 || 3 + argc >= n) return;
  char **argv = &fields[3];
  int envc = atoi(fields[3 + argc]);
  if (envc < 0 || 4 + argc + envc != n) return;
  char **envp = &fields[4 + argc];
  argv[argc] = NULL; /* the envc field: no longer needed once read */
  fields[n] = NULL;

  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    for (int i = 0; i < 3; ++i) dup2(fds[i], i);
    if (tty) ioctl(0, TIOCSCTTY, 0);
    if (chdir(cwd) != 0) (void)chdir("/");
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    environ = envp; /* execvp searches the command's own PATH */
    execvp(argv[0], argv);
    int err = errno;
    (void)write(report[1], &err, sizeof err);
    _exit(127);
  }
  close(report[1]);
  int err = 0;
  ssize_t r = -1;
  if (pid > 0) {
    while ((r = read(report[0], &err, sizeof err)) < 0 && errno == EINTR) {
    }
  }
  close(report[0]);
  char line[64];
  if (pid < 0 || r == (ssize_t)sizeof err) { /* the command never ran: say why on its stderr */
    if (pid > 0) waitpid(pid, NULL, 0);
    char message[512];
    snprintf(message, sizeof message, "%s: %s\n", argv[0], strerror(pid < 0 ? errno : err));
    (void)write_all(fds[2], message);
    for (int i = 0; i < 3; ++i) close(fds[i]);
    (void)write_all(conn, "X 127\n");
    return;
  }
  for (int i = 0; i < 3; ++i) close(fds[i]);
  snprintf(line, sizeof line, "P %d\n", (int)pid);
  (void)write_all(conn, line);
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  struct pollfd watch[2] = {{conn, POLLIN, 0}, {pidfd, POLLIN, 0}};
  int status = 0;
  int wait_ms = -1; /* after a hang-up: how long the group has left before SIGKILL */
  for (;;) {
    int ready = pidfd >= 0 ? poll(watch, 2, wait_ms) : 1;
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ready == 0) { /* the grace after the hang-up is over */
      kill(-pid, SIGKILL);
      wait_ms = -1;
      continue;
    }
    if (pidfd < 0 || (watch[1].revents & POLLIN)) {
      if (waitpid(pid, &status, 0) == pid) break;
      if (errno == EINTR) continue;
      status = 255 << 8;
      break;
    }
    if (watch[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char sink[64];
      ssize_t got = recv(conn, sink, sizeof sink, MSG_DONTWAIT);
      if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) {
        kill(-pid, SIGHUP); /* the client went away: the command goes with it */
        watch[0].fd = -1;
        wait_ms = 2000;
      }
    }
  }
  snprintf(line, sizeof line, "X %d\n", exit_status(status));
  (void)write_all(conn, line);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: spawner SOCKET\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction reap = {0};
  reap.sa_handler = reap_orphans;
  reap.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &reap, NULL);
  int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {0};
  addr.sun_family = AF_UNIX;
  if (strlen(argv[1]) >= sizeof addr.sun_path) return 2;
  strcpy(addr.sun_path, argv[1]);
  unlink(argv[1]);
  if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 64) != 0) {
    perror("spawner");
    return 1;
  }
  for (;;) {
    int conn = accept4(server, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
      if (errno == EINTR) continue;
      perror("spawner: accept");
      return 1;
    }
    pid_t handler = fork();
    if (handler == 0) {
      close(server);
      struct sigaction plain = {0};
      plain.sa_handler = SIG_DFL;
      sigaction(SIGCHLD, &plain, NULL);
      serve(conn);
      _exit(0);
    }
    close(conn);
  }
}
