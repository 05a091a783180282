/* The machine's floor: one thread, level-triggered epoll, recv / uppercase / send.
 *
 * The benchmark's physical limit as a peer (benchmarks/peers/c_epoll.py builds and
 * starts it). It does per message what every server in the table must do and
 * nothing else, in C, so the table shows how far each Python server is from what
 * this machine and kernel can do over loopback.
 *
 * What it does: accepts until EAGAIN on every wake-up; TCP_NODELAY; uppercases
 * ASCII letters (other bytes pass unchanged: no Unicode case mapping, so it is a
 * conforming UPPER server for ASCII text only); streams replies, holding back only a
 * line start that may still become the DESCONEXION line (at most 12 bytes), as
 * upper does; ends the session on a line that is exactly DESCONEXION (CR allowed),
 * answering everything before it; answers a last line without LF at EOF; parks a
 * connection on EPOLLOUT (reading nothing more) while the client does not read its
 * replies. What it does not do: the lingering close, timeouts, limits.
 *
 * usage: c_epoll --host HOST --port PORT  (prints "c_epoll listening on HOST:PORT")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECV_SIZE (64 * 1024)
#define KEYWORD "DESCONEXION"
#define KEYWORD_LENGTH 11
#define HOLD_MAX (KEYWORD_LENGTH + 1) /* the keyword and its CR */
#define NOT_A_KEYWORD_LINE (-1)

struct connection {
    int fd;
    int matched;           /* keyword bytes matched at this line's start; -1: not the keyword */
    char hold[HOLD_MAX];   /* a line start that may still become the keyword */
    int held;
    char *pending;         /* a reply the kernel has not taken yet */
    size_t pending_size, pending_sent;
};

static volatile sig_atomic_t stopping = 0;
static int epoll_fd;
static char work[HOLD_MAX + RECV_SIZE];

static void on_signal(int signum) { (void)signum; stopping = 1; }

static void uppercase_ascii(char *data, size_t size) {
    for (size_t i = 0; i < size; i++)
        if (data[i] >= 'a' && data[i] <= 'z') data[i] -= 'a' - 'A';
}

static void close_connection(struct connection *c) {
    close(c->fd); /* also removes it from the epoll set */
    free(c->pending);
    free(c);
}

/* Send data[0:size]; what the kernel does not take waits for EPOLLOUT. 0, or -1 if lost. */
static int send_reply(struct connection *c, const char *data, size_t size) {
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(c->fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) { sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    if (sent == size) return 0;
    c->pending_size = size - sent;
    c->pending_sent = 0;
    c->pending = malloc(c->pending_size);
    if (c->pending == NULL) return -1;
    memcpy(c->pending, data + sent, c->pending_size);
    struct epoll_event event = {.events = EPOLLOUT, .data.ptr = c};
    return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event);
}

static void flush_pending(struct connection *c) {
    while (c->pending_sent < c->pending_size) {
        ssize_t n = send(c->fd, c->pending + c->pending_sent,
                         c->pending_size - c->pending_sent, MSG_NOSIGNAL);
        if (n > 0) { c->pending_sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_connection(c);
        return;
    }
    free(c->pending);
    c->pending = NULL;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event) < 0) close_connection(c);
}

/* Where the keyword line ends in work[from:size] (its LF), or -1; updates c->matched and
 * *line_start, the start of the line the keyword search is in. The bytes before
 * ``from`` were held back, and c->matched already counts them. */
static long find_keyword_line(struct connection *c, size_t from, size_t size, size_t *line_start) {
    for (size_t i = from; i < size; i++) {
        char byte = work[i];
        if (byte == '\n') {
            if (c->matched == KEYWORD_LENGTH || c->matched == KEYWORD_LENGTH + 1) return (long)i;
            c->matched = 0;
            *line_start = i + 1;
        } else if (c->matched == NOT_A_KEYWORD_LINE) {
            continue;
        } else if (c->matched < KEYWORD_LENGTH && byte == KEYWORD[c->matched]) {
            c->matched++;
        } else if (c->matched == KEYWORD_LENGTH && byte == '\r') {
            c->matched++;
        } else {
            c->matched = NOT_A_KEYWORD_LINE;
        }
    }
    return -1;
}

static void on_readable(struct connection *c) {
    memcpy(work, c->hold, (size_t)c->held);
    ssize_t n = recv(c->fd, work + c->held, RECV_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { /* EOF (or an error): a held line start is the last line, unless it is the keyword */
        int keyword = c->held == KEYWORD_LENGTH && memcmp(c->hold, KEYWORD, KEYWORD_LENGTH) == 0;
        if (n == 0 && c->held && !keyword) {
            uppercase_ascii(work, (size_t)c->held);
            send(c->fd, work, (size_t)c->held, MSG_NOSIGNAL);
        }
        close_connection(c);
        return;
    }
    size_t size = (size_t)c->held + (size_t)n;
    size_t line_start = 0; /* the held bytes, if any, are the start of the current line */
    long keyword_end = find_keyword_line(c, (size_t)c->held, size, &line_start);
    if (keyword_end >= 0) { /* answer what came before the keyword line, then close */
        uppercase_ascii(work, line_start);
        send(c->fd, work, line_start, MSG_NOSIGNAL);
        close_connection(c);
        return;
    }
    size_t answered = c->matched > 0 ? line_start : size;
    c->held = (int)(size - answered);
    memcpy(c->hold, work + answered, (size_t)c->held);
    uppercase_ascii(work, answered);
    if (answered && send_reply(c, work, answered) < 0) close_connection(c);
}

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return; /* EAGAIN, or a client that gave up, or out of descriptors */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct connection *c = calloc(1, sizeof *c);
        if (c == NULL) { close(fd); continue; }
        c->fd = fd;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) close_connection(c);
    }
}

static int listen_on(const char *host, const char *port, char *shown, size_t shown_size) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *found;
    if (getaddrinfo(host, port, &hints, &found) != 0) return -1;
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, found->ai_addr, found->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        freeaddrinfo(found);
        return -1;
    }
    freeaddrinfo(found);
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &length);
    char text[INET6_ADDRSTRLEN], service[16];
    getnameinfo((struct sockaddr *)&address, length, text, sizeof text, service, sizeof service,
                NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(shown, shown_size, address.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", text, service);
    return fd;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = "0";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--host") == 0) host = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0) port = argv[i + 1];
        else { fprintf(stderr, "c_epoll: unknown option %s\n", argv[i]); return 2; }
    }
    char shown[INET6_ADDRSTRLEN + 24];
    int listener = listen_on(host, port, shown, sizeof shown);
    if (listener < 0) { fprintf(stderr, "c_epoll: cannot listen on %s:%s: %s\n", host, port, strerror(errno)); return 1; }
    struct sigaction action = {.sa_handler = on_signal};
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    epoll_fd = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &event);
    printf("c_epoll listening on %s\n", shown);
    fflush(stdout);
    struct epoll_event events[512];
    while (!stopping) {
        int ready = epoll_wait(epoll_fd, events, 512, -1);
        for (int i = 0; i < ready; i++) {
            struct connection *c = events[i].data.ptr;
            if (c == NULL) accept_all(listener);
            else if (c->pending) flush_pending(c);
            else on_readable(c);
        }
    }
    return 0;
}
