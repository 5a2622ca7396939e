/*
 * portferry bench load generator: the target server and the clients.
 * Compiled by tools/bench.ts at bench time (cc -O2 -pthread). Loopback only.
 *
 * Server:  loadgen serve
 *   Listens on 127.0.0.1:0 (two epoll threads on one SO_REUSEPORT port),
 *   prints "port N", and serves until stdin closes. The first byte a client
 *   sends picks the mode of its connection:
 *     'E' echo everything (the first byte too)
 *     'S' sink: count bytes until EOF, then answer with the count (8 bytes, BE)
 *     'G' generate: send bytes until the client goes away
 *
 * Clients (print one JSON line; every loop is bounded in count and time):
 *   loadgen tput up|down PORT STREAMS SECONDS
 *   loadgen rtt PORT MAXCOUNT SECONDS
 *   loadgen connrate PORT WORKERS SECONDS
 *   loadgen hold PORT COUNT SECONDS      (holds COUNT idle echo-checked
 *                                         connections; prints "held N" and
 *                                         waits for a line on stdin, at most
 *                                         SECONDS)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void timeouts(int fd, double seconds) {
  struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ---------------------------------------------------------------- server */

enum { M_NEW, M_ECHO, M_SINK, M_GEN };

struct conn {
  int fd;
  int mode;
  uint64_t count;
  char *pending; /* echo bytes not yet written */
  size_t pend_off, pend_len;
};

static int listen_port = 0;

static int make_listener(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(fd, 4096) < 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  listen_port = ntohs(a.sin_port);
  return fd;
}

static void conn_close(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->pending);
  free(c);
}

/* Echo: write what is pending; returns 0 when all written, 1 when blocked, -1 on error. */
static int flush_pending(struct conn *c) {
  while (c->pend_off < c->pend_len) {
    ssize_t w = send(c->fd, c->pending + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN ? 1 : -1;
    c->pend_off += (size_t)w;
  }
  c->pend_off = c->pend_len = 0;
  return 0;
}

static void set_events(int ep, struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_event(int ep, struct conn *c, uint32_t events, char *buf) {
  if (c->mode == M_GEN) {
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) return conn_close(ep, c);
    if (events & EPOLLIN) {
      ssize_t r = recv(c->fd, buf, BUF, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN)) return conn_close(ep, c);
    }
    for (int i = 0; i < 16; i++) {
      ssize_t w = send(c->fd, buf, BUF, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN) return;
        return conn_close(ep, c);
      }
    }
    return;
  }
  if (c->mode == M_ECHO && c->pend_len > 0) {
    int f = flush_pending(c);
    if (f < 0) return conn_close(ep, c);
    if (f > 0) return;
    set_events(ep, c, EPOLLIN | EPOLLRDHUP);
  }
  for (int i = 0; i < 16; i++) {
    ssize_t r = recv(c->fd, buf, BUF, 0);
    if (r < 0) {
      if (errno == EAGAIN) return;
      return conn_close(ep, c);
    }
    if (r == 0) {
      if (c->mode == M_SINK) {
        uint64_t n = c->count;
        unsigned char out[8];
        for (int k = 7; k >= 0; k--, n >>= 8) out[k] = (unsigned char)(n & 0xff);
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
        timeouts(c->fd, 5);
        (void)!send(c->fd, out, 8, MSG_NOSIGNAL);
      }
      return conn_close(ep, c);
    }
    char *data = buf;
    if (c->mode == M_NEW) {
      c->mode = buf[0] == 'S' ? M_SINK : buf[0] == 'G' ? M_GEN : M_ECHO;
      if (c->mode == M_GEN) {
        set_events(ep, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
        return;
      }
      if (c->mode == M_SINK) {
        data++;
        r--;
      }
    }
    if (c->mode == M_SINK) {
      c->count += (uint64_t)r;
      continue;
    }
    /* echo */
    ssize_t off = 0;
    while (off < r) {
      ssize_t w = send(c->fd, data + off, (size_t)(r - off), MSG_NOSIGNAL);
      if (w < 0) {
        if (errno != EAGAIN) return conn_close(ep, c);
        size_t left = (size_t)(r - off);
        c->pending = realloc(c->pending, left);
        memcpy(c->pending, data + off, left);
        c->pend_off = 0;
        c->pend_len = left;
        set_events(ep, c, EPOLLOUT | EPOLLRDHUP);
        return;
      }
      off += w;
    }
  }
}

static void *serve_loop(void *arg) {
  int lfd = (int)(intptr_t)arg;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  char *buf = malloc(BUF);
  memset(buf, 'x', BUF);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          nodelay(fd);
          struct conn *c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      on_event(ep, events[i].data.ptr, events[i].events, buf);
    }
  }
  return NULL;
}

static int cmd_serve(void) {
  int first = make_listener(0);
  int second = make_listener(listen_port);
  pthread_t t;
  pthread_create(&t, NULL, serve_loop, (void *)(intptr_t)first);
  pthread_create(&t, NULL, serve_loop, (void *)(intptr_t)second);
  printf("port %d\n", listen_port);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  return 0;
}

/* ---------------------------------------------------------------- clients */

static int port;

static int dial(double timeout) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  nodelay(fd);
  timeouts(fd, timeout);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_full(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

struct tput_arg {
  int up;
  double seconds;
  uint64_t bytes;
  int error;
};

static void *tput_worker(void *p) {
  struct tput_arg *a = p;
  char *buf = malloc(BUF);
  memset(buf, 'y', BUF);
  int fd = dial(a->seconds + 10);
  if (fd < 0) {
    a->error = 1;
    return NULL;
  }
  double end = now() + a->seconds;
  if (a->up) {
    buf[0] = 'S';
    if (write_all(fd, buf, 1) < 0) a->error = 1;
    while (!a->error && now() < end) {
      if (write_all(fd, buf, BUF) < 0) a->error = 1;
    }
    shutdown(fd, SHUT_WR);
    unsigned char c[8];
    if (!a->error && read_full(fd, (char *)c, 8) == 0) {
      uint64_t n = 0;
      for (int k = 0; k < 8; k++) n = (n << 8) | c[k];
      a->bytes = n;
    } else {
      a->error = 1;
    }
  } else {
    if (write_all(fd, "G", 1) < 0) a->error = 1;
    while (!a->error && now() < end) {
      /* Near the end, wait for data no longer than the time left: on a link
         with a deep queue, a stream's next bytes may be far behind the end. */
      double left = end - now();
      if (left < 1.0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(left * 1000) + 1) == 0) break;
      }
      ssize_t r = recv(fd, buf, BUF, 0);
      if (r <= 0) a->error = 1;
      else a->bytes += (uint64_t)r;
    }
  }
  close(fd);
  free(buf);
  return NULL;
}

static int cmd_tput(int up, int streams, double seconds) {
  struct tput_arg args[64];
  pthread_t th[64];
  if (streams < 1 || streams > 64) return 2;
  double start = now();
  for (int i = 0; i < streams; i++) {
    args[i] = (struct tput_arg){.up = up, .seconds = seconds};
    pthread_create(&th[i], NULL, tput_worker, &args[i]);
  }
  uint64_t bytes = 0;
  int errors = 0;
  for (int i = 0; i < streams; i++) {
    pthread_join(th[i], NULL);
    bytes += args[i].bytes;
    errors += args[i].error;
  }
  double elapsed = now() - start;
  printf("{\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.4f,\"errors\":%d}\n",
         (unsigned long long)bytes, elapsed, bytes * 8 / elapsed / 1e9, errors);
  return errors ? 1 : 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmd_rtt(int maxcount, double seconds) {
  int fd = dial(5);
  if (fd < 0) die("connect");
  char out[64], in[64];
  memset(out, 'p', sizeof out);
  out[0] = 'E';
  double *lat = malloc(sizeof(double) * (size_t)maxcount);
  /* Warm-up: 100 round trips, or a tenth of the time if they are slow. */
  double end = now() + seconds / 10;
  for (int i = 0; i < 100 && now() < end; i++) {
    if (write_all(fd, out, 64) < 0 || read_full(fd, in, 64) < 0) die("rtt warm-up");
  }
  end = now() + seconds;
  int n = 0;
  while (n < maxcount && now() < end) {
    double t0 = now();
    if (write_all(fd, out, 64) < 0 || read_full(fd, in, 64) < 0) die("rtt");
    lat[n++] = now() - t0;
  }
  close(fd);
  qsort(lat, (size_t)n, sizeof(double), cmp_double);
  double sum = 0;
  for (int i = 0; i < n; i++) sum += lat[i];
  printf("{\"count\":%d,\"p50_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f}\n", n,
         lat[n / 2] * 1e6, lat[(int)(n * 0.99)] * 1e6, sum / n * 1e6);
  return 0;
}

struct conn_arg {
  double end;
  long ok, errors;
};

static void *conn_worker(void *p) {
  struct conn_arg *a = p;
  while (now() < a->end && a->errors < 1000) {
    int fd = dial(5);
    char c;
    if (fd < 0) {
      a->errors++;
      continue;
    }
    if (write_all(fd, "E", 1) < 0 || read_full(fd, &c, 1) < 0) a->errors++;
    else a->ok++;
    close(fd);
  }
  return NULL;
}

static int cmd_connrate(int workers, double seconds) {
  struct conn_arg args[256];
  pthread_t th[256];
  if (workers < 1 || workers > 256) return 2;
  double start = now();
  for (int i = 0; i < workers; i++) {
    args[i] = (struct conn_arg){.end = start + seconds};
    pthread_create(&th[i], NULL, conn_worker, &args[i]);
  }
  long ok = 0, errors = 0;
  for (int i = 0; i < workers; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
    errors += args[i].errors;
  }
  double elapsed = now() - start;
  printf("{\"connections\":%ld,\"errors\":%ld,\"seconds\":%.6f,\"per_second\":%.1f}\n", ok,
         errors, elapsed, ok / elapsed);
  return 0;
}

struct hold_arg {
  int *fds;
  int count;
  double end;
  int next, held, errors; /* shared, under hold_lock */
};
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;

/* Opens connections until `count` were tried or time is up; 16 of these run at once. */
static void *hold_worker(void *p) {
  struct hold_arg *a = p;
  for (;;) {
    pthread_mutex_lock(&hold_lock);
    int i = a->next < a->count && now() < a->end ? a->next++ : -1;
    pthread_mutex_unlock(&hold_lock);
    if (i < 0) return NULL;
    int fd = dial(10);
    char c;
    int ok = fd >= 0 && write_all(fd, "E", 1) == 0 && read_full(fd, &c, 1) == 0;
    if (!ok && fd >= 0) close(fd);
    pthread_mutex_lock(&hold_lock);
    if (ok) a->fds[a->held++] = fd;
    else a->errors++;
    pthread_mutex_unlock(&hold_lock);
  }
}

static int cmd_hold(int count, double seconds) {
  struct hold_arg a = {.fds = malloc(sizeof(int) * (size_t)count), .count = count,
                       .end = now() + seconds};
  pthread_t th[16];
  for (int i = 0; i < 16; i++) pthread_create(&th[i], NULL, hold_worker, &a);
  for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
  int held = a.held, errors = a.errors + (count - a.next);
  int *fds = a.fds;
  printf("held %d errors %d\n", held, errors);
  fflush(stdout);
  struct pollfd pfd = {.fd = 0, .events = POLLIN};
  poll(&pfd, 1, (int)(seconds * 1000));
  /* Every connection must still be alive through the tunnel: all of them echo
     one byte at once, and whatever has not answered within 10 s is dead. */
  int alive = 0;
  for (int i = 0; i < held; i++) (void)!write_all(fds[i], "E", 1);
  struct pollfd *pfds = calloc((size_t)held, sizeof *pfds);
  for (int i = 0; i < held; i++) pfds[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  double deadline = now() + 10;
  int pending = held;
  while (pending > 0 && now() < deadline) {
    if (poll(pfds, (nfds_t)held, 200) <= 0) continue;
    for (int i = 0; i < held; i++) {
      if (pfds[i].fd < 0 || !pfds[i].revents) continue;
      char c;
      if (recv(fds[i], &c, 1, MSG_DONTWAIT) == 1) alive++;
      pfds[i].fd = -1;
      pending--;
    }
  }
  for (int i = 0; i < held; i++) close(fds[i]);
  printf("{\"held\":%d,\"errors\":%d,\"alive\":%d}\n", held, errors, alive);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "serve") == 0) return cmd_serve();
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
  }
  port = atoi(argv[argc > 3 && strcmp(argv[1], "tput") == 0 ? 3 : 2]);
  if (strcmp(argv[1], "tput") == 0 && argc == 6) {
    /* Hard stop: no client outlives its budget by much. */
    alarm((unsigned)atof(argv[5]) + 30);
    return cmd_tput(strcmp(argv[2], "up") == 0, atoi(argv[4]), atof(argv[5]));
  }
  if (argc == 5) alarm(2 * (unsigned)atof(argv[4]) + 60);
  if (strcmp(argv[1], "rtt") == 0 && argc == 5) return cmd_rtt(atoi(argv[3]), atof(argv[4]));
  if (strcmp(argv[1], "connrate") == 0 && argc == 5) {
    return cmd_connrate(atoi(argv[3]), atof(argv[4]));
  }
  if (strcmp(argv[1], "hold") == 0 && argc == 5) return cmd_hold(atoi(argv[3]), atof(argv[4]));
  fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
  return 2;
}
